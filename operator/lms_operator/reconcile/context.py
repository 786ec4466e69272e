"""What every reconcile step shares: the API client, the operator's configuration, its caches."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lms_operator.api import schema
from lms_operator.api.spec import LargeModelService
from lms_operator.k8s.bodies import BodyCache
from lms_operator.k8s.client import Kube
from lms_operator.modelrepo.integrity import VerifiedVersions
from lms_operator.reconcile.applied import AppliedCache
from lms_operator.reconcile.claims import ClaimCache
from lms_operator.reconcile.objectstore import ObjectStoreReader
from lms_operator.resources.settings import BuildSettings


@dataclass(frozen=True)
class Context:
    kube: Kube
    settings: BuildSettings
    repository_root: Path | None = None
    """Where the operator can read repository claims: ROOT/<namespace>/<claim>/ (optional)."""
    applied: AppliedCache = field(default_factory=AppliedCache)
    """The serving bodies last applied per resource (skips identical re-applies)."""
    claims: ClaimCache = field(default_factory=ClaimCache)
    """Bound repository claims seen recently (skips a GET per pass)."""
    verified: VerifiedVersions = field(default_factory=VerifiedVersions)
    """Published versions whose digest was checked, by the identity of their model file."""
    objects: ObjectStoreReader = field(default_factory=ObjectStoreReader)
    """Versions in s3:// repositories, read with the operator's own keys from its environment."""
    specs: dict[tuple[str, int], LargeModelService] = field(default_factory=dict)
    """Validated specs by (uid, generation), oldest first."""
    watched: dict[str, BodyCache] = field(
        default_factory=lambda: {kind: BodyCache() for kind in (schema.KIND, "Deployment", "Job")})
    """The resources and their children as their watches last delivered them, by kind; fed by the
    handlers (and a pass's own status patch), never by this package's reads."""


async def read_watched(ctx: Context, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """An object as its watch last delivered it; what the watch has not delivered is read from the API."""
    cached = ctx.watched[kind].get(f"{namespace}/{name}")
    return cached if cached is not None else await ctx.kube.get(api_version, kind, namespace, name)
