"""KEDA installed or removed while the operator runs: discovery is asked again, the build settings
switch, and every known resource is reconciled with the new ones (no restart)."""
from __future__ import annotations

import asyncio
from typing import Any

from lms_operator.reconcile.context import Context
from lms_operator.reconcile.run import Result
from lms_operator.resources.autoscaling import KEDA_API
from lms_operator.resources.settings import BuildSettings
from lms_operator.runtime.controller import Controller

from .conftest import until, watched_controller


class Discovery:
    """Answers api_exists like the API server's discovery; `served` flips when KEDA comes or goes."""

    def __init__(self, served: bool) -> None:
        self.served = served
        self.asked: list[str] = []
        self.fail = False

    async def api_exists(self, group_version: str) -> bool:
        self.asked.append(group_version)
        if self.fail:
            raise ConnectionError("API server unreachable")
        return self.served


def controller(discovery: Discovery, seen: list[tuple[str, bool]], **kwargs: Any) -> Controller:
    async def reconcile(ctx: Context, body: dict[str, Any]) -> Result:
        seen.append((body["metadata"]["name"], ctx.settings.keda))
        return Result("Ready", "serving")

    return watched_controller(reconcile, ("a", "b"), kube=discovery, settings=BuildSettings(keda=discovery.served),
                              **kwargs)


def test_keda_arriving_switches_settings_and_reconciles_every_resource() -> None:
    discovery, seen = Discovery(served=False), []

    async def scenario() -> None:
        made = controller(discovery, seen)
        assert await made.check_keda() is False and seen == []  # unchanged: nothing to do
        discovery.served = True
        cached = made.ctx.applied
        assert await made.check_keda() is True
        assert made.ctx.settings.keda is True and made.ctx.applied is cached  # same caches, new settings
        await until(lambda: len(seen) == 2)
        assert sorted(seen) == [("a", True), ("b", True)]
        discovery.served = False  # KEDA removed
        assert await made.check_keda() is True
        await until(lambda: len(seen) == 4)
        assert sorted(seen[2:]) == [("a", False), ("b", False)]

    asyncio.run(scenario())
    assert set(discovery.asked) == {KEDA_API}


def test_a_failed_discovery_keeps_the_settings() -> None:
    discovery, seen = Discovery(served=True), []

    async def scenario() -> None:
        made = controller(discovery, seen)
        discovery.fail = True
        assert await made.check_keda() is False
        assert made.ctx.settings.keda is True and seen == []

    asyncio.run(scenario())


def test_the_timer_notices_keda_without_a_resync() -> None:
    discovery, seen = Discovery(served=False), []

    async def scenario() -> None:
        made = controller(discovery, seen, keda_check_seconds=0.05, resync_seconds=3600)
        made.start()
        try:
            await until(lambda: len(discovery.asked) >= 2)  # the resync's first sweep, then the timer
            discovery.served = True
            await until(lambda: sorted(seen) == [("a", True), ("b", True)])
        finally:
            made.stop()
        assert made.keda_watcher is None and made.resyncer is None

    asyncio.run(scenario())
