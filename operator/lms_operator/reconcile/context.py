"""What every reconcile step shares: the API client, the operator's configuration, its caches."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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
