"""Ensure the desired version is compressed: cache hit, or a Job with a deterministic name."""
from __future__ import annotations

from typing import Any

from lms_operator.api import status as st
from lms_operator.api.spec import LargeModelService
from lms_operator.reconcile.context import Context
from lms_operator.reconcile.faults import fault_point
from lms_operator.reconcile.repository import published_version, read_report
from lms_operator.resources import meta
from lms_operator.resources.job import build_compression_job


def recorded_as_published(previous_status: dict[str, Any], key: str) -> bool:
    """Status already says this key was published and passed its gate (no Job needed)."""
    comp = previous_status.get("compression") or {}
    return comp.get("version") == key and comp.get("passed") is True


async def ensure_compression(ctx: Context, lms: LargeModelService, key: str, owner: dict[str, Any],
                             previous_status: dict[str, Any]) -> tuple[st.CompressionOutcome, list[str]]:
    """(outcome, event notes). Creates the Job only when nothing says the version already exists."""
    if recorded_as_published(previous_status, key):
        return st.CompressionOutcome("published", st.PUBLISHED, f"version {key} published"), []
    name = meta.job_name(lms, key)
    # The Job as its watch delivered it comes first; then the repository, so a version published
    # before this pass costs no request; then the API, for a Job the watch has not delivered yet.
    job = ctx.watched["Job"].get(f"{lms.namespace}/{name}")
    if job is None:
        hit = _cache_hit(ctx, lms, key)
        if hit is not None:
            return hit
        job = await ctx.kube.get("batch/v1", "Job", lms.namespace, name)
    if job is not None:  # the Job's own result carries the summary (and a gate failure's numbers)
        pods = await ctx.kube.list("v1", "Pod", lms.namespace, f"job-name={name}")
        outcome = st.job_outcome(job, pods)
        if outcome.state != "running":
            fault_point("after_job_finished")
        return outcome, []
    fault_point("before_job_create")
    job, created = await ctx.kube.create(build_compression_job(lms, key, ctx.settings, owner))
    fault_point("after_job_create")
    notes = [f"JobCreated: compression Job {name} for version {key}"] if created else []
    pods = await ctx.kube.list("v1", "Pod", lms.namespace, f"job-name={name}")
    return st.job_outcome(job, pods), notes


def _cache_hit(ctx: Context, lms: LargeModelService, key: str) -> tuple[st.CompressionOutcome, list[str]] | None:
    claim = lms.spec.repository.pvc or ""
    folder = published_version(ctx.repository_root, lms.namespace, claim, lms.name, key)
    if folder is None:
        return None
    return (st.CompressionOutcome("published", st.CACHE_HIT, f"version {key} already in the repository", read_report(folder)),
            [f"CacheHit: version {key} found complete in claim {claim}"])
