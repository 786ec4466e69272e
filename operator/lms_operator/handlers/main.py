"""kopf handlers: decorators only; the work happens in handlers.driver and reconcile/."""
from __future__ import annotations

import asyncio
from typing import Any

import kopf

from lms_operator.api import schema
from lms_operator.handlers import driver
from lms_operator.handlers.options import OPTIONS
from lms_operator.handlers.settings import configure

LMS = (schema.GROUP, schema.VERSION, schema.PLURAL)
MANAGED = {"app.kubernetes.io/managed-by": "lms-operator"}


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    configure(settings, clusterwide=OPTIONS.clusterwide, standalone=OPTIONS.standalone, namespaces=OPTIONS.namespaces)
    # The API client is synchronous: every request holds a default-executor thread, and Python's
    # default pool is min(32, cpus + 4) threads (6 on 2 cores), too few for the concurrent passes.
    from concurrent.futures import ThreadPoolExecutor

    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=2 * driver.MAX_CONCURRENT_PASSES, thread_name_prefix="kube"))
    driver.RUNTIME.ctx = await OPTIONS.make_context()
    driver.RUNTIME.sweeper = asyncio.create_task(driver.sweep_forever(OPTIONS.resync_seconds))


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if driver.RUNTIME.sweeper is not None:
        driver.RUNTIME.sweeper.cancel()


@kopf.on.event(*LMS)
async def lms_changed(event: dict[str, Any], namespace: str, name: str, **_: Any) -> None:
    """A resource seen for the first time (created, or listed at start-up) or with a spec its
    status has not caught up with gets a pass; other changes (its own status writes) do not.

    Watch events alone drive the resource, so kopf keeps no handler state in it: no annotation
    patch per create or spec change, and retries are planned by the pass's own result."""
    body = driver.remember_event(schema.KIND, event, namespace, name)
    if body is None:
        if event.get("type") == "DELETED":
            driver.forget(namespace, name)
        return
    first = (namespace, name) not in driver.RUNTIME.known
    driver.RUNTIME.known.add((namespace, name))
    if first or driver.spec_unhandled(body):
        await driver.reconcile_quietly(namespace, name, "spec")


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
async def job_changed(event: dict[str, Any], namespace: str, name: str, **_: Any) -> None:
    await driver.child_changed("Job", event, namespace, name)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def deployment_changed(event: dict[str, Any], namespace: str, name: str, **_: Any) -> None:
    await driver.child_changed("Deployment", event, namespace, name)
