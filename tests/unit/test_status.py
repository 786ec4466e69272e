"""Status logic: conditions, Job results, compression numbers and the phase decision table."""
from __future__ import annotations

import json
from typing import Any

import pytest

from lms_operator.api import status as st

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"
SUMMARY = {"version": "k", "original_bytes": 90_000_000, "compressed_bytes": 23_000_000, "size_ratio": 3.913,
           "latency_ms": {"baseline": 295.0, "compressed": 170.2}, "speedup": 1.733, "variant": "int8-per-channel",
           "quality": {"metric": "cosine", "score": 0.99213, "threshold": 0.99, "passed": True},
           "sha256": "a" * 64, "cache_hit": False}


def _pod(exit_code: int, message: str, finished: str = T1) -> dict[str, Any]:
    return {"metadata": {"name": "p", "creationTimestamp": T0},
            "status": {"containerStatuses": [{"name": "compress", "state": {"terminated": {
                "exitCode": exit_code, "message": message, "finishedAt": finished}}}]}}


def _job(condition: str | None) -> dict[str, Any]:
    conds = [{"type": condition, "status": "True", "reason": "BackoffLimitExceeded",
              "message": "Job has reached the specified backoff limit"}] if condition else []
    return {"metadata": {"name": "j"}, "status": {"conditions": conds}}


def test_condition_transition_time_changes_only_with_status() -> None:
    first = st.merge_conditions([], [st.Condition(st.READY, False, st.COMPRESSING, "a")], T0, 1)
    same = st.merge_conditions(first, [st.Condition(st.READY, False, st.ROLLING_OUT, "b")], T1, 2)
    flipped = st.merge_conditions(same, [st.Condition(st.READY, True, st.AVAILABLE, "c")], T1, 2)
    assert first[0]["lastTransitionTime"] == T0
    assert same[0]["lastTransitionTime"] == T0 and same[0]["reason"] == st.ROLLING_OUT
    assert same[0]["observedGeneration"] == 2
    assert flipped[0]["lastTransitionTime"] == T1 and flipped[0]["status"] == "True"


def test_conditions_come_in_a_fixed_order() -> None:
    conds = st.merge_conditions([], [st.Condition(t, True, "R") for t in reversed(st.CONDITION_TYPES)], T0, None)
    assert [c["type"] for c in conds] == list(st.CONDITION_TYPES)
    assert all("observedGeneration" not in c for c in conds)


def test_summary_from_a_message_takes_the_last_json_line() -> None:
    text = "loading...\n{not json\n" + json.dumps(SUMMARY)
    assert st.CompressionSummary.from_message(text).to_dict() == SUMMARY
    assert st.CompressionSummary.from_message("") is None
    assert st.CompressionSummary.from_message("Traceback: boom") is None


def test_summary_round_trips_through_the_termination_message() -> None:
    summary = st.CompressionSummary.from_dict({**SUMMARY, "cache_hit": True, "unknown": 1, "speedup": "fast"})
    assert summary.speedup is None and summary.cache_hit is True
    assert st.CompressionSummary.from_message(summary.to_message()) == summary
    long = st.CompressionSummary(model="m", error="x" * 10_000).to_message()
    assert len(long.encode()) <= 4096 and json.loads(long)["error"].endswith("...")


def test_compression_status_maps_summary_fields() -> None:
    comp = st.CompressionSummary.from_dict(SUMMARY).status_block("0123456789abcdef")
    assert comp == {"version": "0123456789abcdef", "originalBytes": 90_000_000, "compressedBytes": 23_000_000,
                    "ratio": 3.913, "latencyMs": 170.2, "baselineLatencyMs": 295.0, "speedup": 1.733,
                    "metric": "cosine", "score": 0.9921, "threshold": 0.99, "passed": True,
                    "variant": "int8-per-channel", "sha256": "a" * 64}
    assert st.CompressionSummary.from_dict({"error": "x"}).status_block("k") == {"version": "k"}


@pytest.mark.parametrize("job, pods, state, reason", [
    (_job(None), [], "running", st.COMPRESSING),
    (_job("Complete"), [_pod(0, json.dumps(SUMMARY))], "published", st.PUBLISHED),
    (_job("Failed"), [_pod(3, json.dumps({**SUMMARY, "quality": {"metric": "cosine", "score": 0.961,
                                                                   "threshold": 0.99, "passed": False}}))],
     "failed", st.QUALITY_GATE_FAILED),
    (_job("Failed"), [_pod(2, json.dumps({"error": "sha256 mismatch for model.safetensors"}))],
     "failed", st.INVALID_MODEL),
    (_job("Failed"), [_pod(2, json.dumps({"error": "spec.model.uri: resolves outside the claim",
                                          "reason": st.INVALID_SPEC}))], "failed", st.INVALID_SPEC),
    (_job("Failed"), [_pod(1, "Traceback ... MemoryError")], "failed", st.COMPRESSION_FAILED),
    (_job("Failed"), [], "failed", st.COMPRESSION_FAILED),
])
def test_job_outcome(job: dict[str, Any], pods: list[dict[str, Any]], state: str, reason: str) -> None:
    outcome = st.job_outcome(job, pods)
    assert (outcome.state, outcome.reason) == (state, reason)


