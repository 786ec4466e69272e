"""kopf handlers: decorators only; the work happens in the Controller (runtime/) and reconcile/.

`lms operator` passes the configuration in kopf's memo (memo.config); the start-up handler puts
the Controller beside it (memo.controller). kopf gives each object a shallow copy of that memo,
so every handler reaches the same Controller.
"""
from __future__ import annotations

from typing import Any

import kopf

from lms_operator.api import schema
from lms_operator.handlers.settings import configure
from lms_operator.runtime.startup import start_controller

LMS = (schema.GROUP, schema.VERSION, schema.PLURAL)
MANAGED = {"app.kubernetes.io/managed-by": "lms-operator"}


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = memo.config
    configure(settings, clusterwide=config.clusterwide, standalone=config.standalone, namespaces=config.namespaces)
    memo.controller = await start_controller(config)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if "controller" in memo:
        memo.controller.stop()


@kopf.on.event(*LMS)
async def lms_changed(event: dict[str, Any], namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Watch events alone drive the resource, so kopf keeps no handler state in it: no annotation
    patch per create or spec change, and requeues are planned by the pass's own result."""
    await memo.controller.resource_changed(event, namespace, name)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
async def job_changed(event: dict[str, Any], namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    await memo.controller.child_changed("Job", event, namespace, name)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def deployment_changed(event: dict[str, Any], namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    await memo.controller.child_changed("Deployment", event, namespace, name)
