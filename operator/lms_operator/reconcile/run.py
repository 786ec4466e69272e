"""One reconcile pass for a LargeModelService body: observe, act, and write the status.

Level-based: every pass recomputes everything from the cluster and the spec, so
it does not matter which trigger (create, update, child event, timer) ran it.
The result tells the caller whether to retry later or give up, instead of
sleeping or raising framework exceptions here.
"""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

from lms_operator.api import schema
from lms_operator.api import status as st
from lms_operator.api.spec import LargeModelService, SpecError, parse_spec
from lms_operator.api.validate import Problem
from lms_operator.modelrepo.templates import TemplateError
from lms_operator.reconcile.compression import ensure_compression
from lms_operator.reconcile.context import Context
from lms_operator.reconcile.faults import fault_point
from lms_operator.reconcile.objectstore import object_store_condition
from lms_operator.reconcile.repository import claim_condition
from lms_operator.reconcile.serving import autoscaling_notes, autoscaling_status, ensure_serving, read_serving
from lms_operator.resources import meta
from lms_operator.resources.render import desired_version
from lms_operator.resources.server import endpoints, serving_config_status
from lms_operator.resources.settings import BuildSettings

SPEC_CACHE_SIZE = 10_000
RETRY_COMPRESSING = 30.0
RETRY_DEPLOYING = 10.0
RETRY_CLAIM = 30.0
# Phases that get an Event of their own; the way into Compressing and Deploying is already told
# by the step's Event (JobCreated, CacheHit, ServingCreated, RollingUpdate).
PHASE_EVENTS = (st.READY_PHASE, st.DEGRADED, st.FAILED)


@dataclass
class Event:
    type: str  # "Normal" | "Warning"
    reason: str
    message: str


@dataclass
class Result:
    """What happened: the new phase, events to post, and whether (and when) to look again."""
    phase: str
    message: str
    requeue_after: float | None = None
    permanent: bool = False
    events: list[Event] = field(default_factory=list)
    body: dict[str, Any] | None = None
    """The resource as the status patch returned it (None when the pass wrote no status)."""


def now_rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def manifest_of(body: dict[str, Any]) -> dict[str, Any]:
    meta_ = body.get("metadata") or {}
    return {"apiVersion": schema.API_VERSION, "kind": schema.KIND,
            "metadata": {"name": meta_.get("name"), "namespace": meta_.get("namespace"), "uid": meta_.get("uid"),
                         "generation": meta_.get("generation")},
            "spec": body.get("spec") or {}}


def parsed_spec(ctx: Context, body: dict[str, Any]) -> LargeModelService:
    """The validated spec, parsed once per resource generation: the spec cannot change without a
    new generation, and checking its CEL rules on every pass was a tenth of the operator's CPU at
    1000 resources. An invalid spec is not kept (its SpecError is raised again on each pass)."""
    metadata = body.get("metadata") or {}
    key = (metadata.get("uid"), metadata.get("generation"))
    if None in key:
        return parse_spec(manifest_of(body))
    found = ctx.specs.get(key)
    if found is None:
        found = ctx.specs[key] = parse_spec(manifest_of(body))
        if len(ctx.specs) > SPEC_CACHE_SIZE:
            ctx.specs.pop(next(iter(ctx.specs)))  # the oldest entry
    return found


def template_checked_version(lms: LargeModelService, settings: BuildSettings) -> str:
    """The desired version key; a serving template the operator does not have is a spec problem."""
    try:
        return desired_version(lms, settings)
    except TemplateError as exc:
        raise SpecError([Problem("spec.serving.template", str(exc).removeprefix("spec.serving.template: "))]) from None


def _notes_to_events(notes: list[str]) -> list[Event]:
    out = []
    for note in notes:
        reason, _, message = note.partition(": ")
        out.append(Event("Warning" if reason in (st.REBUILDING, st.KEDA_NOT_INSTALLED) else "Normal", reason, message))
    return out


