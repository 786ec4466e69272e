"""Pure status logic: conditions, the compression summary, and the phase.

Condition types are CamelCase and each carries a reason (a documented enum
below) and a human message. lastTransitionTime changes only when a condition's
status changes, so `kubectl describe` shows when things really happened.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# Condition types.
VALIDATED = "Validated"
COMPRESSED = "Compressed"
QUALITY_GATE_PASSED = "QualityGatePassed"
REPOSITORY_READY = "RepositoryReady"
SERVING_READY = "ServingReady"
READY = "Ready"
CONDITION_TYPES = (VALIDATED, REPOSITORY_READY, COMPRESSED, QUALITY_GATE_PASSED, SERVING_READY, READY)

# Reasons.
INVALID_SPEC = "InvalidSpec"
SPEC_VALID = "SpecValid"
CLAIM_NOT_FOUND = "ClaimNotFound"
CLAIM_NOT_BOUND = "ClaimNotBound"
CLAIM_BOUND = "ClaimBound"
UNSUPPORTED_REPOSITORY = "UnsupportedRepository"
COMPRESSING = "Compressing"
PUBLISHED = "Published"
CACHE_HIT = "CacheHit"
QUALITY_GATE_FAILED = "QualityGateFailed"
INVALID_MODEL = "InvalidModel"
COMPRESSION_FAILED = "CompressionFailed"
GATE_PASSED = "GatePassed"
WAITING = "Waiting"
ROLLING_OUT = "RollingOut"
NO_READY_REPLICAS = "NoReadyReplicas"
AVAILABLE = "Available"
SERVING_PREVIOUS = "ServingPreviousVersion"

# Phases.
PENDING, COMPRESSING_PHASE, DEPLOYING, READY_PHASE, DEGRADED, FAILED = (
    "Pending", "Compressing", "Deploying", "Ready", "Degraded", "Failed")

# Job exit codes of `lms compress` (see the compression summary contract).
EXIT_BAD_INPUT = 2
EXIT_GATE_FAILED = 3


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool | None
    reason: str
    message: str = ""

    @property
    def status_text(self) -> str:
        return {True: "True", False: "False", None: "Unknown"}[self.status]


def merge_conditions(previous: list[dict[str, Any]], new: list[Condition], now: str,
                     generation: int | None) -> list[dict[str, Any]]:
    """Conditions in a fixed order; lastTransitionTime kept unless the status flipped."""
    old = {c.get("type"): c for c in previous or []}
    out: list[dict[str, Any]] = []
    for cond in sorted(new, key=lambda c: CONDITION_TYPES.index(c.type) if c.type in CONDITION_TYPES else 99):
        before = old.get(cond.type)
        changed = before is None or before.get("status") != cond.status_text
        entry: dict[str, Any] = {
            "type": cond.type,
            "status": cond.status_text,
            "reason": cond.reason,
            "message": cond.message[:4096],
            "lastTransitionTime": now if changed or not before.get("lastTransitionTime")
            else before["lastTransitionTime"],
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        out.append(entry)
    return out


def parse_summary(text: str | None) -> dict[str, Any] | None:
    """The JSON summary `lms compress` leaves as its termination message (last JSON line wins)."""
    if not text:
        return None
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                parsed = json.loads(line)
            except ValueError:
                continue
            if isinstance(parsed, dict):
                return parsed
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def compression_status(summary: dict[str, Any], key: str) -> dict[str, Any]:
    """status.compression from a summary (or a report.json with the same fields)."""
    quality = summary.get("quality") if isinstance(summary.get("quality"), dict) else {}
    latency = summary.get("latency_ms") if isinstance(summary.get("latency_ms"), dict) else {}
    out: dict[str, Any] = {
        "version": key,
        "originalBytes": summary.get("original_bytes"),
        "compressedBytes": summary.get("compressed_bytes"),
        "ratio": _round(_num(summary.get("size_ratio"))),
        "latencyMs": _round(_num(latency.get("compressed"))),
        "baselineLatencyMs": _round(_num(latency.get("baseline"))),
        "speedup": _round(_num(summary.get("speedup"))),
        "metric": quality.get("metric"),
        "score": _round(_num(quality.get("score")), 4),
        "threshold": _num(quality.get("threshold")),
        "passed": quality.get("passed") if isinstance(quality.get("passed"), bool) else None,
        "variant": summary.get("variant"),
        "sha256": summary.get("sha256"),
    }
    return {k: v for k, v in out.items() if v is not None}


def _round(value: float | None, digits: int = 3) -> float | None:
    return round(value, digits) if value is not None else None


def gate_message(summary: dict[str, Any] | None) -> str:
    """'cosine 0.9612 < 0.99' style text with the gate's numbers, when the summary has them."""
    quality = (summary or {}).get("quality")
    if not isinstance(quality, dict) or _num(quality.get("score")) is None:
        return "quality gate failed"
    score, threshold = float(quality["score"]), _num(quality.get("threshold"))
    rel = "<" if threshold is not None and score < threshold else ">="
    thr = f" {rel} threshold {threshold:g}" if threshold is not None else ""
    return f"quality gate failed: {quality.get('metric', 'score')} {score:.4f}{thr}"


