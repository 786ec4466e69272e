"""The controller runtime: between kopf's watch events and the reconcile pass.

Every trigger (a new or changed spec, a child's event, a planned requeue, the periodic resync)
is enqueued here and runs the same level-based pass under a per-resource lock, so two triggers
never reconcile one object at the same time. A pass starts from the newest body of the resource
that its watch (or the pass's own status patch) delivered, and reads it from the API server only
when none was delivered. The pass's result decides when the resource is requeued.

One Controller per operator process holds all of this state; the start-up handler creates it
and keeps it in kopf's memo, and the handlers call it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from types import MappingProxyType
from typing import Any

import kopf

from lms_operator.api import schema
from lms_operator.reconcile.context import Context, read_watched
from lms_operator.reconcile.run import Result, reconcile
from lms_operator.resources.autoscaling import KEDA_API
from lms_operator.runtime import metrics
from lms_operator.runtime.slots import PrioritySlots

log = logging.getLogger("lms_operator")

Reconciler = Callable[[Context, dict[str, Any]], Awaitable[Result]]


# At most this many reconcile passes run at once; the rest wait. Without a bound, 1000 new
# resources all progressed together through the client's thread pool and every pass took
# minutes (bench/scale.py: mean pass 333 s, 25 of 1000 Ready after 9 minutes).
MAX_CONCURRENT_PASSES = 16

# Which waiting pass starts first: a child's event (a rollout finished: one status write from
# Ready) before a spec change or a planned requeue (a new resource: several applies), before the
# periodic resync. In arrival order alone, 1000 new resources kept every finished rollout waiting
# behind the creation passes (bench/scale.py: 72 of 1000 Ready when the 1000th Deployment was
# applied).
PRIORITY = MappingProxyType({"child": 0, "spec": 1, "requeue": 1, "resync": 2})

# After a pass fails (an API error), the resource's next pass waits this long, whichever trigger
# asks for it: a child's event and the resync would otherwise retry a failing API server at once.
ERROR_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)


def error_backoff(failures: int) -> float:
    """Seconds to wait before the next pass after `failures` failed passes in a row."""
    return ERROR_BACKOFF[min(failures, len(ERROR_BACKOFF)) - 1] if failures > 0 else 0.0


def spec_unhandled(body: dict[str, Any]) -> bool:
    """Whether the resource's current generation has not had a pass yet (its status says so)."""
    generation = (body.get("metadata") or {}).get("generation")
    return generation != (body.get("status") or {}).get("observedGeneration")


def owner_of(body: dict[str, Any]) -> tuple[str, str] | None:
    """(namespace, name) of the LargeModelService controlling a child object, if any."""
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == schema.KIND and ref.get("apiVersion", "").startswith(schema.GROUP + "/"):
            return body["metadata"].get("namespace", "default"), ref["name"]
    return None


