"""Pure status logic: conditions, the compression summary, and the phase.

Condition types are CamelCase and each carries a reason (the vocabulary
is in api/contract.py) and a human message. lastTransitionTime changes only when a condition's
status changes, so `kubectl describe` shows when things really happened.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lms_operator.api.contract import (  # noqa: F401  (the vocabulary, re-exported for status readers)
    AUTOSCALING, AVAILABLE, CACHE_HIT, CLAIM_BOUND, CLAIM_NOT_BOUND, CLAIM_NOT_FOUND, COMPRESSED, COMPRESSING,
    COMPRESSING_PHASE, COMPRESSION_FAILED, CONDITION_TYPES, DEGRADED, DEPLOYING, FAILED, GATE_PASSED, HPA_SCALING,
    INVALID_MODEL, INVALID_SPEC, KEDA_NOT_INSTALLED, KEDA_SCALING, NO_READY_REPLICAS, PENDING,
    PROGRESS_DEADLINE_EXCEEDED, PUBLISHED, QUALITY_GATE_FAILED, QUALITY_GATE_PASSED, READY, READY_PHASE, REBUILDING,
    REPOSITORY_READY, ROLLING_OUT, SCALED_TO_ZERO, SERVING_PREVIOUS, SERVING_READY, SPEC_VALID,
    UNSUPPORTED_REPOSITORY, VALIDATED, VERSION_MISMATCH, WAITING, CompressionSummary, ExitCode, Quality)
from lms_operator.api.contract import DETERMINISTIC_EXIT_CODES as DETERMINISTIC
from lms_operator.api.contract import INPUT_REASONS


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


# ---- the compression outcome, as observed by the reconcile step ------------------------------------

@dataclass(frozen=True)
class CompressionOutcome:
    """Where the desired version stands: running, published or failed (with a reason)."""
    state: str  # "running" | "published" | "failed"
    reason: str
    message: str
    summary: CompressionSummary | None = None


def job_outcome(job: dict[str, Any], pods: list[dict[str, Any]]) -> CompressionOutcome:
    """Read a compression Job and its pods: Complete/Failed conditions plus the termination message."""
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    terminated = _last_terminated(pods)
    summary = CompressionSummary.from_message(terminated.get("message")) if terminated else None
    if "Complete" in conditions or "SuccessCriteriaMet" in conditions:
        note = f"; {summary.note}" if summary is not None and summary.note else ""
        return CompressionOutcome("published", PUBLISHED, f"compression Job succeeded{note}", summary)
    exit_code = terminated.get("exitCode") if terminated else None
    # Bad input and a failed gate are deterministic verdicts: a Job retry cannot change them, so
    # they count as soon as one pod reports them.
    if "Failed" in conditions or "FailureTarget" in conditions or exit_code in DETERMINISTIC:
        error = summary.error if summary else None
        if exit_code == ExitCode.GATE_FAILED:
            gate = summary.gate_text() if summary else "no summary"
            return CompressionOutcome("failed", QUALITY_GATE_FAILED, f"quality gate failed: {gate}", summary)
        if exit_code == ExitCode.BAD_INPUT and summary is not None and summary.requested_version:
            return CompressionOutcome("failed", VERSION_MISMATCH, error or "version key mismatch", summary)
        if exit_code == ExitCode.BAD_INPUT and summary is not None and summary.reason in INPUT_REASONS:
            return CompressionOutcome("failed", summary.reason, error or summary.reason, summary)
        if exit_code == ExitCode.BAD_INPUT:
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
    """The Deployment as last seen: which version its pods run, how many are ready, and whether
    its rollout finished or ran past its progress deadline."""
    version: str | None
    replicas: int
    ready_replicas: int
    rolled_out: bool
    stalled: str | None = None
    """The Deployment's Progressing message when it is False with ProgressDeadlineExceeded."""
    wanted: int = 1
    """spec.replicas: what the autoscaler last asked for (0: scaled to zero)."""


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
    autoscaling: Condition | None = None
    """Which autoscaler is in charge, and why it is not the one the spec asks for."""
    scales_to_zero: bool = False
    """The autoscaler may scale the Deployment to zero (KEDA with minReplicas 0)."""
    serving_config: dict[str, str] | None = None
    """status.servingConfig: the template (name, digest) and the digest of everything the served configs are built from."""


