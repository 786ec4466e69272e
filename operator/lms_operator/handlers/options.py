"""Operator options from the command line, read by the start-up handler."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from lms_operator.reconcile.context import Context

KEDA_API = "keda.sh/v1alpha1"


@dataclass
class Options:
    clusterwide: bool = False
    namespaces: tuple[str, ...] = ()
    standalone: bool = False
    repository_root: Path | None = None
    resync_seconds: float = 60.0
    metrics_port: int = 8080
    liveness_port: int = 8081

    async def make_context(self) -> Context:
        """The API client and build settings; KEDA is used when the API server serves keda.sh."""
        from dataclasses import replace

        from lms_operator.k8s.client import Kube
        from lms_operator.resources.settings import BuildSettings

        kube = await asyncio.to_thread(Kube)
        settings = BuildSettings.from_env()
        if await kube.api_exists(KEDA_API):
            settings = replace(settings, keda=True)
        return Context(kube=kube, settings=settings, repository_root=self.repository_root)


OPTIONS = Options()
