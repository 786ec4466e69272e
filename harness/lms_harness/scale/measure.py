"""The scale bench's figures: percentiles and curves, request counts, and what changed in a
namespace between two snapshots (pure functions, plus the two reads they summarise)."""
from __future__ import annotations

import math
import re
import time
from typing import Any

from lms_harness.scale.api import ClusterApi

CHILD_PLURALS = ("deployments", "services", "horizontalpodautoscalers", "poddisruptionbudgets", "jobs")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100.0 * len(ordered))))
    return ordered[rank - 1]


def rounded_percentile(values: list[float], q: float) -> float | None:
    """percentile rounded to ms, or None for no values."""
    return round(percentile(values, q), 3) if values else None


def ready_curve(ready_at: list[float], points: int = 200) -> list[list[float]]:
    """[[seconds, objects ready]] at up to `points` evenly spaced counts (for the plot)."""
    ordered = sorted(ready_at)
    if not ordered:
        return []
    step = max(1, len(ordered) // points)
    curve = [[round(t, 3), i + 1] for i, t in enumerate(ordered) if (i + 1) % step == 0]
    if curve[-1][1] != len(ordered):
        curve.append([round(ordered[-1], 3), len(ordered)])
    return [[0.0, 0]] + curve


def operator_fields_time(obj: dict[str, Any]) -> str | None:
    """Latest managedFields time of the operator's field manager (what its writes touched)."""
    times = [m.get("time") or "" for m in (obj.get("metadata") or {}).get("managedFields") or []
             if m.get("manager") == "lms-operator"]
    return max(times) if times else None


def fingerprint(obj: dict[str, Any]) -> tuple[str, int, str | None]:
    """(resourceVersion, generation, operator write time) of an object."""
    meta = obj.get("metadata") or {}
    return meta.get("resourceVersion", ""), int(meta.get("generation") or 0), operator_fields_time(obj)


def compare_snapshots(before: dict[str, tuple[str, int, str | None]],
                      after: dict[str, tuple[str, int, str | None]]) -> dict[str, Any]:
    """Objects created, deleted, re-generated or written by the operator between two snapshots."""
    created = sorted(set(after) - set(before))
    deleted = sorted(set(before) - set(after))
    common = set(before) & set(after)
    regenerated = sorted(k for k in common if before[k][1] != after[k][1])
    operator_writes = sorted(k for k in common if before[k][2] != after[k][2])
    rv_changed = sorted(k for k in common if before[k][0] != after[k][0])
    # only the operator (and kopf inside it) writes LargeModelServices; children also get status
    # writes from Kubernetes controllers, so for them only generation and operator-owned fields count
    lms_written = sorted(k for k in rv_changed if k.startswith("LargeModelService/"))
    changed = sorted(set(created) | set(deleted) | set(regenerated) | set(operator_writes) | set(lms_written))
    return {"changes": len(changed), "created": created[:20], "deleted": deleted[:20],
            "generation_changed": regenerated[:20], "operator_field_writes": operator_writes[:20],
            "lms_written": lms_written[:20],
            "resource_version_changed": len(rv_changed), "examples_rv_changed": rv_changed[:10]}


def request_counts(metrics_text: str) -> dict[str, float]:
    """apiserver_request_total summed by "verb resource[/subresource]" from /metrics text."""
    counts: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line[line.index("{") + 1:line.rindex("}")]))
        sub = labels.get("subresource", "")
        key = f"{labels.get('verb')} {labels.get('resource') or '-'}{'/' + sub if sub else ''}"
        counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def request_mix(before: dict[str, float], after: dict[str, float], top: int = 25) -> dict[str, Any]:
    diff = {k: int(v - before.get(k, 0.0)) for k, v in after.items() if v - before.get(k, 0.0) >= 1}
    ranked = sorted(diff.items(), key=lambda kv: -kv[1])
    return {"total": sum(diff.values()), "by_verb_resource": dict(ranked[:top])}


def apiserver_requests(api: ClusterApi) -> dict[str, float]:
    """The API server's own request counter (every client, the operator included) by verb and resource."""
    return request_counts(api.apiserver_metrics())


def snapshot(api: ClusterApi, namespace: str) -> dict[str, tuple[str, int, str | None]]:
    """Fingerprints of every LMS and child object in the namespace."""
    out: dict[str, tuple[str, int, str | None]] = {}
    for item in api.list_lms(namespace)["items"]:
        out[f"LargeModelService/{item['metadata']['name']}"] = fingerprint(item)
    for plural in CHILD_PLURALS:
        for item in api.list(namespace, plural)["items"]:
            out[f"{plural}/{item['metadata']['name']}"] = fingerprint(item)
    return out


def wait_quiet(api: ClusterApi, namespace: str, window: float, timeout: float,
               log: Any = None) -> dict[str, tuple[str, int, str | None]]:
    """Snapshot once nothing in the namespace changed for `window` seconds (controllers settled)."""
    deadline = time.monotonic() + timeout
    last = snapshot(api, namespace)
    while time.monotonic() < deadline:
        time.sleep(window)
        now = snapshot(api, namespace)
        if now == last:
            return now
        last = now
    if log is not None:
        log(f"namespace {namespace} did not settle within {timeout:.0f}s; comparing anyway")
    return last