def scaled_to_zero(obs: Observation) -> bool:
    """The Deployment sits at zero replicas because the autoscaler put it there (idle, not an outage)."""
    serving = obs.serving
    return obs.scales_to_zero and serving is not None and serving.wanted == 0 and serving.rolled_out


def derive_status(obs: Observation, previous: dict[str, Any], now: str) -> dict[str, Any]:
    """The whole status object (phase, conditions, versions, replicas, compression, message)."""
    status: dict[str, Any] = {"observedGeneration": obs.generation, "desiredVersion": obs.desired_version}
    if obs.spec_problems:
        message = "invalid spec: " + "; ".join(obs.spec_problems)
        conds = [Condition(VALIDATED, False, INVALID_SPEC, message), Condition(READY, False, INVALID_SPEC, message)]
        status.update(phase=FAILED, message=message)
        status["conditions"] = merge_conditions(previous.get("conditions", []), conds, now, obs.generation)
        return status
    conds = [Condition(VALIDATED, True, SPEC_VALID, "spec is valid")]
    if obs.repository is not None:
        conds.append(obs.repository)
    serving = obs.serving
    served = serving.version if serving and serving.rolled_out and serving.version else obs.previous_version
    if served:
        status["modelVersion"] = served
    if serving is not None:
        status["replicas"] = serving.replicas
        status["readyReplicas"] = serving.ready_replicas
        if obs.endpoint:
            status["endpoint"] = obs.endpoint
    if obs.serving_config:
        status["servingConfig"] = obs.serving_config
    block = compression_block(obs.compression, obs.desired_version, previous.get("compression"))
    if block is not None:
        status["compression"] = block
    recorded = block if block is not None and block.get("version") == obs.desired_version else None
    conds += compression_conditions(obs.compression, recorded)
    conds.append(serving_condition(serving, served, scaled_to_zero(obs)))
    if obs.autoscaling is not None:
        conds.append(obs.autoscaling)
    phase, ready = phase_and_readiness(obs, served, previous.get("phase"))
    conds.append(ready)
    status.update(phase=phase, message=ready.message[:4096])
    status["conditions"] = merge_conditions(previous.get("conditions", []), conds, now, obs.generation)
    return status


def compression_block(comp: CompressionOutcome | None, key: str | None,
                      previous: dict[str, Any] | None) -> dict[str, Any] | None:
    """status.compression: the Job's numbers for the desired version; while it compresses, the
    block of the version before (its numbers are still what is served)."""
    if comp is not None and comp.summary is not None and key is not None:
        return comp.summary.status_block(key)
    if previous and (comp is None or comp.state == "running" or previous.get("version") == key):
        return previous
    if comp is not None and comp.state != "running" and key is not None:
        return {"version": key, "passed": comp.state == "published"}
    return None


def compression_conditions(comp: CompressionOutcome | None, recorded: dict[str, Any] | None = None) -> list[Condition]:
    """Compressed and QualityGatePassed. `recorded`: status.compression of this version, whose gate
    numbers stand in when the outcome carries no summary (a succeeded Job whose numbers are recorded)."""
    if comp is None:
        return [Condition(COMPRESSED, None, WAITING, "waiting for the repository"),
                Condition(QUALITY_GATE_PASSED, None, WAITING, "not evaluated yet")]
    if comp.state == "running":
        return [Condition(COMPRESSED, False, comp.reason, comp.message),
                Condition(QUALITY_GATE_PASSED, None, comp.reason, "not evaluated yet")]
    if comp.state == "published":
        summary = comp.summary or CompressionSummary(quality=recorded_quality(recorded or {}))
        return [Condition(COMPRESSED, True, comp.reason, comp.message),
                Condition(QUALITY_GATE_PASSED, True, GATE_PASSED, summary.gate_text())]
    if comp.reason == QUALITY_GATE_FAILED:
        return [Condition(COMPRESSED, False, comp.reason, comp.message),
                Condition(QUALITY_GATE_PASSED, False, QUALITY_GATE_FAILED, comp.message)]
    return [Condition(COMPRESSED, False, comp.reason, comp.message),
            Condition(QUALITY_GATE_PASSED, None, comp.reason, "not evaluated")]


def recorded_quality(block: dict[str, Any]) -> Quality:
    """The gate's numbers as status.compression recorded them (a published version passed)."""
    return Quality(block.get("metric"), block.get("score"), block.get("threshold"), block.get("passed", True))


