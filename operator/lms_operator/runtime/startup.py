"""Start-up: the API client, the build settings and the Controller, from the configuration."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from lms_operator.reconcile.context import Context
from lms_operator.resources.autoscaling import KEDA_API
from lms_operator.runtime.config import OperatorConfig
from lms_operator.runtime.controller import MAX_CONCURRENT_PASSES, Controller


async def make_context(config: OperatorConfig) -> Context:
    """The API client and build settings; KEDA is used when the API server serves keda.sh (the
    Controller asks again while it runs: Controller.check_keda)."""
    from lms_operator.k8s.client import Kube

    kube = await asyncio.to_thread(Kube)
    keda = await kube.api_exists(KEDA_API)
    return Context(kube=kube, settings=config.build_settings(keda=keda), repository_root=config.repository_root)


async def start_controller(config: OperatorConfig) -> Controller:
    """The operator's Controller (its resync starts with the first watch event)."""
    # The API client is synchronous: every request holds a default-executor thread, and Python's
    # default pool is min(32, cpus + 4) threads (6 on 2 cores), too few for the concurrent passes.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=2 * MAX_CONCURRENT_PASSES, thread_name_prefix="kube"))
    return Controller(await make_context(config), resync_seconds=config.resync_seconds,
                      keda_check_seconds=config.keda_check_seconds)
