"""What every reconcile step shares: the API client and the operator's configuration."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lms_operator.k8s.client import Kube
from lms_operator.resources.settings import BuildSettings


@dataclass(frozen=True)
class Context:
    kube: Kube
    settings: BuildSettings
    repository_root: Path | None = None
    """Where the operator can read repository claims: ROOT/<namespace>/<claim>/ (optional)."""
