"""Ensure the Triton serving objects for a published version, and observe the Deployment."""
from __future__ import annotations

import time
from typing import Any

from lms_operator.api import status as st
from lms_operator.api.spec import LargeModelService
from lms_operator.reconcile.applied import bodies_digest, needs_apply, stamped
from lms_operator.reconcile.context import Context, read_watched
from lms_operator.reconcile.faults import fault_point
from lms_operator.resources import meta
from lms_operator.resources.render import serving_objects


def observe_deployment(deployment: dict[str, Any] | None) -> st.ServingObservation | None:
    """Version, replica counts, whether the rollout of the current template is complete, and whether
    the Deployment controller gave up on it (Progressing=False, ProgressDeadlineExceeded)."""
    if deployment is None:
        return None
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    wanted = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas", 0))
    rolled_out = (int(status.get("observedGeneration", 0)) >= int(deployment["metadata"].get("generation", 0))
                  and updated >= wanted and int(status.get("replicas", 0)) == updated
                  and int(status.get("availableReplicas", 0)) >= updated)
    progressing = next((c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), {})
    stalled = (progressing.get("message") or "no progress within the deadline"
               if progressing.get("status") == "False" and progressing.get("reason") == st.PROGRESS_DEADLINE_EXCEEDED
               else None)
    return st.ServingObservation(version=labels.get(meta.VERSION_LABEL), replicas=int(status.get("replicas", 0)),
                                 ready_replicas=int(status.get("readyReplicas", 0)), rolled_out=rolled_out,
                                 stalled=stalled)


async def read_serving(ctx: Context, lms: LargeModelService) -> st.ServingObservation | None:
    return observe_deployment(await read_watched(ctx, "apps/v1", "Deployment", lms.namespace, meta.server_name(lms)))


async def ensure_serving(ctx: Context, lms: LargeModelService, key: str,
                         owner: dict[str, Any]) -> tuple[st.ServingObservation | None, list[str]]:
    """Server-side apply Deployment, Service, autoscaler and PDB, unless the live ones already match."""
    live = await read_watched(ctx, "apps/v1", "Deployment", lms.namespace, meta.server_name(lms))
    before = observe_deployment(live)
    objects = serving_objects(lms, key, ctx.settings, owner)
    digest = bodies_digest(objects)
    resource = f"{lms.namespace}/{lms.name}"
    now = time.monotonic()
    if live is not None and not needs_apply(ctx.applied.get(resource), digest, live, now):
        ctx.applied.keep(resource, digest, live, now)
        return before, []
    notes: list[str] = []
    if before is None:
        notes.append(f"ServingCreated: Triton Deployment {meta.server_name(lms)} for version {key}")
    elif before.version != key:
        notes.append(f"RollingUpdate: Triton Deployment {meta.server_name(lms)} from version {before.version} to {key}")
    ctx.applied.forget(resource)  # a failure part-way applies everything again on the next pass
    observed: st.ServingObservation | None = None
    deployment: dict[str, Any] | None = None
    # The stamped Deployment goes last: its digest then also vouches for the other three, so a
    # process that dies between two applies re-applies everything after its restart.
    for obj in sorted(stamped(objects, digest), key=lambda o: o["kind"] == "Deployment"):
        if obj["kind"] == "Deployment":
            fault_point("before_deployment_apply")
        applied = await ctx.kube.apply(obj)
        if obj["kind"] == "Deployment":
            fault_point("after_deployment_apply")
            deployment = applied
            observed = observe_deployment(applied)
    if deployment is not None:
        ctx.applied.remember(resource, digest, deployment, now)
    return observed, notes
