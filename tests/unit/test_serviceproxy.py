"""The sandbox's kube-proxy: which endpoints are ready, and real TCP forwarding round-robin."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from lms_harness.serviceproxy import (ProxyLoop, RoundRobin, Route, endpoint_serving, ready_addresses,
                                      service_annotations, service_port_names)


def service(ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metadata": {"name": "minilm-triton", "namespace": "ns"}, "spec": {"ports": ports}}


def pod(name: str, grpc: str | None, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "annotations": {}}
    if grpc:
        meta["annotations"]["sandbox.lms.dev/grpc"] = grpc
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta}


def endpoint(name: str, ready: bool | None = True, terminating: bool | None = None, kind: str = "Pod") -> dict[str, Any]:
    cond: dict[str, Any] = {}
    if ready is not None:
        cond["ready"] = ready
    if terminating is not None:
        cond["terminating"] = terminating
    return {"addresses": ["10.1.2.3"], "conditions": cond, "targetRef": {"kind": kind, "name": name, "namespace": "ns"}}


def test_service_port_names_take_named_tcp_ports() -> None:
    svc = service([{"name": "http", "port": 8000}, {"name": "grpc", "port": 8001}, {"port": 9, "targetPort": "metrics"},
                   {"name": "dns", "port": 53, "protocol": "UDP"}, {"port": 7, "targetPort": 7}])
    assert service_port_names(svc) == ["http", "grpc", "metrics"]
    assert service_annotations({"grpc": 4001, "http": 4000}) == {
        "sandbox.lms.dev/grpc": "127.0.0.1:4001", "sandbox.lms.dev/http": "127.0.0.1:4000"}


@pytest.mark.parametrize(("ready", "terminating", "serving"), [
    (True, None, True), (None, None, True), (True, False, True), (False, None, False), (True, True, False)])
def test_endpoint_serving_reads_conditions_like_kube_proxy(ready: bool | None, terminating: bool | None,
                                                           serving: bool) -> None:
    assert endpoint_serving(endpoint("p", ready, terminating)) is serving


def test_ready_addresses_map_ready_endpoints_to_pod_annotations() -> None:
    slices = [{"metadata": {"namespace": "ns"}, "endpoints": [
        endpoint("a"), endpoint("b", ready=False), endpoint("c", terminating=True), endpoint("d"),
        endpoint("e"), endpoint("f"), endpoint("g", kind="Node")]},
        {"metadata": {"namespace": "ns"}, "endpoints": [endpoint("h"), endpoint("a")]}]
    pods = {("ns", "a"): pod("a", "127.0.0.1:5001"), ("ns", "b"): pod("b", "127.0.0.1:5002"),
            ("ns", "c"): pod("c", "127.0.0.1:5003"), ("ns", "d"): pod("d", None),
            ("ns", "e"): pod("e", "127.0.0.1:5005", deleting=True), ("ns", "h"): pod("h", "127.0.0.1:5000")}
    # f: pod unknown (gone); g: not a pod; a listed twice counts once; sorted
    assert ready_addresses(slices, pods, "grpc") == ["127.0.0.1:5000", "127.0.0.1:5001"]
    assert ready_addresses(slices, pods, "http") == []
    assert ready_addresses([], pods, "grpc") == []


def test_round_robin_rotates_and_follows_changes() -> None:
    rr = RoundRobin()
    assert rr.rotation() == []
    rr.set(["b", "a"])
    firsts = [rr.rotation()[0] for _ in range(4)]
    assert sorted(firsts) == ["a", "a", "b", "b"] and firsts[0] != firsts[1]
    assert rr.rotation() in (["a", "b"], ["b", "a"])
    rr.set(["c"])
    assert rr.rotation() == ["c"]


# -- real sockets -----------------------------------------------------------------------------------

async def named_server(name: bytes) -> tuple[asyncio.base_events.Server, str]:
    """A backend that answers every line with its name and the line."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(name + b":" + line)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def ask(port: int, line: bytes = b"hi\n") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(line)
    await writer.drain()
    answer = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    return answer


def test_route_spreads_connections_and_keeps_open_ones_when_a_backend_leaves() -> None:
    async def scenario() -> None:
        (sa, a), (sb, b) = await named_server(b"A"), await named_server(b"B")
        backends = RoundRobin([a, b])
        route = Route(backends, "test")
        port = await route.start()
        answers = [await ask(port) for _ in range(4)]
        assert sorted(answers) == [b"A:hi\n", b"A:hi\n", b"B:hi\n", b"B:hi\n"]
        assert route.served == {a: 2, b: 2}

        # an open connection to B survives B leaving the rotation (conntrack); new ones go to A
        while True:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"x\n")
            if (await reader.readline()).startswith(b"B"):
                break
            writer.close()
        backends.set([a])
        assert [await ask(port) for _ in range(3)] == [b"A:hi\n"] * 3
        writer.write(b"still\n")
        assert await asyncio.wait_for(reader.readline(), 5) == b"B:still\n"
        writer.close()

        # a backend that refuses is skipped for the next ready one
        sa.close()
        await sa.wait_closed()
        backends.set([a, b])
        assert {await ask(port) for _ in range(3)} == {b"B:hi\n"}

        # no ready endpoint: the connection is closed at once
        backends.set([])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert route.refused == 1
        await route.close()
        sb.close()

    asyncio.run(scenario())


def test_proxy_loop_opens_routes_from_another_thread() -> None:
    loop = ProxyLoop()
    try:
        holder: dict[str, Any] = {}

        async def start_backend() -> str:
            holder["server"], address = await named_server(b"Z")
            return address

        address = loop.call(start_backend())
        route = loop.open(RoundRobin([address]), "ns/svc:grpc")
        assert loop.call(ask(route.port)) == b"Z:hi\n"
        loop.close(route)
        with pytest.raises(OSError):
            loop.call(ask(route.port))
    finally:
        loop.stop()