# ---- the compression outcome, as observed by the reconcile step ------------------------------------

@dataclass(frozen=True)
class CompressionOutcome:
    """Where the desired version stands: running, published or failed (with a reason)."""
    state: str  # "running" | "published" | "failed"
    reason: str
    message: str
    summary: dict[str, Any] | None = None


def job_outcome(job: dict[str, Any], pods: list[dict[str, Any]]) -> CompressionOutcome:
    """Read a compression Job and its pods: Complete/Failed conditions plus the termination message."""
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    terminated = _last_terminated(pods)
    summary = parse_summary(terminated.get("message")) if terminated else None
    if "Complete" in conditions or "SuccessCriteriaMet" in conditions:
        return CompressionOutcome("published", PUBLISHED, "compression Job succeeded", summary)
    exit_code = terminated.get("exitCode") if terminated else None
    # Exit codes 2 and 3 are deterministic verdicts (bad input, gate failed): a Job retry cannot
    # change them, so they count as soon as one pod reports them.
    if "Failed" in conditions or "FailureTarget" in conditions or exit_code in (EXIT_BAD_INPUT, EXIT_GATE_FAILED):
        error = (summary or {}).get("error")
        if exit_code == EXIT_GATE_FAILED:
            return CompressionOutcome("failed", QUALITY_GATE_FAILED, gate_message(summary), summary)
        if exit_code == EXIT_BAD_INPUT:
            return CompressionOutcome("failed", INVALID_MODEL, f"invalid model: {error or 'bad input'}", summary)
        cond = conditions.get("Failed") or conditions.get("FailureTarget") or {}
        detail = error or cond.get("message") or cond.get("reason") or f"exit code {exit_code}"
        return CompressionOutcome("failed", COMPRESSION_FAILED, f"compression Job failed: {detail}", summary)
    return CompressionOutcome("running", COMPRESSING, "compression Job running")


