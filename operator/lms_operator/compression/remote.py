"""Where the Job publishes: a claim folder or an s3:// repository; then retention.

For an s3:// repository the pipeline publishes into a local scratch folder exactly as on a
claim, and the finished version is uploaded with its manifest last (storage.repository).
A version whose manifest is there and whose files match it is a cache hit: no compression. A new
version whose compressed artifact the bucket already holds under another serving config (Triton
reads its config.pbtxt from the bucket, so that is a version of its own) is copied from it with
its configs built anew: no compression either.
Retention runs after every publish or cache hit, keeping `spec.repository.keepVersions`
versions plus the ones the operator says are serving or rolling out.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from lms_operator.api.contract import CompressionSummary
from lms_operator.api.spec import LargeModelService
from lms_operator.api.version import artifact_key
from lms_operator.compression.errors import InputError
from lms_operator.compression.pipeline import check_requested_key, compress
from lms_operator.compression.source import storage_failure
from lms_operator.modelrepo.assemble import job_templates, rewrite_configs, template_digests
from lms_operator.modelrepo.layout import REPORT_FILE, version_dir
from lms_operator.modelrepo.templates import Template
from lms_operator.storage import s3
from lms_operator.storage.errors import DigestMismatch, StorageError
from lms_operator.storage.repository import (apply_retention, counted_version, publish, published_versions,
                                             resource_location, verify_digests, version_location)
from lms_operator.storage.retention import choose_deletions, delete_local, local_versions
from lms_operator.storage.uri import S3Location, UriError, parse_repository


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


def reuse_artifact(cli: Any, repo: S3Location, lms: LargeModelService, key: str, templates: Mapping[str, Template],
                   scratch: Path) -> CompressionSummary | None:
    """Version `key` from a version in the bucket with the same compressed artifact (only the serving
    config differs): its files copied into `scratch`, every config.pbtxt built anew, nothing
    retrained or re-quantized. None when the bucket holds no such version that verifies."""
    artifact = artifact_key(lms)
    resource = resource_location(repo, lms.namespace, lms.name)
    for other, _ in sorted(published_versions(cli, resource).items(), key=lambda item: item[1], reverse=True):
        loc = resource.child(other)
        manifest, _why = counted_version(cli, loc, other)
        if other == key or manifest is None or manifest.summary.get("artifact") != artifact:
            continue
        try:
            verify_digests(cli, loc, manifest)
        except DigestMismatch as exc:
            log(f"not reusing version {other}: {exc}")
            continue
        folder = version_dir(scratch, lms.namespace, lms.name, key)
        for entry in manifest.files:
            if entry.path.endswith("/"):
                (folder / entry.path).mkdir(parents=True, exist_ok=True)
            else:
                s3.download(cli, loc.bucket, loc.child(entry.path).key, folder / entry.path)
        rewrite_configs(folder, lms, templates)
        report = json.loads((folder / REPORT_FILE).read_text())
        report.update(version=key, serving={"templates": template_digests(templates),
                                            "template": lms.spec.serving.template_name, "artifact_from": other})
        (folder / REPORT_FILE).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        log(f"version {key}: the compressed model of version {other} with new serving configs (nothing recompressed)")
        return replace(CompressionSummary.from_dict(manifest.summary), version=key, cache_hit=False)
    return None


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
            summary = (reuse_artifact(cli, repo, lms, key, templates, scratch)
                       or compress(lms, scratch, spec_dir, model_dir, requested_key, templates))
            publish(cli, version_dir(scratch, lms.namespace, lms.name, key), loc, key, summary.to_dict())
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    apply_retention(cli, resource_location(repo, lms.namespace, lms.name), lms.spec.repository.keep_versions,
                    protect | {key})
    return summary
