"""Glue between kopf's watch events and the reconcile pass: one lock per resource, retries, events.

Every trigger (a new or changed spec, a child's event, a scheduled retry, the periodic sweep)
lands here and runs the same level-based pass under a per-resource lock, so two triggers never
reconcile one object at the same time. A pass starts from the newest body of the resource that
its watch (or the pass's own status patch) delivered, and reads it from the API server only when
none was delivered. The pass's result decides when the resource is looked at again.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import kopf

from lms_operator.api import schema
from lms_operator.handlers import metrics
from lms_operator.reconcile.context import Context, read_watched
from lms_operator.reconcile.run import Result, reconcile

log = logging.getLogger("lms_operator")


# At most this many reconcile passes run at once; the rest wait. Without a bound, 1000 new
# resources all progressed together through the client's thread pool and every pass took
# minutes (bench/scale.py: mean pass 333 s, 25 of 1000 Ready after 9 minutes).
MAX_CONCURRENT_PASSES = 16

# Which waiting pass starts first: a child's event (a rollout finished: one status write from
# Ready) before a spec change or a scheduled retry (a new resource: several applies), before the
# periodic sweep. In arrival order alone, 1000 new resources kept every finished rollout waiting
# behind the creation passes (bench/scale.py: 72 of 1000 Ready when the 1000th Deployment was
# applied).
PRIORITY = {"child": 0, "spec": 1, "retry": 1, "timer": 2}

# After a pass fails (an API error), the resource's next pass waits this long, whichever trigger
# asks for it: a child's event and the sweep would otherwise retry a failing API server at once.
ERROR_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)


def error_backoff(failures: int) -> float:
    """Seconds to wait before the next pass after `failures` failed passes in a row."""
    return ERROR_BACKOFF[min(failures, len(ERROR_BACKOFF)) - 1] if failures > 0 else 0.0


class PrioritySlots:
    """At most `limit` holders; waiters are admitted by priority, then in arrival order."""

    def __init__(self, limit: int) -> None:
        self.free = limit
        self.waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self.order = itertools.count()

    @asynccontextmanager
    async def slot(self, priority: int) -> AsyncIterator[None]:
        if self.free > 0 and not self.waiters:
            self.free -= 1
        else:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self.waiters, (priority, next(self.order), future))
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self._release()  # admitted and cancelled at once: pass the slot on
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self.waiters:
            _, _, future = heapq.heappop(self.waiters)
            if not future.done():
                future.set_result(None)
                return
        self.free += 1


@dataclass
class Runtime:
    """Process-wide state, set once at start-up."""
    ctx: Context | None = None
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    known: set[tuple[str, str]] = field(default_factory=set)
    sweeper: asyncio.Task[None] | None = None
    waiting: dict[str, int] = field(default_factory=dict)
    slots: PrioritySlots = field(default_factory=lambda: PrioritySlots(MAX_CONCURRENT_PASSES))
    failures: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Failed passes in a row per resource, and when the last one failed (monotonic)."""
    retries: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    """The next look each resource asked for (a running Job's poll, a failed pass's retry)."""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    """Passes started by a planned look (held so that they are not garbage-collected mid-run)."""


RUNTIME = Runtime()


def _ctx() -> Context:
    if RUNTIME.ctx is None:
        raise RuntimeError("operator context not initialised (startup handler did not run)")
    return RUNTIME.ctx


def spec_unhandled(body: dict[str, Any]) -> bool:
    """Whether the resource's current generation has not had a pass yet (its status says so)."""
    generation = (body.get("metadata") or {}).get("generation")
    return generation != (body.get("status") or {}).get("observedGeneration")


def schedule(namespace: str, name: str, delay: float | None) -> None:
    """Look at the resource again in `delay` seconds (replacing the previous plan); None: never."""
    key = f"{namespace}/{name}"
    previous = RUNTIME.retries.pop(key, None)
    if previous is not None:
        previous.cancel()
    if delay is None:
        return

    def fire() -> None:
        RUNTIME.retries.pop(key, None)
        lock = RUNTIME.locks.get(key)
        busy = RUNTIME.waiting.get(key, 0) > 0 or (lock is not None and lock.locked())
        if (namespace, name) in RUNTIME.known and not busy:  # a pass under way plans the next look itself
            task = asyncio.ensure_future(reconcile_quietly(namespace, name, "retry"))
            RUNTIME.tasks.add(task)
            task.add_done_callback(RUNTIME.tasks.discard)

    RUNTIME.retries[key] = asyncio.get_running_loop().call_later(delay, fire)