class Controller:
    """Locks, priority slots, coalescing, backoff, requeues and the resync of one operator process."""

    def __init__(self, ctx: Context, *, resync_seconds: float = 60.0, reconciler: Reconciler = reconcile,
                 max_concurrent_passes: int = MAX_CONCURRENT_PASSES, keda_check_seconds: float = 30.0) -> None:
        self.ctx = ctx
        """Replaced (same caches, new build settings) when KEDA arrives or leaves."""
        self.resync_seconds = resync_seconds
        self.keda_check_seconds = keda_check_seconds
        self.keda_watcher: asyncio.Task[None] | None = None
        self.reconciler = reconciler
        self.locks: dict[str, asyncio.Lock] = {}
        self.known: set[tuple[str, str]] = set()
        """The resources the resource watch delivered and did not report deleted."""
        self.waiting: dict[str, int] = {}
        """Passes per resource that wait for its lock or a slot (and have not read the body yet)."""
        self.slots = PrioritySlots(max_concurrent_passes)
        self.failures: dict[str, tuple[int, float]] = {}
        """Failed passes in a row per resource, and when the last one failed (monotonic)."""
        self.requeues: dict[str, asyncio.TimerHandle] = {}
        """The requeue each resource asked for (a running Job's poll, a failed pass's backoff)."""
        self.tasks: set[asyncio.Task[None]] = set()
        """Passes started by a requeue (held so that they are not garbage-collected mid-run)."""
        self.resyncer: asyncio.Task[None] | None = None
        self.phases = metrics.PhaseGauge()

    # -- start and stop ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the periodic resync. Called from the first watch event, not at start-up: a task
        copies the context it is created in, and only kopf's handlers carry the context variables
        of its Event queue (a resync pass started from the start-up activity could not post its
        Events: LookupError on kopf's event_queue_loop_var)."""
        if self.resyncer is None:
            # The one line a healthy operator logs after start-up: its watch delivers events (kopf
            # logs a retried list or watch request, such as a 429 while the API server's cache
            # initializes, but not the retry that succeeded).
            log.info("watch events arriving; resync every %g s", self.resync_seconds)
            self.resyncer = asyncio.create_task(self.resync_forever(), name="lms resync")
        if self.keda_watcher is None:
            self.keda_watcher = asyncio.create_task(self.watch_keda_forever(), name="lms keda discovery")

    def stop(self) -> None:
        """Cancel the resync, the planned requeues and the passes they started."""
        if self.resyncer is not None:
            self.resyncer.cancel()
            self.resyncer = None
        if self.keda_watcher is not None:
            self.keda_watcher.cancel()
            self.keda_watcher = None
        for handle in self.requeues.values():
            handle.cancel()
        self.requeues.clear()
        for task in list(self.tasks):
            task.cancel()

    # -- watch events --------------------------------------------------------------------------

    async def resource_changed(self, event: dict[str, Any], namespace: str, name: str) -> None:
        """A resource seen for the first time (created, or listed at start-up) or with a spec its
        status has not caught up with is enqueued; other changes (its own status writes) are not."""
        self.start()
        body = self.remember_event(schema.KIND, event, namespace, name)
        if body is None:
            if event.get("type") == "DELETED":
                self.forget(namespace, name)
            return
        first = (namespace, name) not in self.known
        self.known.add((namespace, name))
        if first or spec_unhandled(body):
            await self.enqueue(namespace, name, "spec")

    async def child_changed(self, kind: str, event: dict[str, Any], namespace: str, name: str) -> None:
        """Keep the child's newest body for the passes, then enqueue its owner."""
        body = self.remember_event(kind, event, namespace, name)
        if body is None:
            return
        owner = owner_of(body)
        # An owner the resource watch has not delivered yet gets its own first pass when it is
        # delivered (on a restart the children's lists often arrive first); one that is gone leaves
        # its children to garbage collection.
        if owner is not None and owner in self.known:
            await self.enqueue(owner[0], owner[1], "child")

    def remember_event(self, kind: str, event: dict[str, Any], namespace: str, name: str) -> dict[str, Any] | None:
        """Keep a watch event's body as the newest of its object; the body, None when deleted."""
        body = event.get("object")
        cache, key = self.ctx.watched[kind], f"{namespace}/{name}"
        if event.get("type") == "DELETED":
            cache.drop(key, body if isinstance(body, dict) else None)
            return None
        if not isinstance(body, dict):
            return None
        cache.offer(key, body)
        return body

    def forget(self, namespace: str, name: str) -> None:
        """The resource was deleted: no resync, requeue or backoff for it any more."""
        self.known.discard((namespace, name))
        self.requeue(namespace, name, None)
        self.failures.pop(f"{namespace}/{name}", None)
        self.phases.record(f"{namespace}/{name}", None)

    # -- passes --------------------------------------------------------------------------------

    async def enqueue(self, namespace: str, name: str, trigger: str) -> None:
        """Every trigger's way in: a failed pass is logged, and retried after its backoff.

        A pass that is already waiting for this resource's lock will read the cluster after this
        trigger's change, so a second waiting pass adds nothing: child events (several Deployment
        status updates per rollout) are coalesced into it.
        """
        if self.waiting.get(f"{namespace}/{name}", 0) > 0:
            return
        try:
            await self.reconcile(namespace, name, trigger)
        except Exception as exc:
            log.warning("reconcile of %s/%s (%s) failed: %s", namespace, name, trigger, exc)

    async def reconcile(self, namespace: str, name: str, trigger: str) -> Result | None:
        """Reconcile the resource and plan its requeue; None when it is gone or being deleted."""
        key = f"{namespace}/{name}"
        lock = self.locks.setdefault(key, asyncio.Lock())
        self.waiting[key] = self.waiting.get(key, 0) + 1
        started = False
        try:
            async with lock:
                count, failed_at = self.failures.get(key, (0, 0.0))
                await asyncio.sleep(max(0.0, failed_at + error_backoff(count) - time.monotonic()))
                async with self.slots.slot(PRIORITY[trigger]):
                    self.waiting[key] -= 1  # from here on this pass reads the newest body
                    started = True
                    try:
                        result = await self._pass(namespace, name, key, trigger)
                    except Exception:
                        failures = self.failures.get(key, (0, 0.0))[0] + 1
                        self.failures[key] = (failures, time.monotonic())
                        self.requeue(namespace, name, error_backoff(failures))
                        raise
                    self.failures.pop(key, None)
                    self.requeue(namespace, name, None if result is None or result.permanent else result.requeue_after)
                    return result
        finally:
            if not started:
                self.waiting[key] -= 1
            if self.waiting.get(key) == 0:
                self.waiting.pop(key, None)

    async def _pass(self, namespace: str, name: str, key: str, trigger: str) -> Result | None:
        """One pass under the resource's lock and a concurrency slot."""
        body = await read_watched(self.ctx, schema.API_VERSION, schema.KIND, namespace, name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            self.phases.record(key, None)
            return None
        started = time.monotonic()
        try:
            result = await self.reconciler(self.ctx, body)
        except Exception as exc:
            metrics.ERRORS.labels(type=type(exc).__name__).inc()
            metrics.RECONCILES.labels(trigger=trigger, result="error").inc()
            raise
        finally:
            metrics.DURATION.observe(time.monotonic() - started)
        if result.body is not None:
            self.ctx.watched[schema.KIND].offer(key, result.body)
        outcome = "failed" if result.permanent else "requeue" if result.requeue_after else "ok"
        metrics.RECONCILES.labels(trigger=trigger, result=outcome).inc()
        self.phases.record(key, result.phase)
        for event in result.events:
            kopf.event(body, type=event.type, reason=event.reason, message=event.message[:1024])
        return result

    def requeue(self, namespace: str, name: str, delay: float | None) -> None:
        """Reconcile the resource again in `delay` seconds (replacing its planned requeue); None: never."""
        key = f"{namespace}/{name}"
        previous = self.requeues.pop(key, None)
        if previous is not None:
            previous.cancel()
        if delay is None:
            return

        def fire() -> None:
            self.requeues.pop(key, None)
            lock = self.locks.get(key)
            busy = self.waiting.get(key, 0) > 0 or (lock is not None and lock.locked())
            if (namespace, name) in self.known and not busy:  # a pass under way plans the next requeue itself
                task = asyncio.ensure_future(self.enqueue(namespace, name, "requeue"))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

        self.requeues[key] = asyncio.get_running_loop().call_later(delay, fire)

    async def resync_forever(self) -> None:
        """The level-based safety net: reconcile every known resource once per resync period.

        The passes are spread evenly over the period instead of run back to back, so that at 1000
        resources a resync does not hold up the passes of new resources and finished rollouts for
        several seconds at a time (bench/scale.py, paced phase).
        """
        while True:
            await self.check_keda()
            resources = sorted(self.known)
            spacing = self.resync_seconds / max(1, len(resources))
            if not resources:
                await asyncio.sleep(self.resync_seconds)
            for namespace, name in resources:
                await asyncio.sleep(spacing)
                if (namespace, name) in self.known:
                    await self.enqueue(namespace, name, "resync")

    # -- KEDA arriving or leaving --------------------------------------------------------------

    async def check_keda(self) -> bool:
        """Ask API discovery whether keda.sh is served; when the answer differs from the build
        settings, switch them and reconcile every resource, so that each one's autoscaler kind
        follows without a restart. True when it switched; a failed discovery changes nothing."""
        try:
            served = await self.ctx.kube.api_exists(KEDA_API)
        except Exception as exc:
            log.warning("cannot tell whether KEDA (%s) is served, keeping keda=%s: %s",
                        KEDA_API, self.ctx.settings.keda, exc)
            return False
        if served == self.ctx.settings.keda:
            return False
        self.ctx = dataclasses.replace(self.ctx, settings=dataclasses.replace(self.ctx.settings, keda=served))
        log.warning("KEDA (%s) is %s: reconciling %d resources to %s", KEDA_API,
                    "now served" if served else "no longer served", len(self.known),
                    "ScaledObjects for Triton metrics" if served else "HorizontalPodAutoscalers on CPU")
        for namespace, name in sorted(self.known):
            task = asyncio.ensure_future(self.enqueue(namespace, name, "requeue"))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return True

    async def watch_keda_forever(self) -> None:
        """Discovery every keda_check_seconds (the resync sweep asks too)."""
        while True:
            await asyncio.sleep(self.keda_check_seconds)
            await self.check_keda()
