"""Versions in an S3 repository: publish with the manifest last, find counted versions, retention.

Layout under the repository prefix, the same as on a claim: <namespace>/<name>/<key>/ is a
Triton model repository, with manifest.json next to the model folder. Files are uploaded
first and the manifest last; a prefix without a matching manifest is not a version, so a
Job killed mid-upload leaves nothing the operator points Triton at.
"""
from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lms_operator.storage import s3
from lms_operator.storage.errors import DigestMismatch, StorageUnavailable
from lms_operator.storage.manifest import (MANIFEST_FILE, Manifest, ManifestError, build_manifest, digest_problems,
                                           listing_problems, parse_manifest)
from lms_operator.storage.retention import choose_deletions
from lms_operator.storage.uri import S3Location


def log(msg: str) -> None:
    print(f"lms storage: {msg}", file=sys.stderr, flush=True)


def resource_location(repo: S3Location, namespace: str, name: str) -> S3Location:
    return repo.child(namespace, name)


def version_location(repo: S3Location, namespace: str, name: str, key: str) -> S3Location:
    return repo.child(namespace, name, key)


def sizes_below(objects: Iterable[s3.ObjectInfo], loc: S3Location) -> dict[str, int]:
    """{path relative to the prefix: size} for a listing."""
    prefix = loc.prefix
    return {o.key[len(prefix):]: o.size for o in objects if o.key.startswith(prefix)}


def counted_version(cli: Any, loc: S3Location, key: str) -> tuple[Manifest | None, str]:
    """(manifest, "") when the version at `loc` counts by its manifest and listing, else (None, why)."""
    data = s3.get_bytes(cli, loc.bucket, loc.child(MANIFEST_FILE).key, missing_ok=True)
    if data is None:
        return None, "no manifest"
    try:
        manifest = parse_manifest(data, key)
    except ManifestError as exc:
        return None, f"manifest: {exc}"
    problems = listing_problems(manifest, sizes_below(s3.list_objects(cli, loc), loc))
    if problems:
        return None, "; ".join(problems[:3])
    return manifest, ""


def verify_digests(cli: Any, loc: S3Location, manifest: Manifest) -> None:
    """Stream every listed object and compare its sha256 with the manifest; DigestMismatch otherwise."""
    digests = {f.path: s3.object_sha256(cli, loc.bucket, loc.child(f.path).key + ("/" if f.path.endswith("/") else ""))
               for f in manifest.files}
    problems = digest_problems(manifest, digests)
    if problems:
        raise DigestMismatch(f"{loc.uri}: " + "; ".join(problems[:3]))


def publish(cli: Any, folder: Path, loc: S3Location, key: str, summary: dict[str, Any]) -> Manifest:
    """Upload a local version folder to `loc`: clear what a killed attempt left, files, manifest last."""
    manifest = build_manifest(key, folder, summary)
    manifest_key = loc.child(MANIFEST_FILE).key
    leftovers = [o.key for o in s3.list_objects(cli, loc) if o.key.startswith(loc.prefix)]
    if leftovers:  # no counted version here (else this was a cache hit): manifest first, then the rest
        log(f"removing {len(leftovers)} objects of an unfinished version at {loc.uri}")
        s3.delete_keys(cli, loc.bucket, [manifest_key])
        s3.delete_keys(cli, loc.bucket, [k for k in leftovers if k != manifest_key])
    for entry in manifest.files:
        if entry.path.endswith("/"):  # an empty folder: a zero-byte folder marker
            s3.put_bytes(cli, loc.bucket, loc.child(entry.path).key + "/", b"", "application/x-directory")
        else:
            s3.upload(cli, folder / entry.path, loc.bucket, loc.child(entry.path).key)
    s3.put_bytes(cli, loc.bucket, manifest_key, manifest.to_bytes())
    found, why = counted_version(cli, loc, key)
    if found is None:
        raise StorageUnavailable(f"{loc.uri}: published version does not verify: {why}")
    log(f"published {len(manifest.files)} files and {MANIFEST_FILE} to {loc.uri}")
    return manifest


def published_versions(cli: Any, resource: S3Location) -> dict[str, float]:
    """{key: manifest time} of every version under <namespace>/<name>/ that has a manifest."""
    prefix = resource.prefix
    found: dict[str, float] = {}
    for obj in s3.list_objects(cli, resource):
        rest = obj.key[len(prefix):] if obj.key.startswith(prefix) else ""
        key, _, tail = rest.partition("/")
        if key and tail == MANIFEST_FILE:
            found[key] = obj.modified
    return found


def delete_version(cli: Any, loc: S3Location) -> None:
    """Manifest first, so a half-deleted version never counts; then every object below it."""
    s3.delete_keys(cli, loc.bucket, [loc.child(MANIFEST_FILE).key])
    s3.delete_keys(cli, loc.bucket, [o.key for o in s3.list_objects(cli, loc) if o.key.startswith(loc.prefix)])


def apply_retention(cli: Any, resource: S3Location, keep: int, protected: Iterable[str]) -> list[str]:
    """Delete all but the newest `keep` versions (protected ones stay); returns the deleted keys."""
    doomed = choose_deletions(published_versions(cli, resource), keep, protected)
    for key in doomed:
        delete_version(cli, resource.child(key))
        log(f"retention: deleted version {key} from {resource.uri}")
    return doomed
