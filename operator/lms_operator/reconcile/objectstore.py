"""Cache hits for s3:// repositories: the version's manifest and listing, read with the operator's
own credentials.

The operator reads no Secret. It can read a bucket only when its own Deployment was given keys
(the chart's s3.operatorSecret, by reference, as AWS_* variables). Without them, or when the
bucket refuses them, nothing is known here and the Job decides: it finds a published version by
the same manifest and exits at once. A version found counted is trusted for VERIFIED_TTL seconds,
so the sweep does not read the bucket on every pass.
"""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any

from lms_operator.api import schema
from lms_operator.api import status as st
from lms_operator.api.contract import CompressionSummary
from lms_operator.api.spec import LargeModelService
from lms_operator.resources import meta
from lms_operator.storage import s3
from lms_operator.storage.errors import StorageError
from lms_operator.storage.repository import counted_version, version_location
from lms_operator.storage.uri import parse_repository

VERIFIED_TTL = 300.0
OBJECT_STORE = "ObjectStore"
"""RepositoryReady reason for an s3:// repository (the operator does not probe the bucket for it)."""


@dataclass(frozen=True)
class VersionCheck:
    """What the operator could tell about a version in the bucket."""

    known: bool
    """False: the bucket could not be read (no credentials, refused, unreachable); the Job decides."""
    problem: str | None = None
    """Why the version does not count (None: it counts)."""
    summary: CompressionSummary | None = None
    where: str = ""


@dataclass
class ObjectStoreReader:
    """The operator's S3 client (from its own environment) and the versions it found counted."""

    environ: dict[str, str] | None = None
    ttl: float = VERIFIED_TTL
    counted: dict[str, tuple[float, CompressionSummary | None]] = field(default_factory=dict)
    _client: Any = None

    def client(self) -> Any | None:
        env = os.environ if self.environ is None else self.environ
        if not env.get("AWS_ACCESS_KEY_ID"):
            return None
        if self._client is None:
            self._client = s3.client(environ=dict(env))
        return self._client

    async def check(self, lms: LargeModelService, key: str) -> VersionCheck:
        """Does `key` count in the resource's s3:// repository? Runs the reads off the event loop."""
        loc = version_location(parse_repository(lms.spec.repository.uri or ""), lms.namespace, lms.name, key)
        now = time.monotonic()
        found = self.counted.get(loc.uri)
        if found is not None and now - found[0] <= self.ttl:
            return VersionCheck(True, None, found[1], loc.uri)
        cli = self.client()
        if cli is None:
            return VersionCheck(False, where=loc.uri)
        try:
            manifest, why = await asyncio.to_thread(counted_version, cli, loc, key)
        except StorageError as exc:
            return VersionCheck(False, str(exc), where=loc.uri)
        if manifest is None:
            self.counted.pop(loc.uri, None)
            return VersionCheck(True, f"{loc.uri}: {why}", where=loc.uri)
        summary = CompressionSummary.from_dict(manifest.summary) if manifest.summary else None
        self.counted[loc.uri] = (now, summary)
        return VersionCheck(True, None, summary, loc.uri)

    def forget(self, lms: LargeModelService, key: str) -> None:
        loc = version_location(parse_repository(lms.spec.repository.uri or ""), lms.namespace, lms.name, key)
        self.counted.pop(loc.uri, None)


def object_store_condition(lms: LargeModelService) -> st.Condition:
    """RepositoryReady for an s3:// repository: access is checked where it is used (Job, Triton)."""
    return st.Condition(st.REPOSITORY_READY, True, OBJECT_STORE,
                        f"versions are published to {lms.spec.repository.uri}")


def protected_versions(ctx: Any, lms: LargeModelService) -> tuple[str, ...]:
    """Versions the Job's retention must keep: the one serving (status.modelVersion) and the one the
    Deployment's template runs (rolling out), as the watches last delivered them.

    `ctx` is the reconcile Context (not imported: the Context holds this module's reader)."""
    found: list[str] = []
    body = ctx.watched[schema.KIND].get(f"{lms.namespace}/{lms.name}")
    if body is not None and (serving := (body.get("status") or {}).get("modelVersion")):
        found.append(str(serving))
    deployment = ctx.watched["Deployment"].get(f"{lms.namespace}/{meta.server_name(lms)}")
    if deployment is not None:
        labels = (((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
        if version := labels.get(meta.VERSION_LABEL):
            found.append(str(version))
    return tuple(sorted(set(found)))
