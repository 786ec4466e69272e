"""The contract between the operator and its compression Job, in one place.

The operator starts `lms compress --version-key KEY` in a Job; the Job answers
with an exit code and a one-line JSON summary in its termination message. Both
sides import this module, so exit codes, phases, condition vocabulary, the
compression format version and the summary's fields cannot drift apart.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from enum import IntEnum
from typing import Any

FORMAT_VERSION = 2
"""What a published version looks like for given inputs. Bump it on purpose when the same spec and
model would now publish different files; an operator upgrade that keeps it leaves every model alone.
2: the built-in WordNet corpus replaced stdlib docstrings as default training and evaluation text, and
embedding distillation changed objective and layer choice."""


class ExitCode(IntEnum):
    """Exit codes of `lms compress`."""
    OK = 0
    FAILED = 1        # anything else (may be retried by the Job)
    BAD_INPUT = 2     # spec, model, digest or version-key mismatch: a retry cannot help
    GATE_FAILED = 3   # no variant reached the quality gate: nothing published


DETERMINISTIC_EXIT_CODES = (ExitCode.BAD_INPUT, ExitCode.GATE_FAILED)

# Phases of a LargeModelService.
PENDING, COMPRESSING_PHASE, DEPLOYING, READY_PHASE, DEGRADED, FAILED = (
    "Pending", "Compressing", "Deploying", "Ready", "Degraded", "Failed")
PHASES = (PENDING, COMPRESSING_PHASE, DEPLOYING, READY_PHASE, DEGRADED, FAILED)

# Condition types, in the order status lists them.
VALIDATED = "Validated"
REPOSITORY_READY = "RepositoryReady"
COMPRESSED = "Compressed"
QUALITY_GATE_PASSED = "QualityGatePassed"
SERVING_READY = "ServingReady"
AUTOSCALING = "Autoscaling"
READY = "Ready"
CONDITION_TYPES = (VALIDATED, REPOSITORY_READY, COMPRESSED, QUALITY_GATE_PASSED, SERVING_READY, AUTOSCALING, READY)

# Condition reasons.
INVALID_SPEC = "InvalidSpec"
SPEC_VALID = "SpecValid"
CLAIM_NOT_FOUND = "ClaimNotFound"
CLAIM_NOT_BOUND = "ClaimNotBound"
CLAIM_BOUND = "ClaimBound"
UNSUPPORTED_REPOSITORY = "UnsupportedRepository"
COMPRESSING = "Compressing"
PUBLISHED = "Published"
CACHE_HIT = "CacheHit"
REBUILDING = "Rebuilding"
QUALITY_GATE_FAILED = "QualityGateFailed"
INVALID_MODEL = "InvalidModel"
VERSION_MISMATCH = "VersionMismatch"
COMPRESSION_FAILED = "CompressionFailed"
GATE_PASSED = "GatePassed"
WAITING = "Waiting"
ROLLING_OUT = "RollingOut"
NO_READY_REPLICAS = "NoReadyReplicas"
AVAILABLE = "Available"
SERVING_PREVIOUS = "ServingPreviousVersion"
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
SCALED_TO_ZERO = "ScaledToZero"
"""KEDA scaled an idle model to zero replicas: not an outage, the resource stays Ready."""
KEDA_SCALING = "KEDA"
HPA_SCALING = "HorizontalPodAutoscaler"
KEDA_NOT_INSTALLED = "KEDANotInstalled"
"""A Triton metric was asked for but KEDA is absent: the operator scales on CPU meanwhile."""
STORAGE_ACCESS_DENIED = "StorageAccessDenied"
MODEL_NOT_FOUND = "ModelNotFound"
DIGEST_MISMATCH = "DigestMismatch"
STORAGE_REASONS = (STORAGE_ACCESS_DENIED, MODEL_NOT_FOUND, DIGEST_MISMATCH)
"""Bad-input verdicts about storage that the Job names in its summary's `reason`."""
INVALID_DATA = "InvalidData"
"""spec.compression.data (or the built-in corpus) cannot serve the gate: missing, empty, not UTF-8, bad JSON,
a missing field, too few samples."""
INPUT_REASONS = (*STORAGE_REASONS, INVALID_DATA, INVALID_SPEC)
"""Bad-input verdicts the Job names in its summary's `reason` (the Failed condition's reason)."""

SUMMARY_LIMIT = 4096
"""Kubernetes keeps at most 4 KiB of a termination message."""


@dataclass(frozen=True)
class Latency:
    baseline: float | None = None
    compressed: float | None = None


@dataclass(frozen=True)
class Quality:
    metric: str | None = None
    score: float | None = None
    threshold: float | None = None
    passed: bool | None = None
    teacher_score: float | None = None
    samples: int | None = None
    data_sha256: str | None = None
    """sha256 of the evaluation data the score comes from (a file, or the built-in corpus)."""