def _last_terminated(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest terminated container state among the Job's pods."""
    found: list[tuple[str, dict[str, Any]]] = []
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
            if term:
                found.append((str(term.get("finishedAt") or pod["metadata"].get("creationTimestamp") or ""), term))
    if not found:
        return None
    found.sort(key=lambda item: item[0])
    return found[-1][1]


# ---- deriving the whole status -------------------------------------------------------------------

@dataclass(frozen=True)
class ServingObservation:
    """The Deployment as last seen: which version its pods run and how many are ready."""
    version: str | None
    replicas: int
    ready_replicas: int
    rolled_out: bool


@dataclass
class Observation:
    """Everything the status is derived from, gathered by one reconcile pass."""
    generation: int | None
    desired_version: str | None
    spec_problems: list[str] = field(default_factory=list)
    repository: Condition | None = None
    compression: CompressionOutcome | None = None
    serving: ServingObservation | None = None
    previous_version: str | None = None
    endpoint: dict[str, str] | None = None


def derive_status(obs: Observation, previous: dict[str, Any], now: str) -> dict[str, Any]:
    """The full status object (phase, conditions, versions, replicas, message) for an observation."""
    conds: list[Condition] = []
    status: dict[str, Any] = {"observedGeneration": obs.generation, "desiredVersion": obs.desired_version}
    if obs.spec_problems:
        message = "invalid spec: " + "; ".join(obs.spec_problems)
        conds.append(Condition(VALIDATED, False, INVALID_SPEC, message))
        conds.append(Condition(READY, False, INVALID_SPEC, message))
        status.update(phase=FAILED, message=message)
        status["conditions"] = merge_conditions(previous.get("conditions", []), conds, now, obs.generation)
        return status
    conds.append(Condition(VALIDATED, True, SPEC_VALID, "spec is valid"))
    if obs.repository is not None:
        conds.append(obs.repository)

    serving = obs.serving
    served = serving.version if serving and serving.rolled_out and serving.version else obs.previous_version
    serving_ok = serving is not None and serving.ready_replicas > 0
    if served:
        status["modelVersion"] = served
    if serving is not None:
        status["replicas"] = serving.replicas
        status["readyReplicas"] = serving.ready_replicas
    if obs.endpoint and serving is not None:
        status["endpoint"] = obs.endpoint

    comp = obs.compression
    repo_blocked = obs.repository is not None and obs.repository.status is False
    if comp is None:
        conds.append(Condition(COMPRESSED, None, WAITING, "waiting for the repository"))
        conds.append(Condition(QUALITY_GATE_PASSED, None, WAITING, "not evaluated yet"))
    elif comp.state == "running":
        conds.append(Condition(COMPRESSED, False, COMPRESSING, comp.message))
        conds.append(Condition(QUALITY_GATE_PASSED, None, COMPRESSING, "not evaluated yet"))
    elif comp.state == "published":
        conds.append(Condition(COMPRESSED, True, comp.reason, comp.message))
        conds.append(Condition(QUALITY_GATE_PASSED, True, GATE_PASSED, _score_text(comp.summary)))
    else:
        conds.append(Condition(COMPRESSED, False, comp.reason, comp.message))
        if comp.reason == QUALITY_GATE_FAILED:
            conds.append(Condition(QUALITY_GATE_PASSED, False, QUALITY_GATE_FAILED, comp.message))
        else:
            conds.append(Condition(QUALITY_GATE_PASSED, None, comp.reason, "not evaluated"))

    at_desired = served is not None and served == obs.desired_version
    if serving is None:
        conds.append(Condition(SERVING_READY, False, WAITING, "no Triton Deployment yet"))
    elif serving_ok and serving.rolled_out:
        conds.append(Condition(SERVING_READY, True, AVAILABLE,
                               f"{serving.ready_replicas}/{serving.replicas} replicas ready, version {served}"))
    elif serving_ok:
        conds.append(Condition(SERVING_READY, True, ROLLING_OUT,
                               f"rolling out version {serving.version}; {serving.ready_replicas} replicas ready"))
    else:
        conds.append(Condition(SERVING_READY, False, NO_READY_REPLICAS if serving.rolled_out else ROLLING_OUT,
                               f"0/{serving.replicas} replicas ready"))

    failed = comp is not None and comp.state == "failed"
    if failed and serving_ok and served and not at_desired:
        phase, reason = DEGRADED, SERVING_PREVIOUS
        message = f"version {obs.desired_version} not published ({comp.message}); still serving {served}"
        ready = Condition(READY, True, reason, message)
    elif failed:
        phase, reason, message = FAILED, comp.reason, comp.message  # type: ignore[union-attr]
        ready = Condition(READY, False, reason, message)
    elif repo_blocked:
        assert obs.repository is not None
        phase, message = PENDING, obs.repository.message
        ready = Condition(READY, serving_ok, obs.repository.reason, message)
    elif comp is None or comp.state == "running":
        phase = COMPRESSING_PHASE if comp is not None else PENDING
        message = f"compressing version {obs.desired_version}"
        if serving_ok and served:
            message += f"; serving {served}"
        ready = Condition(READY, serving_ok, COMPRESSING, message)
    elif at_desired and serving_ok and serving is not None and serving.rolled_out:
        phase, message = READY_PHASE, f"serving version {served}"
        ready = Condition(READY, True, AVAILABLE, message)
    elif at_desired and serving is not None and serving.rolled_out and previous.get("phase") in (READY_PHASE,
                                                                                                  DEGRADED):
        phase, message = DEGRADED, "no ready replicas"
        ready = Condition(READY, False, NO_READY_REPLICAS, message)
    else:
        phase, message = DEPLOYING, f"rolling out version {obs.desired_version}"
        ready = Condition(READY, serving_ok, ROLLING_OUT, message)
    conds.append(ready)
    status.update(phase=phase, message=message[:4096])
    status["conditions"] = merge_conditions(previous.get("conditions", []), conds, now, obs.generation)
    return status


def _score_text(summary: dict[str, Any] | None) -> str:
    quality = (summary or {}).get("quality")
    if isinstance(quality, dict) and _num(quality.get("score")) is not None:
        threshold = _num(quality.get("threshold"))
        thr = f" >= {threshold:g}" if threshold is not None else ""
        return f"{quality.get('metric', 'score')} {float(quality['score']):.4f}{thr}"
    return "quality gate passed"


def status_patch(previous: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A merge patch turning previous into new for the fields we own (removed fields become None)."""
    owned = ("phase", "message", "observedGeneration", "modelVersion", "desiredVersion", "conditions",
             "endpoint", "replicas", "readyReplicas")
    patch: dict[str, Any] = {}
    for key in owned:
        if key in new:
            if previous.get(key) != new[key]:
                patch[key] = new[key]
        elif key in previous and key not in ("modelVersion", "endpoint", "replicas", "readyReplicas"):
            patch[key] = None
    return patch