async def reconcile_named(namespace: str, name: str, trigger: str) -> Result | None:
    """Reconcile the resource and plan its next look; None when it is gone or being deleted."""
    key = f"{namespace}/{name}"
    lock = RUNTIME.locks.setdefault(key, asyncio.Lock())
    RUNTIME.waiting[key] = RUNTIME.waiting.get(key, 0) + 1
    started = False
    try:
        async with lock:
            count, failed_at = RUNTIME.failures.get(key, (0, 0.0))
            await asyncio.sleep(max(0.0, failed_at + error_backoff(count) - time.monotonic()))
            async with RUNTIME.slots.slot(PRIORITY[trigger]):
                RUNTIME.waiting[key] -= 1  # from here on this pass reads the newest body
                started = True
                try:
                    result = await _pass(namespace, name, key, trigger)
                except Exception:
                    failures = RUNTIME.failures.get(key, (0, 0.0))[0] + 1
                    RUNTIME.failures[key] = (failures, time.monotonic())
                    schedule(namespace, name, error_backoff(failures))
                    raise
                RUNTIME.failures.pop(key, None)
                schedule(namespace, name, None if result is None or result.permanent else result.requeue_after)
                return result
    finally:
        if not started:
            RUNTIME.waiting[key] -= 1
        if RUNTIME.waiting.get(key) == 0:
            RUNTIME.waiting.pop(key, None)


async def _pass(namespace: str, name: str, key: str, trigger: str) -> Result | None:
    """One pass under the resource's lock and a concurrency slot."""
    body = await read_watched(_ctx(), schema.API_VERSION, schema.KIND, namespace, name)
    if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
        metrics.record_phase(key, None)
        return None
    started = time.monotonic()
    try:
        result = await reconcile(_ctx(), body)
    except Exception as exc:
        metrics.ERRORS.labels(type=type(exc).__name__).inc()
        metrics.RECONCILES.labels(trigger=trigger, result="error").inc()
        raise
    finally:
        metrics.DURATION.observe(time.monotonic() - started)
    if result.body is not None:
        _ctx().watched[schema.KIND].offer(key, result.body)
    outcome = "failed" if result.permanent else "retry" if result.requeue_after else "ok"
    metrics.RECONCILES.labels(trigger=trigger, result=outcome).inc()
    metrics.record_phase(key, result.phase)
    for event in result.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message[:1024])
    return result


def owner_of(body: dict[str, Any]) -> tuple[str, str] | None:
    """(namespace, name) of the LargeModelService controlling a child object, if any."""
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == schema.KIND and ref.get("apiVersion", "").startswith(schema.GROUP + "/"):
            return body["metadata"].get("namespace", "default"), ref["name"]
    return None


def forget(namespace: str, name: str) -> None:
    """The resource was deleted: no sweep, planned look or back-off for it any more."""
    RUNTIME.known.discard((namespace, name))
    schedule(namespace, name, None)
    RUNTIME.failures.pop(f"{namespace}/{name}", None)
    metrics.record_phase(f"{namespace}/{name}", None)


def remember_event(kind: str, event: dict[str, Any], namespace: str, name: str) -> dict[str, Any] | None:
    """Keep a watch event's body as the newest of its object; the body, None when deleted."""
    body = event.get("object")
    cache, key = _ctx().watched[kind], f"{namespace}/{name}"
    if event.get("type") == "DELETED":
        cache.drop(key, body if isinstance(body, dict) else None)
        return None
    if not isinstance(body, dict):
        return None
    cache.offer(key, body)
    return body


async def child_changed(kind: str, event: dict[str, Any], namespace: str, name: str) -> None:
    """Keep the child's newest body for the passes, then reconcile its owner."""
    body = remember_event(kind, event, namespace, name)
    if body is None:
        return
    owner = owner_of(body)
    # An owner the resource watch has not delivered yet gets its own first pass when it is
    # delivered (on a restart the children's lists often arrive first); one that is gone leaves
    # its children to garbage collection.
    if owner is not None and owner in RUNTIME.known:
        await reconcile_quietly(owner[0], owner[1], "child")


async def reconcile_quietly(namespace: str, name: str, trigger: str) -> None:
    """Every trigger's way in: a failed pass is logged, and retried by its own schedule.

    A pass that is already waiting for this resource's lock will read the cluster after this
    trigger's change, so a second waiting pass adds nothing: child events (several Deployment
    status updates per rollout) are coalesced into it.
    """
    if RUNTIME.waiting.get(f"{namespace}/{name}", 0) > 0:
        return
    try:
        await reconcile_named(namespace, name, trigger)
    except Exception as exc:
        log.warning("reconcile of %s/%s (%s) failed: %s", namespace, name, trigger, exc)


async def sweep_forever(interval: float) -> None:
    """The level-based safety net: reconcile every known resource once per interval.

    The passes are spread evenly over the interval instead of run back to back, so that at 1000
    resources a sweep does not hold up the passes of new resources and finished rollouts for
    several seconds at a time (bench/scale.py, paced phase).
    """
    while True:
        resources = sorted(RUNTIME.known)
        spacing = interval / max(1, len(resources))
        if not resources:
            await asyncio.sleep(interval)
        for namespace, name in resources:
            await asyncio.sleep(spacing)
            if (namespace, name) in RUNTIME.known:
                await reconcile_quietly(namespace, name, "timer")
