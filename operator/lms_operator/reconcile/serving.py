"""Ensure the Triton serving objects for a published version, and observe the Deployment.

The Deployment is applied without spec.replicas: the autoscaler (HPA or KEDA) owns them. When the
autoscaler kind changes (KEDA installed or removed, or another metric), the other kind's object is
deleted, and a Deployment that KEDA left at zero replicas is woken for an HPA (which never scales
from zero).
"""
from __future__ import annotations

import time
from typing import Any

from lms_operator.api import schema
from lms_operator.api import status as st
from lms_operator.api.spec import LargeModelService
from lms_operator.reconcile.applied import bodies_digest, needs_apply, stamped
from lms_operator.reconcile.context import Context, read_watched
from lms_operator.reconcile.faults import fault_point
from lms_operator.resources import meta
from lms_operator.resources.autoscaling import SCALED_OBJECT_KIND, AutoscalerPlan, plan_autoscaler, stale_autoscaler
from lms_operator.resources.render import serving_objects
from lms_operator.resources.settings import BuildSettings

AUTOSCALER_REPLACED = "AutoscalerReplaced"
AUTOSCALER_CHANGED = "AutoscalerChanged"
SCALED_UP_FROM_ZERO = "ScaledUpFromZero"


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
                                 stalled=stalled, wanted=wanted)


def autoscaling_status(lms: LargeModelService, settings: BuildSettings) -> tuple[st.Condition, bool]:
    """The Autoscaling condition (False while a Triton metric waits for KEDA) and whether the
    autoscaler may scale the Deployment to zero."""
    plan = plan_autoscaler(lms, settings)
    auto = lms.spec.autoscaling
    bounds = f"{plan.min_replicas}-{auto.max_replicas} replicas"
    if plan.fallback is not None:
        return st.Condition(st.AUTOSCALING, False, st.KEDA_NOT_INSTALLED, f"{plan.fallback}; {bounds}"), False
    if plan.kind == SCALED_OBJECT_KIND:
        return st.Condition(st.AUTOSCALING, True, st.KEDA_SCALING,
                            f"KEDA ScaledObject on {auto.metric} (target {auto.target}); {bounds}"), plan.scales_to_zero
    return st.Condition(st.AUTOSCALING, True, st.HPA_SCALING,
                        f"HorizontalPodAutoscaler on cpu (target {auto.target}%); {bounds}"), False


def autoscaling_notes(previous: dict[str, Any], condition: st.Condition) -> list[str]:
    """An Event's note when the autoscaler in charge changed since the last status (once, not per pass)."""
    before = next((c for c in previous.get("conditions") or [] if c.get("type") == st.AUTOSCALING), None)
    if before is not None and before.get("reason") == condition.reason:
        return []
    if condition.reason == st.KEDA_NOT_INSTALLED:
        return [f"{condition.reason}: {condition.message}"]
    return [f"{AUTOSCALER_CHANGED}: {condition.message}"] if before is not None else []


def _ours(obj: dict[str, Any], lms: LargeModelService) -> bool:
    """Whether this resource controls the object (its owner reference, as every child carries)."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("kind") == schema.KIND and ref.get("name") == lms.name for ref in refs)


async def remove_stale_autoscaler(ctx: Context, lms: LargeModelService) -> list[str]:
    """Delete the autoscaler of the other kind, when it is this resource's (gone already is fine)."""
    stale = stale_autoscaler(lms, ctx.settings)
    if stale is None:
        return []
    api_version, kind, name = stale
    found = await ctx.kube.get(api_version, kind, lms.namespace, name)
    if found is None or not _ours(found, lms):
        return []  # absent, or not ours (never KEDA's keda-hpa-*: another name)
    await ctx.kube.delete(api_version, kind, lms.namespace, name, found["metadata"]["uid"])
    return [f"{AUTOSCALER_REPLACED}: deleted {kind} {name}; {plan_autoscaler(lms, ctx.settings).kind} takes over"]


async def wake_from_zero(ctx: Context, lms: LargeModelService, plan: AutoscalerPlan,
                         deployment: dict[str, Any] | None) -> list[str]:
    """An HPA leaves a Deployment at zero replicas alone, so one that KEDA scaled to zero is set to the
    HPA's minimum once (a merge patch: replicas stay outside what server-side apply owns)."""
    if plan.kind == SCALED_OBJECT_KIND or deployment is None:
        return []
    if int((deployment.get("spec") or {}).get("replicas", 1)) != 0:
        return []
    await ctx.kube.patch("apps/v1", "Deployment", lms.namespace, meta.server_name(lms),
                         {"spec": {"replicas": plan.min_replicas}})
    return [f"{SCALED_UP_FROM_ZERO}: {meta.server_name(lms)} had 0 replicas and the "
            f"HorizontalPodAutoscaler never scales from zero; set to {plan.min_replicas}"]


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
    # The old autoscaler goes first: KEDA refuses a ScaledObject for a Deployment another HPA scales.
    notes += await remove_stale_autoscaler(ctx, lms)
    notes += await wake_from_zero(ctx, lms, plan_autoscaler(lms, ctx.settings), live)
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