@dataclass(frozen=True)
class CompressionSummary:
    """What one `lms compress` run tells the operator (and what report.json starts with)."""
    version: str | None = None
    model: str | None = None
    path: str | None = None
    variant: str | None = None
    original_bytes: int | None = None
    compressed_bytes: int | None = None
    size_ratio: float | None = None
    latency_ms: Latency = field(default_factory=Latency)
    speedup: float | None = None
    speedup_median: float | None = None
    """The same ratio from the median round: far from `speedup`, the node was busy while timing."""
    quality: Quality = field(default_factory=Quality)
    sha256: str | None = None
    cache_hit: bool = False
    source_revision: str | None = None
    """The resolved revision of the source model (a Hub commit), when the source has one."""
    requested_version: str | None = None
    """On a version-key mismatch: the key the operator asked for (`version` is the Job's own)."""
    format_version: int | None = None
    error: str | None = None
    reason: str | None = None
    """A storage verdict (STORAGE_REASONS) that becomes the Failed condition's reason."""
    note: str | None = None
    """What the chosen variant does not gain, said plainly (unstructured pruning: file size, not latency)."""
    objective: str | None = None
    """What the variant search optimised among the passing variants: latency or size."""
    variants: str | None = None
    """Every candidate in one short line (size, speed, score; the published one starred)."""
    threads: int | None = None
    """Threads the candidates were timed with (the serving threads may differ)."""
    artifact: str | None = None
    """api.version.artifact_key: versions with the same one hold the same compressed model."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompressionSummary:
        """Tolerant read: unknown keys are ignored, mistyped values become None."""
        known = {f.name for f in fields(cls)} - {"latency_ms", "quality"}
        values: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        for name in ("original_bytes", "compressed_bytes", "format_version", "threads"):
            values[name] = _int(values.get(name))
        for name in ("size_ratio", "speedup", "speedup_median"):
            values[name] = _num(values.get(name))
        for name in ("version", "model", "path", "variant", "sha256", "source_revision", "requested_version", "error", "artifact",
                     "reason", "note", "objective", "variants"):
            values[name] = values[name] if isinstance(values.get(name), str) else None
        values["cache_hit"] = data.get("cache_hit") is True
        lat = data.get("latency_ms") if isinstance(data.get("latency_ms"), dict) else {}
        q = data.get("quality") if isinstance(data.get("quality"), dict) else {}
        return cls(**values,
                   latency_ms=Latency(_num(lat.get("baseline")), _num(lat.get("compressed"))),
                   quality=Quality(q.get("metric") if isinstance(q.get("metric"), str) else None,
                                   _num(q.get("score")), _num(q.get("threshold")),
                                   q.get("passed") if isinstance(q.get("passed"), bool) else None,
                                   _num(q.get("teacher_score")), _int(q.get("samples")),
                                   q.get("data_sha256") if isinstance(q.get("data_sha256"), str) else None))

    @classmethod
    def from_message(cls, text: str | None) -> CompressionSummary | None:
        """The summary in a termination message (the last JSON line wins: logs may precede it)."""
        for line in reversed((text or "").strip().splitlines()):
            if line.strip().startswith("{"):
                try:
                    parsed = json.loads(line)
                except ValueError:
                    continue
                if isinstance(parsed, dict):
                    return cls.from_dict(parsed)
        return None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready fields, None values and empty parts left out."""
        out = asdict(self)
        for part in ("latency_ms", "quality"):
            out[part] = {k: v for k, v in out[part].items() if v is not None} or None
        return {k: v for k, v in out.items() if v is not None}

    def to_message(self) -> str:
        """One JSON line within the termination message limit (the error text is shortened if needed)."""
        data = self.to_dict()
        text = json.dumps(data, separators=(",", ":"), sort_keys=True)
        over = len(text.encode()) - SUMMARY_LIMIT
        if over > 0 and data.get("error"):
            data["error"] = str(data["error"])[: max(0, len(str(data["error"])) - over - 8)] + "..."
            text = json.dumps(data, separators=(",", ":"), sort_keys=True)
        return text

    def status_block(self, key: str) -> dict[str, Any]:
        """status.compression for the version `key`."""
        out: dict[str, Any] = {
            "version": key,
            "originalBytes": self.original_bytes,
            "compressedBytes": self.compressed_bytes,
            "ratio": _round(self.size_ratio),
            "latencyMs": _round(self.latency_ms.compressed),
            "baselineLatencyMs": _round(self.latency_ms.baseline),
            "speedup": _round(self.speedup),
            "speedupMedian": _round(self.speedup_median),
            "metric": self.quality.metric,
            "score": _round(self.quality.score, 4),
            "threshold": self.quality.threshold,
            "passed": self.quality.passed,
            "variant": self.variant,
            "sha256": self.sha256,
            "sourceRevision": self.source_revision,
            "samples": self.quality.samples,
            "dataSha256": self.quality.data_sha256,
            "note": self.note,
            "objective": self.objective,
            "variants": self.variants,
            "threads": self.threads,
        }
        return {k: v for k, v in out.items() if v is not None}

    def gate_text(self) -> str:
        """'cosine 0.9612 >= 0.99' style text with the gate's numbers, when there are any."""
        q = self.quality
        if q.score is None:
            return "quality gate passed" if q.passed else "quality gate failed"
        if q.threshold is None:
            return f"{q.metric or 'score'} {q.score:.4f}"
        rel = ">=" if q.score >= q.threshold else "<"
        return f"{q.metric or 'score'} {q.score:.4f} {rel} {q.threshold:g}"


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _round(value: float | None, digits: int = 3) -> float | None:
    return round(value, digits) if value is not None else None