def serving_condition(serving: ServingObservation | None, served: str | None, idle: bool = False) -> Condition:
    if serving is None:
        return Condition(SERVING_READY, False, WAITING, "no Triton Deployment yet")
    if idle:
        return Condition(SERVING_READY, True, SCALED_TO_ZERO, f"0 replicas: idle, scaled to zero; version {served}")
    ready = serving.ready_replicas > 0
    if ready and serving.rolled_out:
        return Condition(SERVING_READY, True, AVAILABLE,
                         f"{serving.ready_replicas}/{serving.replicas} replicas ready, version {served}")
    if serving.stalled is not None:
        return Condition(SERVING_READY, ready, PROGRESS_DEADLINE_EXCEEDED,
                         f"{serving.ready_replicas}/{serving.replicas} replicas ready; {serving.stalled}")
    if ready:
        return Condition(SERVING_READY, True, ROLLING_OUT,
                         f"rolling out version {serving.version}; {serving.ready_replicas} replicas ready")
    return Condition(SERVING_READY, False, NO_READY_REPLICAS if serving.rolled_out else ROLLING_OUT,
                     f"0/{serving.replicas} replicas ready")


def phase_and_readiness(obs: Observation, served: str | None, previous_phase: str | None) -> tuple[str, Condition]:
    """The phase and the Ready condition, first matching rule wins."""
    comp, serving = obs.compression, obs.serving
    serving_ok = serving is not None and serving.ready_replicas > 0
    at_desired = served is not None and served == obs.desired_version
    was_serving = bool(served) or previous_phase in (READY_PHASE, DEGRADED)
    if comp is not None and comp.state == "failed":
        if serving_ok and served and not at_desired:
            return DEGRADED, Condition(READY, True, SERVING_PREVIOUS,
                                       f"version {obs.desired_version} not published ({comp.message}); still serving {served}")
        return FAILED, Condition(READY, False, comp.reason, comp.message)
    if obs.repository is not None and obs.repository.status is False:
        return PENDING, Condition(READY, serving_ok, obs.repository.reason, obs.repository.message)
    if comp is None or comp.state == "running":
        message = f"compressing version {obs.desired_version}" + (f"; serving {served}" if serving_ok and served else "")
        return (COMPRESSING_PHASE if comp is not None else PENDING), Condition(READY, serving_ok, comp.reason if comp else COMPRESSING, message)
    if serving is not None and serving.stalled is not None and not serving.rolled_out:
        message = f"rollout of version {obs.desired_version} stopped: {serving.stalled}"
        if serving_ok or was_serving:
            return DEGRADED, Condition(READY, serving_ok, PROGRESS_DEADLINE_EXCEEDED, message)
        return FAILED, Condition(READY, False, PROGRESS_DEADLINE_EXCEEDED, message)
    if at_desired and serving_ok and serving is not None and serving.rolled_out:
        return READY_PHASE, Condition(READY, True, AVAILABLE, f"serving version {served}")
    if at_desired and scaled_to_zero(obs):
        return READY_PHASE, Condition(READY, True, SCALED_TO_ZERO,
                                      f"version {served} scaled to zero while idle (KEDA, minReplicas 0); "
                                      "minReplicas 1 brings it back")
    if at_desired and serving is not None and serving.rolled_out and previous_phase in (READY_PHASE, DEGRADED):
        return DEGRADED, Condition(READY, False, NO_READY_REPLICAS, "no ready replicas")
    return DEPLOYING, Condition(READY, serving_ok, ROLLING_OUT, f"rolling out version {obs.desired_version}")


def status_patch(previous: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A merge patch turning previous into new for the fields we own (removed fields become None)."""
    owned = ("phase", "message", "observedGeneration", "modelVersion", "desiredVersion", "conditions",
             "endpoint", "replicas", "readyReplicas", "compression", "servingConfig")
    patch: dict[str, Any] = {}
    for key in owned:
        if key in new:
            if previous.get(key) != new[key]:
                patch[key] = new[key]
                if isinstance(new[key], dict) and isinstance(previous.get(key), dict):  # replace, not merge
                    patch[key] = {k: None for k in previous[key] if k not in new[key]} | new[key]
        elif key in previous and key not in ("modelVersion", "endpoint", "replicas", "readyReplicas", "compression"):
            patch[key] = None
    return patch
