"""The Argo CD health check, run by a real Lua 5.1 interpreter (Argo CD's dialect) on statuses.

Most sample statuses come from the operator's own status logic (derive_status), so the script
is checked against what the operator really writes, not against hand-made guesses.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lms_operator.api import status as st

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "gitops" / "argocd" / "health.lua"
PATCH = ROOT / "gitops" / "argocd" / "argocd-cm-patch.yaml"
KEY = "v1a2b3c4d5e6f708"
NOW = "2026-01-01T00:00:00Z"


def to_lua(lua: Any, value: Any) -> Any:
    """Python data as Lua values: dicts become tables, lists 1-based tables."""
    if isinstance(value, dict):
        return lua.table_from({k: to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([to_lua(lua, v) for v in value])
    return value


def health(obj: dict[str, Any] | None) -> tuple[str, str]:
    from lupa.lua51 import LuaRuntime

    lua = LuaRuntime(unpack_returned_tuples=True)
    assert lua.execute("return _VERSION") == "Lua 5.1"
    lua.globals().obj = to_lua(lua, obj) if obj is not None else None
    result = lua.execute(SCRIPT.read_text())
    return str(result["status"]), str(result["message"])


def resource(status: dict[str, Any] | None, generation: int = 1) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "serving.lms.dev/v1alpha1", "kind": "LargeModelService",
                           "metadata": {"name": "minilm", "namespace": "default", "generation": generation},
                           "spec": {}}
    if status is not None:
        obj["status"] = status
    return obj


def published() -> st.CompressionOutcome:
    return st.CompressionOutcome("published", st.PUBLISHED, "compression Job succeeded", st.CompressionSummary.from_dict(
        {"quality": {"metric": "cosine", "score": 0.995, "threshold": 0.99, "passed": True}}))


def gate_failed() -> st.CompressionOutcome:
    summary = st.CompressionSummary.from_dict({"quality": {"metric": "cosine", "score": 0.96, "threshold": 0.99,
                                                           "passed": False}})
    return st.CompressionOutcome("failed", st.QUALITY_GATE_FAILED, f"quality gate failed: {summary.gate_text()}", summary)


def derived(obs: st.Observation, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    return st.derive_status(obs, previous or {}, NOW)


SERVING_OK = st.ServingObservation(KEY, 2, 2, True)
CASES: list[tuple[str, st.Observation, dict[str, Any] | None, str, str]] = [
    ("ready", st.Observation(1, KEY, compression=published(), serving=SERVING_OK), None,
     "Healthy", f"serving version {KEY}"),
    ("pending", st.Observation(1, KEY), None, "Progressing", "Pending"),
    ("compressing", st.Observation(1, KEY, compression=st.CompressionOutcome("running", st.COMPRESSING, "running")),
     None, "Progressing", "Compressing"),
    ("deploying", st.Observation(1, KEY, compression=published(),
                                 serving=st.ServingObservation(KEY, 1, 0, False)), None, "Progressing", "Deploying"),
    ("gate failed", st.Observation(1, KEY, compression=gate_failed()), None,
     "Degraded", "quality gate failed: cosine 0.9600"),
    ("invalid spec", st.Observation(1, None, spec_problems=["spec.model.uri: unsupported scheme"]), None,
     "Degraded", "invalid spec"),
    ("new version failed, old still served", st.Observation(2, KEY, compression=gate_failed(),
                                                            serving=st.ServingObservation("0" * 16, 1, 1, True),
                                                            previous_version="0" * 16), None,
     "Degraded", "still serving"),
    ("replicas lost", st.Observation(1, KEY, compression=published(), serving=st.ServingObservation(KEY, 1, 0, True)),
     {"phase": "Ready"}, "Degraded", "no ready replicas"),
]


@pytest.mark.parametrize("name, obs, previous, want, text", CASES, ids=[c[0] for c in CASES])
def test_operator_statuses_map_to_argo_health(name: str, obs: st.Observation, previous: dict[str, Any] | None,
                                              want: str, text: str) -> None:
    status = derived(obs, previous)
    got, message = health(resource(status, generation=obs.generation or 1))
    assert got == want, (status.get("phase"), message)
    assert text in message


def test_no_status_yet_is_progressing() -> None:
    assert health(resource(None))[0] == "Progressing"
    assert health(resource({"conditions": []}))[0] == "Progressing"


def test_status_of_an_older_generation_is_progressing() -> None:
    status = derived(st.Observation(1, KEY, compression=published(), serving=SERVING_OK))
    got, message = health(resource(status, generation=2))
    assert got == "Progressing" and "generation 2" in message
    got, _ = health(resource({k: v for k, v in status.items() if k != "observedGeneration"}, generation=2))
    assert got == "Progressing"


def test_ready_phase_contradicted_by_conditions_is_degraded() -> None:
    status = derived(st.Observation(1, KEY, compression=published(), serving=SERVING_OK))
    for cond in status["conditions"]:
        if cond["type"] == "ServingReady":
            cond["status"], cond["message"] = "False", "0/2 replicas ready"
    got, message = health(resource(status))
    assert got == "Degraded" and "0/2 replicas ready" in message


def test_unknown_phase_and_missing_object() -> None:
    assert health(resource({"phase": "Exploding", "observedGeneration": 1})) == ("Unknown", "Unknown phase Exploding")
    assert health(None)[0] == "Missing"


def test_every_phase_the_operator_writes_is_mapped() -> None:
    for phase in (st.PENDING, st.COMPRESSING_PHASE, st.DEPLOYING, st.READY_PHASE, st.DEGRADED, st.FAILED):
        got, _ = health(resource({"phase": phase, "observedGeneration": 1}))
        assert got in ("Healthy", "Progressing", "Degraded"), phase


def test_argocd_cm_patch_embeds_the_script_verbatim() -> None:
    patch = yaml.safe_load(PATCH.read_text())
    assert patch["kind"] == "ConfigMap" and patch["metadata"]["name"] == "argocd-cm"
    key = "resource.customizations.health.serving.lms.dev_LargeModelService"
    assert patch["data"][key] == SCRIPT.read_text()
