"""Ensure the desired version is published and intact: a cache hit, or a Job with a deterministic name.

Nothing in the resource's own status counts as proof that a version exists: when the operator
can read the repository (--repository-root), every pass checks the version there against its
recorded digest, and a missing or altered version is rebuilt by a fresh Job.
"""
from __future__ import annotations

import asyncio
from typing import Any

from lms_operator.api import status as st
from lms_operator.api.spec import LargeModelService
from lms_operator.reconcile.context import Context
from lms_operator.reconcile.faults import fault_point
from lms_operator.reconcile.objectstore import protected_versions
from lms_operator.reconcile.repository import read_report, version_folder
from lms_operator.resources import meta
from lms_operator.resources.job import build_compression_job


async def ensure_compression(ctx: Context, lms: LargeModelService, key: str, owner: dict[str, Any],
                             numbers_recorded: bool = False) -> tuple[st.CompressionOutcome, list[str]]:
    """(outcome, event notes). Creates the Job only when the repository does not hold the version.

    `numbers_recorded`: status already carries this version's compression numbers, so a succeeded
    Job's pods need not be listed again for its summary (the Job itself is the evidence)."""
    name = meta.job_name(lms, key)
    folder = version_folder(ctx.repository_root, lms, key)
    # Hashing a model is file I/O: off the event loop (a changed file is hashed once, then remembered).
    problem = await asyncio.to_thread(ctx.verified.check, folder, lms.name) if folder is not None else None
    known, where = folder is not None, f"claim {lms.spec.repository.pvc}"
    report = read_report(folder) if folder is not None and problem is None else None
    if lms.spec.repository.uri:  # its manifest, read with the operator's own keys (when it has any)
        check = await ctx.objects.check(lms, key)
        known, problem, report, where = check.known, check.problem, check.summary, check.where
    # The Job as its watch delivered it comes first; an intact version costs no API read at all.
    job = ctx.watched["Job"].get(f"{lms.namespace}/{name}")
    if known and problem is None:
        if job is not None and not _succeeded(job):
            return await _job_outcome(ctx, lms, name, job), []
        reason, notes = st.PUBLISHED, []
        if job is None:
            reason, notes = st.CACHE_HIT, [f"CacheHit: version {key} found complete in {where}"]
        return st.CompressionOutcome("published", reason, f"version {key} is in the repository", report), notes
    if job is None:
        job = await ctx.kube.get("batch/v1", "Job", lms.namespace, name)
    rebuilding = job is not None and known and _succeeded(job)
    if job is not None and not rebuilding:
        if numbers_recorded and _succeeded(job):
            return st.CompressionOutcome("published", st.PUBLISHED, "compression Job succeeded"), []
        return await _job_outcome(ctx, lms, name, job), []
    notes = []
    if rebuilding:  # this version's Job published it and the repository lost it since
        assert job is not None
        await ctx.kube.delete("batch/v1", "Job", lms.namespace, name, job["metadata"]["uid"])
        ctx.watched["Job"].drop(f"{lms.namespace}/{name}", None)
        notes.append(f"Rebuilding: version {key}: {problem}")
    fault_point("before_job_create")
    job, created = await ctx.kube.create(build_compression_job(lms, key, ctx.settings, owner,
                                                               protect=protected_versions(ctx, lms)))
    fault_point("after_job_create")
    if created:
        notes.append(f"JobCreated: compression Job {name} for version {key}")
    if rebuilding:  # the new Job (or the old one, still being deleted) is looked at on the next pass
        return st.CompressionOutcome("running", st.REBUILDING, f"rebuilding version {key}: {problem}"), notes
    return await _job_outcome(ctx, lms, name, job), notes


def _succeeded(job: dict[str, Any]) -> bool:
    return any(c.get("type") in ("Complete", "SuccessCriteriaMet") and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


async def _job_outcome(ctx: Context, lms: LargeModelService, name: str, job: dict[str, Any]) -> st.CompressionOutcome:
    """The Job's state, with the summary its pod left as termination message."""
    pods = await ctx.kube.list("v1", "Pod", lms.namespace, f"job-name={name}")
    outcome = st.job_outcome(job, pods)
    if outcome.state != "running":
        fault_point("after_job_finished")
    return outcome
