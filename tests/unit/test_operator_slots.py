"""Waiting reconcile passes start by priority (finished rollouts first), then in arrival order; child events."""
from __future__ import annotations

import asyncio
from typing import Any

from lms_operator.handlers.driver import PRIORITY, PrioritySlots
from lms_operator.reconcile.context import Context
from lms_operator.resources.settings import BuildSettings


async def _admission_order(arrivals: list[tuple[str, int]], limit: int = 1) -> list[str]:
    slots = PrioritySlots(limit)
    order: list[str] = []
    gate = asyncio.Event()

    async def holder() -> None:
        async with slots.slot(0):
            await gate.wait()

    async def waiter(name: str, priority: int) -> None:
        async with slots.slot(priority):
            order.append(name)
            await asyncio.sleep(0)

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)
    tasks = []
    for name, priority in arrivals:
        tasks.append(asyncio.create_task(waiter(name, priority)))
        await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(first, *tasks)
    return order


def test_children_overtake_specs_which_overtake_the_sweep() -> None:
    arrivals = [("sweep", PRIORITY["timer"]), ("new-a", PRIORITY["spec"]), ("rollout-a", PRIORITY["child"]),
                ("new-b", PRIORITY["spec"]), ("rollout-b", PRIORITY["child"])]
    assert asyncio.run(_admission_order(arrivals)) == ["rollout-a", "rollout-b", "new-a", "new-b", "sweep"]


def test_a_cancelled_waiter_does_not_lose_the_slot() -> None:
    async def scenario() -> list[str]:
        slots = PrioritySlots(1)
        order: list[str] = []
        gate = asyncio.Event()

        async def holder() -> None:
            async with slots.slot(0):
                await gate.wait()

        async def waiter(name: str) -> None:
            async with slots.slot(1):
                order.append(name)

        first = asyncio.create_task(holder())
        await asyncio.sleep(0)
        doomed, survivor = asyncio.create_task(waiter("doomed")), asyncio.create_task(waiter("survivor"))
        await asyncio.sleep(0)
        doomed.cancel()
        gate.set()
        await asyncio.gather(first, survivor)
        await asyncio.gather(doomed, return_exceptions=True)
        async with slots.slot(2):  # every slot came back
            order.append("after")
        assert slots.free == 1
        return order

    assert asyncio.run(scenario()) == ["survivor", "after"]


def test_no_wait_below_the_limit() -> None:
    async def scenario() -> int:
        slots = PrioritySlots(2)
        async with slots.slot(2), slots.slot(1):
            return slots.free

    assert asyncio.run(scenario()) == 0


def test_a_child_event_reconciles_only_an_owner_the_resource_watch_delivered(monkeypatch: Any) -> None:
    from lms_operator.handlers import driver

    calls: list[tuple[str, str, str]] = []

    async def fake_reconcile(namespace: str, name: str, trigger: str) -> None:
        calls.append((namespace, name, trigger))

    runtime = driver.Runtime(ctx=Context(kube=None, settings=BuildSettings()))  # type: ignore[arg-type]
    monkeypatch.setattr(driver, "RUNTIME", runtime)
    monkeypatch.setattr(driver, "reconcile_quietly", fake_reconcile)
    deployment = {"metadata": {"name": "m-triton", "namespace": "ns", "resourceVersion": "3",
                               "ownerReferences": [{"apiVersion": "serving.lms.dev/v1alpha1", "kind": "LargeModelService",
                                                    "name": "m"}]}}
    asyncio.run(driver.child_changed("Deployment", {"type": None, "object": deployment}, "ns", "m-triton"))
    assert calls == [] and runtime.ctx.watched["Deployment"].get("ns/m-triton") is not None
    runtime.known.add(("ns", "m"))
    asyncio.run(driver.child_changed("Deployment", {"type": "MODIFIED", "object": deployment}, "ns", "m-triton"))
    assert calls == [("ns", "m", "child")]


