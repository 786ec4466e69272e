"""Where the Job publishes: a claim folder or an s3:// repository; then retention.

For an s3:// repository the pipeline publishes into a local scratch folder exactly as on a
claim, and the finished version is uploaded with its manifest last (storage.repository).
A version whose manifest is there and whose files match it is a cache hit: no compression.
Retention runs after every publish or cache hit, keeping `spec.repository.keepVersions`
versions plus the ones the operator says are serving or rolling out.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

from lms_operator.api.contract import CompressionSummary
from lms_operator.api.spec import LargeModelService
from lms_operator.compression.errors import InputError
from lms_operator.compression.pipeline import check_requested_key, compress
from lms_operator.compression.source import storage_failure
from lms_operator.modelrepo.assemble import job_templates
from lms_operator.modelrepo.layout import version_dir
from lms_operator.modelrepo.templates import Template
from lms_operator.storage import s3
from lms_operator.storage.errors import DigestMismatch, StorageError
from lms_operator.storage.repository import (apply_retention, counted_version, publish, resource_location,
                                             verify_digests, version_location)
from lms_operator.storage.retention import choose_deletions, delete_local, local_versions
from lms_operator.storage.uri import UriError, parse_repository


def log(msg: str) -> None:
    print(f"lms compress: {msg}", file=sys.stderr, flush=True)


def compress_to(lms: LargeModelService, out: str, spec_dir: Path | None, model_dir: Path | None,
                requested_key: str | None = None, protect: Iterable[str] = (),
                templates: Mapping[str, Template] | None = None) -> CompressionSummary:
    """Compress and publish into `out` (a folder or s3://bucket/prefix), then apply retention.
    `templates`: the serving templates the operator resolved (default: the package's)."""
    templates = job_templates(lms, templates)
    if out.startswith("s3://"):
        try:
            return _compress_to_s3(lms, out, spec_dir, model_dir, requested_key, set(protect), templates)
        except StorageError as exc:
            raise storage_failure(exc) from None
    root = Path(out)
    summary = compress(lms, root, spec_dir, model_dir, requested_key, templates)
    folder = root / lms.namespace / lms.name
    keep = {*protect, summary.version or ""}
    for key in choose_deletions(local_versions(folder), lms.spec.repository.keep_versions, keep):
        delete_local(folder / key)
        log(f"retention: deleted version {key} from {folder}")
    return summary


def _compress_to_s3(lms: LargeModelService, uri: str, spec_dir: Path | None, model_dir: Path | None,
                    requested_key: str | None, protect: set[str], templates: Mapping[str, Template]) -> CompressionSummary:
    try:
        repo = parse_repository(uri, "--out")
    except UriError as exc:
        raise InputError(str(exc)) from None
    key = check_requested_key(lms, requested_key, templates)
    cli = s3.client()
    loc = version_location(repo, lms.namespace, lms.name, key)
    manifest, why = counted_version(cli, loc, key)
    summary: CompressionSummary | None = None
    if manifest is not None:
        try:
            verify_digests(cli, loc, manifest)
            summary = replace(CompressionSummary.from_dict(manifest.summary), version=key, cache_hit=True)
            log(f"version {key} already published at {loc.uri}: cache hit")
        except DigestMismatch as exc:  # altered in the bucket: never served as is, rebuilt
            log(f"{exc}: rebuilding version {key}")
    elif why != "no manifest":
        log(f"{loc.uri} is not a version ({why}): rebuilding it")
    if summary is None:
        scratch = Path(tempfile.mkdtemp(prefix="lms-publish-"))
        try:
            summary = compress(lms, scratch, spec_dir, model_dir, requested_key, templates)
            publish(cli, version_dir(scratch, lms.namespace, lms.name, key), loc, key, summary.to_dict())
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    apply_retention(cli, resource_location(repo, lms.namespace, lms.name), lms.spec.repository.keep_versions,
                    protect | {key})
    return summary
