"""Waiting reconcile passes start by priority (finished rollouts first), then in arrival order."""
from __future__ import annotations

import asyncio

from lms_operator.handlers.driver import PRIORITY, PrioritySlots


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