def test_gate_failure_message_has_the_numbers() -> None:
    failed = {"quality": {"metric": "cosine", "score": 0.96123, "threshold": 0.99, "passed": False}}
    outcome = st.job_outcome(_job("Failed"), [_pod(3, json.dumps(failed))])
    assert outcome.message == "quality gate failed: cosine 0.9612 < 0.99"


def test_a_version_key_mismatch_fails_with_both_keys() -> None:
    summary = {"version": "bbbb", "requested_version": "aaaa", "error": "version key mismatch: the operator asked "
               "for aaaa, this compression image computes bbbb (compression format 2)"}
    outcome = st.job_outcome(_job("Failed"), [_pod(2, json.dumps(summary))])
    assert (outcome.state, outcome.reason) == ("failed", st.VERSION_MISMATCH)
    assert "aaaa" in outcome.message and "bbbb" in outcome.message


def test_job_outcome_uses_the_newest_pod() -> None:
    old = _pod(1, "oom", finished="2026-01-01T00:01:00Z")
    new = _pod(3, json.dumps({"quality": {"metric": "accuracy", "score": 0.5, "threshold": 0.9}}),
               finished="2026-01-01T00:02:00Z")
    assert st.job_outcome(_job("Failed"), [new, old]).reason == st.QUALITY_GATE_FAILED


# ---- the phase decision table ----------------------------------------------------------------------

PUBLISHED = st.CompressionOutcome("published", st.PUBLISHED, "ok", st.CompressionSummary.from_dict(SUMMARY))
RUNNING = st.CompressionOutcome("running", st.COMPRESSING, "running")
GATE = st.CompressionOutcome("failed", st.QUALITY_GATE_FAILED, "quality gate failed: cosine 0.9600 < threshold 0.99")
BAD = st.CompressionOutcome("failed", st.INVALID_MODEL, "invalid model: digest mismatch")
CLAIM_OK = st.Condition(st.REPOSITORY_READY, True, st.CLAIM_BOUND, "bound")
NO_CLAIM = st.Condition(st.REPOSITORY_READY, False, st.CLAIM_NOT_FOUND, "PersistentVolumeClaim lms-models not found")


def serving(version: str, ready: int, rolled_out: bool = True, stalled: str | None = None) -> st.ServingObservation:
    return st.ServingObservation(version=version, replicas=max(ready, 1), ready_replicas=ready, rolled_out=rolled_out,
                                 stalled=stalled)


STALLED = 'ReplicaSet "m-triton-1" has timed out progressing.'