def test_error_backoff_grows_and_is_capped() -> None:
    from lms_operator.handlers.driver import error_backoff

    assert [error_backoff(n) for n in range(7)] == [0.0, 1.0, 2.0, 5.0, 10.0, 30.0, 30.0]


def _runtime_with(monkeypatch: Any, reconcile: Any) -> Any:
    from lms_operator.handlers import driver

    runtime = driver.Runtime(ctx=Context(kube=None, settings=BuildSettings()))  # type: ignore[arg-type]
    runtime.ctx.watched["LargeModelService"].offer("ns/m", {"metadata": {"name": "m", "namespace": "ns", "resourceVersion": "1"}})  # type: ignore[union-attr]
    runtime.known.add(("ns", "m"))
    monkeypatch.setattr(driver, "RUNTIME", runtime)
    monkeypatch.setattr(driver, "reconcile", reconcile)
    return runtime


async def _until(done: Any, timeout: float = 10.0) -> None:
    """Wait (a busy machine may delay timers) until done() holds; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not done():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def _failing_once(starts: list[float]) -> Any:
    """A reconcile that fails with an API error the first time, then succeeds; start times in `starts`."""
    from lms_operator.reconcile.run import Result

    async def reconcile(ctx: Any, body: dict[str, Any]) -> Result:
        starts.append(asyncio.get_running_loop().time())
        if len(starts) == 1:
            raise RuntimeError("500 from the API server")
        return Result("Ready", "serving")

    return reconcile


def test_a_failed_pass_holds_the_next_one_back_whatever_its_trigger(monkeypatch: Any) -> None:
    from lms_operator.handlers import driver

    starts: list[float] = []
    runtime = _runtime_with(monkeypatch, _failing_once(starts))

    async def scenario() -> None:
        try:
            await driver.reconcile_named("ns", "m", "spec")
        except RuntimeError:
            pass
        await driver.reconcile_named("ns", "m", "child")  # another trigger, at once

    asyncio.run(scenario())
    assert len(starts) == 2 and starts[1] - starts[0] >= 0.95
    assert "ns/m" not in runtime.failures  # a pass that succeeds clears the back-off


def test_a_pass_plans_the_next_look_its_result_asks_for(monkeypatch: Any) -> None:
    from lms_operator.handlers import driver
    from lms_operator.reconcile.run import Result

    results = [Result("Compressing", "Job running", requeue_after=0.2), Result("Ready", "serving")]
    starts: list[float] = []

    async def reconcile(ctx: Any, body: dict[str, Any]) -> Result:
        starts.append(asyncio.get_running_loop().time())
        return results[len(starts) - 1]

    runtime = _runtime_with(monkeypatch, reconcile)

    async def scenario() -> None:
        await driver.reconcile_quietly("ns", "m", "spec")
        assert "ns/m" in runtime.retries
        await _until(lambda: len(starts) == 2 and not runtime.tasks)

    asyncio.run(scenario())
    assert len(starts) == 2 and starts[1] - starts[0] >= 0.15
    assert runtime.retries == {}  # Ready: nothing planned, the Deployment's watch reports changes


def test_a_failed_pass_is_retried_after_the_back_off_without_another_trigger(monkeypatch: Any) -> None:
    from lms_operator.handlers import driver

    starts: list[float] = []
    runtime = _runtime_with(monkeypatch, _failing_once(starts))

    async def scenario() -> None:
        await driver.reconcile_quietly("ns", "m", "spec")
        await _until(lambda: len(starts) == 2 and not runtime.tasks)

    asyncio.run(scenario())
    assert len(starts) == 2 and starts[1] - starts[0] >= 0.95
    assert runtime.failures == {} and runtime.retries == {}


def test_a_spec_is_unhandled_until_the_status_observes_its_generation() -> None:
    from lms_operator.handlers.driver import spec_unhandled

    assert spec_unhandled({"metadata": {"generation": 1}})
    assert spec_unhandled({"metadata": {"generation": 2}, "status": {"observedGeneration": 1}})
    assert not spec_unhandled({"metadata": {"generation": 2}, "status": {"observedGeneration": 2}})
