from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from lms_operator.reconcile.context import Context
from lms_operator.resources.settings import BuildSettings
from lms_operator.runtime.controller import Controller

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def load_example(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / name).read_text())


@pytest.fixture
def minilm_manifest() -> dict[str, Any]:
    return copy.deepcopy(load_example("minilm-cpu.yaml"))


def watched_controller(reconcile: Any, names: tuple[str, ...] = ("m",), kube: Any = None,
                       settings: BuildSettings | None = None, **kwargs: Any) -> Controller:
    """A Controller whose watch cache already holds LargeModelServices `names` in namespace ns."""
    made = Controller(Context(kube=kube, settings=settings or BuildSettings()), reconciler=reconcile, **kwargs)
    for name in names:
        made.ctx.watched["LargeModelService"].offer(f"ns/{name}", {"metadata": {
            "name": name, "namespace": "ns", "resourceVersion": "1"}})
        made.known.add(("ns", name))
    return made


async def until(done: Any, timeout: float = 10.0) -> None:
    """Wait (a busy machine may delay timers) until done() holds; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not done():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)
