"""What every reconcile step shares: the API client, the operator's configuration, its caches."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lms_operator.k8s.bodies import BodyCache
from lms_operator.k8s.client import Kube
from lms_operator.reconcile.applied import AppliedCache
from lms_operator.reconcile.claims import ClaimCache
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
    watched: dict[str, BodyCache] = field(default_factory=lambda: {"Deployment": BodyCache(), "Job": BodyCache()})
    """Children as their watches last delivered them, by kind; fed by the handlers only."""


async def read_child(ctx: Context, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """A child as its watch last delivered it; what the watch has not delivered is read from the API."""
    cache = ctx.watched.get(kind)
    cached = cache.get(f"{namespace}/{name}") if cache is not None else None
    return cached if cached is not None else await ctx.kube.get(api_version, kind, namespace, name)
