"""Pure decisions that keep settled passes from writing: apply digests, claim cache, retry timing."""
from __future__ import annotations

from typing import Any

from lms_operator.api import status as st
from lms_operator.reconcile.applied import (DIGEST_ANNOTATION, REAPPLY_AFTER, Applied, AppliedCache,
                                            bodies_digest, needs_apply, stamped)
from lms_operator.reconcile.claims import ClaimCache
from lms_operator.reconcile.run import RETRY_COMPRESSING, RETRY_DEPLOYING, requeue_policy

BODIES = [{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "m-triton", "namespace": "t"},
           "spec": {"replicas": 1}},
          {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "m-triton", "namespace": "t"}, "spec": {}}]


def live(digest: str | None, uid: str = "u1", generation: int = 3) -> dict[str, Any]:
    annotations = {DIGEST_ANNOTATION: digest} if digest else {}
    return {"metadata": {"uid": uid, "generation": generation, "annotations": annotations}}


def test_digest_ignores_key_order_and_sees_every_change() -> None:
    reordered = [{k: dict(reversed(list(v.items()))) if isinstance(v, dict) else v for k, v in reversed(list(b.items()))}
                 for b in BODIES]
    assert bodies_digest(reordered) == bodies_digest(BODIES)
    changed = stamped(BODIES, "x")
    changed[1]["spec"] = {"type": "ClusterIP"}
    assert bodies_digest(changed) != bodies_digest(stamped(BODIES, "x"))


def test_stamp_goes_on_the_deployment_only_and_leaves_the_input_alone() -> None:
    out = stamped(BODIES, "abc")
    assert out[0]["metadata"]["annotations"] == {DIGEST_ANNOTATION: "abc"}
    assert "annotations" not in out[1]["metadata"] and "annotations" not in BODIES[0]["metadata"]


def test_needs_apply_decisions() -> None:
    d = bodies_digest(BODIES)
    entry = Applied(d, "u1", 3, at=100.0)
    assert needs_apply(entry, d, live(d), now=101.0) is False
    assert needs_apply(entry, d, None, now=101.0) is True  # deleted
    assert needs_apply(entry, d, live(d, generation=4), now=101.0) is True  # edited by someone
    assert needs_apply(entry, d, live(d, uid="u2"), now=101.0) is True  # recreated
    assert needs_apply(entry, "other", live(d), now=101.0) is True  # new bodies
    assert needs_apply(entry, d, live("stale"), now=101.0) is True
    assert needs_apply(entry, d, live(d), now=100.0 + REAPPLY_AFTER + 1) is True  # repair bound
    assert needs_apply(None, d, live(d), now=0.0) is False  # fresh process, stamped by an earlier one
    assert needs_apply(None, d, live(None), now=0.0) is True


def test_cache_seeds_once_and_forgets() -> None:
    cache = AppliedCache()
    cache.keep("t/m", "d", live("d"), now=5.0)
    cache.keep("t/m", "d", live("d"), now=50.0)
    assert cache.get("t/m") == Applied("d", "u1", 3, 5.0)
    cache.remember("t/m", "e", live("e", generation=4), now=60.0)
    assert cache.get("t/m") == Applied("e", "u1", 4, 60.0)
    cache.forget("t/m")
    assert cache.get("t/m") is None


def test_claim_cache_remembers_only_ready_claims_within_the_ttl() -> None:
    cache = ClaimCache(ttl=10.0)
    bound = st.Condition(st.REPOSITORY_READY, True, st.CLAIM_BOUND, "bound")
    lost = st.Condition(st.REPOSITORY_READY, False, st.CLAIM_NOT_BOUND, "lost")
    cache.record("t", "c", bound, now=0.0)
    assert cache.fresh("t", "c", now=10.0) == bound
    assert cache.fresh("t", "c", now=10.5) is None
    assert cache.fresh("other", "c", now=1.0) is None
    cache.record("t", "c", lost, now=1.0)
    assert cache.fresh("t", "c", now=1.0) is None


def test_requeue_policy() -> None:
    assert requeue_policy("running", st.COMPRESSING, False) == (RETRY_COMPRESSING, False)
    assert requeue_policy("failed", st.FAILED, True) == (None, True)
    assert requeue_policy("published", st.DEPLOYING, True) == (None, False)  # the Deployment watch reports it
    assert requeue_policy("published", st.DEPLOYING, False) == (RETRY_DEPLOYING, False)
    assert requeue_policy("published", st.READY_PHASE, True) == (None, False)
