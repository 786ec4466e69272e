"""The Controller: passes start by priority (finished rollouts first), then in arrival order; child events,
backoff and requeues. Each test builds its own Controller (no process-wide state to patch)."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from lms_operator.reconcile.run import Result
from lms_operator.runtime.controller import PRIORITY, Controller, error_backoff, spec_unhandled
from lms_operator.runtime.slots import PrioritySlots
from lms_operator.reconcile.context import Context
from lms_operator.resources.settings import BuildSettings

from .conftest import until, watched_controller


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
    arrivals = [("resync", PRIORITY["resync"]), ("new-a", PRIORITY["spec"]), ("rollout-a", PRIORITY["child"]),
                ("new-b", PRIORITY["spec"]), ("rollout-b", PRIORITY["child"])]
    assert asyncio.run(_admission_order(arrivals)) == ["rollout-a", "rollout-b", "new-a", "new-b", "resync"]


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


def test_a_child_event_reconciles_only_an_owner_the_resource_watch_delivered() -> None:
    calls: list[tuple[str, str, str]] = []

    async def fake_enqueue(namespace: str, name: str, trigger: str) -> None:
        calls.append((namespace, name, trigger))

    controller = Controller(Context(kube=None, settings=BuildSettings()))  # type: ignore[arg-type]
    controller.enqueue = fake_enqueue  # type: ignore[method-assign]
    deployment = {"metadata": {"name": "m-triton", "namespace": "ns", "resourceVersion": "3",
                               "ownerReferences": [{"apiVersion": "serving.lms.dev/v1alpha1", "kind": "LargeModelService",
                                                    "name": "m"}]}}
    asyncio.run(controller.child_changed("Deployment", {"type": None, "object": deployment}, "ns", "m-triton"))
    assert calls == [] and controller.ctx.watched["Deployment"].get("ns/m-triton") is not None
    controller.known.add(("ns", "m"))
    asyncio.run(controller.child_changed("Deployment", {"type": "MODIFIED", "object": deployment}, "ns", "m-triton"))
    assert calls == [("ns", "m", "child")]


def test_error_backoff_grows_and_is_capped() -> None:
    assert [error_backoff(n) for n in range(7)] == [0.0, 1.0, 2.0, 5.0, 10.0, 30.0, 30.0]


def _failing_once(starts: list[float]) -> Any:
    """A reconcile that fails with an API error the first time, then succeeds; start times in `starts`."""
    async def reconcile(ctx: Any, body: dict[str, Any]) -> Result:
        starts.append(asyncio.get_running_loop().time())
        if len(starts) == 1:
            raise RuntimeError("500 from the API server")
        return Result("Ready", "serving")

    return reconcile


def test_a_failed_pass_holds_the_next_one_back_whatever_its_trigger() -> None:
    starts: list[float] = []
    controller = watched_controller(_failing_once(starts))

    async def scenario() -> None:
        try:
            await controller.reconcile("ns", "m", "spec")
        except RuntimeError:
            pass
        await controller.reconcile("ns", "m", "child")  # another trigger, at once

    asyncio.run(scenario())
    assert len(starts) == 2 and starts[1] - starts[0] >= 0.95
    assert "ns/m" not in controller.failures  # a pass that succeeds clears the backoff


def test_a_pass_plans_the_requeue_its_result_asks_for() -> None:
    results = [Result("Compressing", "Job running", requeue_after=0.2), Result("Ready", "serving")]
    starts: list[float] = []

    async def reconcile(ctx: Any, body: dict[str, Any]) -> Result:
        starts.append(asyncio.get_running_loop().time())
        return results[len(starts) - 1]

    controller = watched_controller(reconcile)

    async def scenario() -> None:
        await controller.enqueue("ns", "m", "spec")
        assert "ns/m" in controller.requeues
        await until(lambda: len(starts) == 2 and not controller.tasks)

    asyncio.run(scenario())
    assert len(starts) == 2 and starts[1] - starts[0] >= 0.15
    assert controller.requeues == {}  # Ready: nothing planned, the Deployment's watch reports changes


def test_a_failed_pass_is_requeued_after_the_backoff_without_another_trigger() -> None:
    starts: list[float] = []
    controller = watched_controller(_failing_once(starts))

    async def scenario() -> None:
        await controller.enqueue("ns", "m", "spec")
        await until(lambda: len(starts) == 2 and not controller.tasks)

    asyncio.run(scenario())
    assert len(starts) == 2 and starts[1] - starts[0] >= 0.95
    assert controller.failures == {} and controller.requeues == {}


def test_a_spec_is_unhandled_until_the_status_observes_its_generation() -> None:
    assert spec_unhandled({"metadata": {"generation": 1}})
    assert spec_unhandled({"metadata": {"generation": 2}, "status": {"observedGeneration": 1}})
    assert not spec_unhandled({"metadata": {"generation": 2}, "status": {"observedGeneration": 2}})


def test_waiting_passes_are_coalesced_into_one() -> None:
    """While a pass for a resource waits, further triggers add nothing: it reads the newest body."""
    gate = asyncio.Event()
    starts: list[float] = []

    async def reconcile(ctx: Any, body: dict[str, Any]) -> Result:
        starts.append(asyncio.get_running_loop().time())
        if len(starts) == 1:
            await gate.wait()
        return Result("Ready", "serving")

    controller = watched_controller(reconcile)

    async def scenario() -> None:
        running = asyncio.create_task(controller.enqueue("ns", "m", "spec"))
        await until(lambda: len(starts) == 1)
        waiting = [asyncio.create_task(controller.enqueue("ns", "m", "child")) for _ in range(5)]
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(running, *waiting)

    asyncio.run(scenario())
    assert len(starts) == 2  # the running pass, then one for the five child events


def test_a_deleted_resource_is_forgotten_with_its_requeue_backoff_and_phase() -> None:
    from lms_operator.runtime.metrics import RESOURCES

    async def reconcile(ctx: Any, body: dict[str, Any]) -> Result:
        return Result("Compressing", "Job running", requeue_after=30.0)

    controller = watched_controller(reconcile)
    other = watched_controller(reconcile)  # each Controller counts its own resources
    body = {"metadata": {"name": "m", "namespace": "ns", "resourceVersion": "2", "generation": 1}}

    async def scenario() -> None:
        await controller.resource_changed({"type": "ADDED", "object": body}, "ns", "m")
        assert "ns/m" in controller.requeues and controller.phases.phase_of == {"ns/m": "Compressing"}
        assert other.phases.phase_of == {}
        assert RESOURCES.labels(phase="Compressing")._value.get() == 1
        controller.failures["ns/m"] = (2, 0.0)
        await controller.resource_changed({"type": "DELETED", "object": body}, "ns", "m")

    asyncio.run(scenario())
    assert controller.known == set() and controller.requeues == {} and controller.failures == {}
    assert controller.phases.phase_of == {} and RESOURCES.labels(phase="Compressing")._value.get() == 0


def test_the_first_watch_event_starts_the_resync_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    async def reconcile(ctx: Any, body: dict[str, Any]) -> Result:
        return Result("Ready", "serving")

    controller = watched_controller(reconcile)
    body = {"metadata": {"name": "m", "namespace": "ns", "resourceVersion": "2", "generation": 1}}

    async def scenario() -> None:
        assert controller.resyncer is None
        for version in ("2", "3"):
            body["metadata"]["resourceVersion"] = version
            await controller.resource_changed({"type": "MODIFIED", "object": body}, "ns", "m")
        assert controller.resyncer is not None
        controller.stop()

    with caplog.at_level(logging.INFO, logger="lms_operator"):
        asyncio.run(scenario())
    assert [r.getMessage() for r in caplog.records if "watch events" in r.getMessage()] == [
        "watch events arriving; resync every 60 s"]


def test_the_resync_spreads_its_passes_over_the_period() -> None:
    starts: list[float] = []

    async def reconcile(ctx: Any, body: dict[str, Any]) -> Result:
        starts.append(asyncio.get_running_loop().time())
        return Result("Ready", "serving")

    controller = watched_controller(reconcile)
    controller.resync_seconds = 0.4
    for name in ("a", "b", "c"):
        controller.ctx.watched["LargeModelService"].offer(f"ns/{name}", {"metadata": {"name": name, "namespace": "ns", "resourceVersion": "1"}})
        controller.known.add(("ns", name))

    async def scenario() -> None:
        controller.start()
        await until(lambda: len(starts) >= 4)
        controller.stop()

    asyncio.run(scenario())
    gaps = [b - a for a, b in zip(starts, starts[1:4])]
    assert all(gap >= 0.07 for gap in gaps), gaps  # 4 resources over 0.4 s: about 0.1 s apart


def test_the_handlers_reach_the_controller_through_kopfs_memo() -> None:
    import kopf

    from lms_operator.handlers import main

    calls: list[tuple[str, str, str]] = []

    async def fake_enqueue(namespace: str, name: str, trigger: str) -> None:
        calls.append((namespace, name, trigger))

    controller = Controller(Context(kube=None, settings=BuildSettings()))  # type: ignore[arg-type]
    controller.enqueue = fake_enqueue  # type: ignore[method-assign]
    memo = kopf.Memo(controller=controller)
    body = {"metadata": {"name": "m", "namespace": "ns", "resourceVersion": "1", "generation": 1}}
    asyncio.run(main.lms_changed(event={"type": "ADDED", "object": body}, namespace="ns", name="m", memo=memo))
    assert controller.known == {("ns", "m")} and calls == [("ns", "m", "spec")]
    asyncio.run(main.cleanup(memo=memo))  # stops the controller; a memo without one is fine too
    asyncio.run(main.cleanup(memo=kopf.Memo()))