async def reconcile(ctx: Context, body: dict[str, Any]) -> Result:
    """Validate → repository → compression → serving → status."""
    metadata = body.get("metadata") or {}
    previous: dict[str, Any] = dict(body.get("status") or {})
    generation = metadata.get("generation")
    namespace, name = metadata.get("namespace", "default"), metadata["name"]
    events: list[Event] = []
    try:
        lms = parsed_spec(ctx, body)
        key = template_checked_version(lms, ctx.settings)
    except SpecError as exc:
        obs = st.Observation(generation=generation, desired_version=None,
                             spec_problems=[str(p) for p in exc.problems])
        written = await _write(ctx, namespace, name, previous, st.derive_status(obs, previous, now_rfc3339()))
        return Result(st.FAILED, f"invalid spec: {exc}".replace("\n", "; "), permanent=True,
                      events=[Event("Warning", st.INVALID_SPEC, str(exc).replace("\n", "; "))], body=written)

    owner = meta.owner_reference(schema.API_VERSION, schema.KIND, lms.name, metadata["uid"])
    obs = st.Observation(generation=generation, desired_version=key, previous_version=previous.get("modelVersion"),
                         endpoint=endpoints(lms), serving_config=serving_config_status(lms, ctx.settings))
    obs.autoscaling, obs.scales_to_zero = autoscaling_status(lms, ctx.settings)
    events += _notes_to_events(autoscaling_notes(previous, obs.autoscaling))
    claim = lms.spec.repository.pvc
    # An s3:// repository is not probed here: the Job and Triton use it with their own Secret's keys.
    obs.repository = object_store_condition(lms) if claim is None else ctx.claims.fresh(namespace, claim, time.monotonic())
    if obs.repository is None and claim is not None:
        pvc = await ctx.kube.get("v1", "PersistentVolumeClaim", namespace, claim)
        obs.repository = claim_condition(claim, pvc)
        ctx.claims.record(namespace, claim, obs.repository, time.monotonic())
    if obs.repository.status is False:
        obs.serving = await read_serving(ctx, lms)
        new = st.derive_status(obs, previous, now_rfc3339())
        written = await _write(ctx, namespace, name, previous, new)
        return Result(new["phase"], obs.repository.message, requeue_after=RETRY_CLAIM,
                      events=[Event("Warning", obs.repository.reason, obs.repository.message)], body=written)

    recorded = (previous.get("compression") or {}).get("version") == key
    outcome, notes = await ensure_compression(ctx, lms, key, owner, numbers_recorded=recorded)
    obs.compression = outcome
    events += _notes_to_events(notes)
    if outcome.state == "published":
        if outcome.reason != st.CACHE_HIT:
            fault_point("after_job_finished")
        obs.serving, notes = await ensure_serving(ctx, lms, key, owner)
        events += _notes_to_events(notes)
    else:
        obs.serving = await read_serving(ctx, lms)  # the previous version keeps serving, untouched

    new = st.derive_status(obs, previous, now_rfc3339())
    written = await _write(ctx, namespace, name, previous, new)

    if new["phase"] != previous.get("phase") and new["phase"] in PHASE_EVENTS:
        warn = new["phase"] in (st.FAILED, st.DEGRADED)
        events.append(Event("Warning" if warn else "Normal", f"Phase{new['phase']}", new.get("message", "")))
    result = Result(new["phase"], new.get("message", ""), events=events, body=written)
    result.requeue_after, result.permanent = requeue_policy(outcome.state, new["phase"], obs.serving is not None)
    return result


def requeue_policy(compression_state: str, phase: str, deployment_exists: bool) -> tuple[float | None, bool]:
    """(requeue_after, permanent) after a pass.

    A running Job is polled (its result is read from the Job's pods); a Deployment that exists
    reports its rollout through the Deployment watch, which reconciles again, so a timed retry
    would only repeat the same reads.
    """
    if compression_state == "running":
        return RETRY_COMPRESSING, False
    if compression_state == "failed":
        return None, True
    if phase != st.READY_PHASE and not deployment_exists:
        return RETRY_DEPLOYING, False
    return None, False


async def _write(ctx: Context, namespace: str, name: str, previous: dict[str, Any],
                 new: dict[str, Any]) -> dict[str, Any] | None:
    """Patch only what changed; an unchanged status makes no API write (and no watch event)."""
    patch = st.status_patch(previous, new)
    if patch:
        fault_point("before_status_write")
        return await ctx.kube.patch_status(schema.API_VERSION, schema.KIND, namespace, name, patch)
    return None
