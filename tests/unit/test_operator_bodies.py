"""The body cache keeps the newest resource version it was offered, never an older one."""
from __future__ import annotations

from typing import Any

from lms_operator.k8s.bodies import BodyCache, is_newer, resource_version


def body(rv: Any, phase: str = "Ready") -> dict[str, Any]:
    return {"metadata": {"name": "m", "resourceVersion": rv}, "status": {"phase": phase}}


def test_resource_version_parses_integers_only() -> None:
    assert resource_version(body("42")) == 42
    assert resource_version(body("abc")) is None
    assert resource_version({"metadata": {}}) is None


def test_newer_wins_and_unorderable_versions_are_taken() -> None:
    assert is_newer(body("5"), None)
    assert is_newer(body("6"), body("5")) and is_newer(body("5"), body("5"))
    assert not is_newer(body("4"), body("5"))
    assert is_newer(body("x"), body("5")) and is_newer(body("5"), body("x"))


def test_cache_ignores_a_late_older_event_and_keeps_its_own_copy() -> None:
    cache = BodyCache()
    offered = body("7", "Ready")
    cache.offer("t/m", offered)  # the pass's own status patch
    cache.offer("t/m", body("6", "Deploying"))  # the watch event of an earlier write, late
    offered["status"]["phase"] = "changed by its sender"
    got = cache.get("t/m")
    assert got is not None and got["status"]["phase"] == "Ready"
    cache.drop("t/m", body("8"))
    assert cache.get("t/m") is None
    cache.offer("t/m", body("7"))  # a late body of the deleted object
    assert cache.get("t/m") is None
    cache.offer("t/m", body("9", "Pending"))  # a new object of the same name
    assert cache.get("t/m")["status"]["phase"] == "Pending"  # type: ignore[index]