def conds(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


@pytest.mark.parametrize("name, comp, srv, prev_version, repo, phase, ready, served", [
    ("compressing", RUNNING, None, None, CLAIM_OK, st.COMPRESSING_PHASE, "False", None),
    ("deploying", PUBLISHED, serving("k2", 0, False), None, CLAIM_OK, st.DEPLOYING, "False", None),
    ("ready", PUBLISHED, serving("k2", 1), None, CLAIM_OK, st.READY_PHASE, "True", "k2"),
    ("rolling from k1", PUBLISHED, serving("k1", 1, False), "k1", CLAIM_OK, st.DEPLOYING, "True", "k1"),
    ("gate fails first time", GATE, None, None, CLAIM_OK, st.FAILED, "False", None),
    ("gate fails on update", GATE, serving("k1", 1), "k1", CLAIM_OK, st.DEGRADED, "True", "k1"),
    ("bad model on update", BAD, serving("k1", 1), "k1", CLAIM_OK, st.DEGRADED, "True", "k1"),
    ("compressing update", RUNNING, serving("k1", 1), "k1", CLAIM_OK, st.COMPRESSING_PHASE, "True", "k1"),
    ("no claim", None, None, None, NO_CLAIM, st.PENDING, "False", None),
    ("first rollout past its deadline", PUBLISHED, serving("k2", 0, False, STALLED), None, CLAIM_OK, st.FAILED,
     "False", None),
    ("update past its deadline", PUBLISHED, serving("k2", 1, False, STALLED), "k1", CLAIM_OK, st.DEGRADED, "True",
     "k1"),
])
def test_phase_decision_table(name: str, comp: st.CompressionOutcome | None, srv: st.ServingObservation | None,
                              prev_version: str | None, repo: st.Condition, phase: str, ready: str,
                              served: str | None) -> None:
    obs = st.Observation(generation=3, desired_version="k2", repository=repo, compression=comp, serving=srv,
                         previous_version=prev_version, endpoint={"http": "h", "grpc": "g"})
    status = st.derive_status(obs, {}, T0)
    assert status["phase"] == phase, name
    assert conds(status)[st.READY][0] == ready, name
    assert status.get("modelVersion") == served, name
    assert status["observedGeneration"] == 3 and status["desiredVersion"] == "k2"


def test_gate_failure_on_update_says_what_is_served() -> None:
    obs = st.Observation(generation=2, desired_version="k2", repository=CLAIM_OK, compression=GATE,
                         serving=serving("k1", 1), previous_version="k1")
    status = st.derive_status(obs, {}, T0)
    c = conds(status)
    assert c[st.QUALITY_GATE_PASSED] == ("False", st.QUALITY_GATE_FAILED)
    assert c[st.READY] == ("True", st.SERVING_PREVIOUS)
    assert "0.9600" in status["message"] and "still serving k1" in status["message"]


def test_invalid_spec_is_failed_with_field_paths() -> None:
    obs = st.Observation(generation=1, desired_version=None,
                         spec_problems=["spec.serving.resources.gpu: device gpu needs resources.gpu >= 1"])
    status = st.derive_status(obs, {}, T0)
    assert status["phase"] == st.FAILED
    assert conds(status)[st.VALIDATED] == ("False", st.INVALID_SPEC)
    assert "spec.serving.resources.gpu" in status["message"]


def test_status_patch_only_carries_changes() -> None:
    obs = st.Observation(generation=1, desired_version="k", repository=CLAIM_OK, compression=PUBLISHED,
                         serving=serving("k", 1), endpoint={"http": "h", "grpc": "g"})
    first = st.derive_status(obs, {}, T0)
    assert st.status_patch(first, st.derive_status(obs, first, T1)) == {}
    later = st.derive_status(st.Observation(generation=1, desired_version="k", repository=CLAIM_OK,
                                            compression=PUBLISHED, serving=serving("k", 2)), first, T1)
    patch = st.status_patch(first, later)
    assert patch["readyReplicas"] == 2 and "phase" not in patch


def test_status_compression_comes_from_the_observation_and_is_replaced_whole() -> None:
    obs = st.Observation(generation=1, desired_version="k", repository=CLAIM_OK, compression=PUBLISHED,
                         serving=serving("k", 1))
    first = st.derive_status(obs, {}, T0)
    assert first["compression"]["version"] == "k" and first["compression"]["ratio"] == 3.913
    running = st.Observation(generation=2, desired_version="k2", repository=CLAIM_OK, compression=RUNNING,
                             serving=serving("k", 1), previous_version="k")
    assert st.derive_status(running, first, T1)["compression"] == first["compression"]  # still what is served
    failed = st.Observation(generation=2, desired_version="k2", repository=CLAIM_OK, compression=BAD,
                            serving=serving("k", 1), previous_version="k")
    patch = st.status_patch(first, st.derive_status(failed, first, T1))
    assert patch["compression"]["version"] == "k2" and patch["compression"]["passed"] is False
    assert patch["compression"]["ratio"] is None  # a merge patch that drops the old version's numbers


def conds_full(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_gate_message_keeps_the_recorded_numbers_once_the_job_summary_is_not_read_again() -> None:
    first = st.derive_status(st.Observation(generation=1, desired_version="k", repository=CLAIM_OK,
                                            compression=PUBLISHED, serving=serving("k", 1)), {}, T0)
    assert conds_full(first)[st.QUALITY_GATE_PASSED]["message"] == "cosine 0.9921 >= 0.99"
    recorded = st.CompressionOutcome("published", st.PUBLISHED, "compression Job succeeded")  # no summary
    later = st.derive_status(st.Observation(generation=1, desired_version="k", repository=CLAIM_OK,
                                            compression=recorded, serving=serving("k", 1)), first, T1)
    assert conds_full(later)[st.QUALITY_GATE_PASSED] == conds_full(first)[st.QUALITY_GATE_PASSED]
    assert later["compression"] == first["compression"]
    other = st.derive_status(st.Observation(generation=2, desired_version="k2", repository=CLAIM_OK,
                                            compression=recorded, serving=serving("k", 1)), first, T1)
    assert conds_full(other)[st.QUALITY_GATE_PASSED]["message"] == "quality gate passed"  # k's numbers are not k2's


def test_progress_deadline_is_the_reason_on_serving_and_ready() -> None:
    obs = st.Observation(generation=1, desired_version="k2", repository=CLAIM_OK, compression=PUBLISHED,
                         serving=serving("k2", 0, False, STALLED))
    status = st.derive_status(obs, {}, T0)
    c = conds(status)
    assert c[st.SERVING_READY] == ("False", st.PROGRESS_DEADLINE_EXCEEDED)
    assert c[st.READY] == ("False", st.PROGRESS_DEADLINE_EXCEEDED)
    assert "timed out progressing" in status["message"]


def test_gate_verdict_counts_before_the_job_gives_up() -> None:
    pod = _pod(3, json.dumps({"quality": {"metric": "accuracy", "score": 0.98, "threshold": 0.999}}))
    assert st.job_outcome(_job(None), [pod]).reason == st.QUALITY_GATE_FAILED
    assert st.job_outcome(_job(None), [_pod(1, "killed")]).state == "running"


def at_zero(version: str) -> st.ServingObservation:
    return st.ServingObservation(version=version, replicas=0, ready_replicas=0, rolled_out=True, wanted=0)


def test_scaled_to_zero_by_keda_stays_ready() -> None:
    keda = st.Condition(st.AUTOSCALING, True, st.KEDA_SCALING, "KEDA ScaledObject on queueLatency")
    obs = st.Observation(generation=4, desired_version="k2", repository=CLAIM_OK, compression=PUBLISHED,
                         serving=at_zero("k2"), previous_version="k2", autoscaling=keda, scales_to_zero=True)
    status = st.derive_status(obs, {"phase": st.READY_PHASE}, T0)
    c = conds(status)
    assert status["phase"] == st.READY_PHASE and status["modelVersion"] == "k2"
    assert c[st.READY] == ("True", st.SCALED_TO_ZERO) and c[st.SERVING_READY] == ("True", st.SCALED_TO_ZERO)
    assert c[st.AUTOSCALING] == ("True", st.KEDA_SCALING)
    assert (status["replicas"], status["readyReplicas"]) == (0, 0)
    assert "scaled to zero" in status["message"]
    assert [t["type"] for t in status["conditions"]].index(st.AUTOSCALING) == \
        [t["type"] for t in status["conditions"]].index(st.READY) - 1


def test_zero_replicas_without_scale_to_zero_is_an_outage() -> None:
    for scales, srv in ((False, at_zero("k2")),  # an HPA never scales to zero: someone else did
                        (True, st.ServingObservation("k2", 1, 0, True, wanted=1))):  # wants 1, none ready
        obs = st.Observation(generation=4, desired_version="k2", repository=CLAIM_OK, compression=PUBLISHED,
                             serving=srv, previous_version="k2", scales_to_zero=scales)
        status = st.derive_status(obs, {"phase": st.READY_PHASE}, T0)
        assert status["phase"] == st.DEGRADED and conds(status)[st.READY] == ("False", st.NO_READY_REPLICAS)


def test_keda_fallback_is_a_false_autoscaling_condition_and_ready_is_unaffected() -> None:
    fallback = st.Condition(st.AUTOSCALING, False, st.KEDA_NOT_INSTALLED,
                            "KEDA is not installed; scaling on CPU until it is")
    obs = st.Observation(generation=1, desired_version="k2", repository=CLAIM_OK, compression=PUBLISHED,
                         serving=serving("k2", 1), autoscaling=fallback)
    status = st.derive_status(obs, {}, T0)
    assert conds(status)[st.AUTOSCALING] == ("False", st.KEDA_NOT_INSTALLED)
    assert status["phase"] == st.READY_PHASE and conds(status)[st.READY] == ("True", st.AVAILABLE)


def test_status_says_how_the_model_is_served_and_the_threads_it_was_timed_with() -> None:
    config = {"template": "onnx-cpu", "templateDigest": "d" * 64, "digest": "0123456789abcdef"}
    obs = st.Observation(generation=1, desired_version="k", repository=CLAIM_OK, compression=PUBLISHED,
                         serving=serving("k", 1), serving_config=config)
    first = st.derive_status(obs, {}, T0)
    assert first["servingConfig"] == config
    changed = st.Observation(generation=2, desired_version="k", repository=CLAIM_OK, compression=PUBLISHED,
                             serving=serving("k", 1), serving_config={**config, "digest": "fedcba9876543210"})
    assert st.status_patch(first, st.derive_status(changed, first, T1))["servingConfig"]["digest"] == "fedcba9876543210"
    timed = st.CompressionSummary.from_dict({**SUMMARY, "threads": 2, "artifact": "a" * 16})
    assert timed.status_block("k")["threads"] == 2 and timed.artifact == "a" * 16
