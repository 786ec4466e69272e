"""Connections of the load generator: spread, aged out without dropping requests; every request reported.

Fake clients stand in for Triton here; tests/integration/test_serving_scaling.py runs the same
code against real Triton processes behind the sandbox's service proxy.
"""
from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

import numpy as np
import pytest

from lms_operator.serving.clientpool import ClientPool, channel_args
from lms_operator.serving.loadgen import RequestRecord, _level, settled_stats


class FakeClient:
    """Answers infer after `delay` seconds; fails when `fail` is set; remembers whether it was closed."""

    made = 0

    def __init__(self, delay: float = 0.0, fail: str | None = None) -> None:
        FakeClient.made += 1
        self.id = FakeClient.made
        self.delay = delay
        self.fail = fail
        self.inflight = 0
        self.calls = 0
        self.closed = False
        self.closed_with_inflight = False

    async def infer(self, model: str, inputs: Any) -> None:
        assert not self.closed, "request sent on a closed client"
        self.calls += 1
        self.inflight += 1
        try:
            await asyncio.sleep(self.delay)
            if self.fail:
                raise RuntimeError(f"{self.fail}\nmore detail")
        finally:
            self.inflight -= 1

    async def close(self) -> None:
        self.closed_with_inflight = self.closed_with_inflight or self.inflight > 0
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_channel_args_give_each_client_its_own_connection() -> None:
    a, b = dict(channel_args(1)), dict(channel_args(2))
    assert a["grpc.use_local_subchannel_pool"] == 1
    assert a["lms.connection_id"] != b["lms.connection_id"]
    assert a["grpc.max_send_message_length"] == 2**31 - 1  # tritonclient's own defaults kept


def test_pool_spreads_workers_and_reconnects_staggered() -> None:
    async def scenario() -> None:
        clock = Clock()
        clients: list[FakeClient] = []

        def factory() -> FakeClient:
            clients.append(FakeClient())
            return clients[-1]

        pool = ClientPool(factory, connections=2, reconnect_s=2.0, clock=clock)
        c0, c1, c2 = pool.acquire(0), pool.acquire(1), pool.acquire(2)
        assert c0.client is c2.client and c0.client is not c1.client and pool.opened == 2
        for c in (c0, c1, c2):
            pool.release(c)
        clock.now = 2.5   # slot 0 (age limit 2 s) is due, slot 1 (staggered: 3 s) is not
        held = pool.acquire(1)
        assert held.client is c1.client
        fresh = pool.acquire(0)
        assert fresh.client is not c0.client and pool.opened == 3
        await asyncio.sleep(0)
        assert clients[0].closed   # nothing was in flight on it
        clock.now = 3.1
        newer = pool.acquire(1)    # slot 1 due now, but `held` is still in flight on its client
        assert newer.client is not held.client
        await asyncio.sleep(0)
        assert not clients[1].closed
        pool.release(held)
        await asyncio.sleep(0)
        assert clients[1].closed
        pool.release(fresh)
        pool.release(newer)
        await pool.close()
        assert all(c.closed for c in clients)

    asyncio.run(scenario())


def test_pool_rejects_bad_settings_and_shares_a_given_client() -> None:
    with pytest.raises(ValueError, match="connections"):
        ClientPool(FakeClient, connections=0)
    with pytest.raises(ValueError, match="reconnect_s"):
        ClientPool(FakeClient, reconnect_s=0)

    async def scenario() -> None:
        shared = FakeClient()
        pool = ClientPool(FakeClient, shared=shared)
        assert pool.acquire(5).client is shared
        await pool.close()
        assert not shared.closed   # the caller's client

    asyncio.run(scenario())


PAYLOAD = {"input": np.zeros((1, 4), dtype=np.float32)}


def test_level_reports_every_request_and_never_drops_one_on_reconnect() -> None:
    async def scenario() -> tuple[Any, list[FakeClient], list[RequestRecord]]:
        clients: list[FakeClient] = []

        def factory() -> FakeClient:
            clients.append(FakeClient(delay=0.01))
            return clients[-1]

        pool = ClientPool(factory, connections=3, reconnect_s=0.05)
        seen: list[RequestRecord] = []
        kept: list[RequestRecord] = []
        result = await _level(pool, "m", PAYLOAD, 6, None, 0.6, None, on_result=seen.append, records=kept)
        await pool.close()
        assert seen == kept
        return result, clients, kept

    result, clients, records = asyncio.run(scenario())
    assert result.errors == 0 and result.requests == len(records) > 50
    assert len(clients) > 6                                   # reconnected many times
    assert not any(c.closed_with_inflight for c in clients)   # an old client closes only once drained
    assert all(c.closed for c in clients)
    assert all(r.ok and r.error is None and r.latency_s >= 0.005 and r.start > 1e9 for r in records)


def test_level_counts_errors_by_message_and_stops_on_the_event() -> None:
    async def scenario() -> tuple[Any, Counter[str], list[RequestRecord]]:
        stop = threading.Event()
        calls = {"n": 0}

        def factory() -> FakeClient:
            calls["n"] += 1
            return FakeClient(delay=0.005, fail="unavailable" if calls["n"] % 2 else None)

        pool = ClientPool(factory, connections=2)
        errors: Counter[str] = Counter()
        records: list[RequestRecord] = []
        asyncio.get_running_loop().call_later(0.3, stop.set)
        result = await _level(pool, "m", PAYLOAD, 4, None, None, None, stop=stop, records=records,
                              errors_by_message=errors, error_backoff_s=0.05)
        await pool.close()
        return result, errors, records

    result, errors, records = asyncio.run(scenario())
    assert 0.25 < result.wall_s < 2.0                 # ended by the stop event, not a budget
    failed = [r for r in records if not r.ok]
    assert result.errors == len(failed) == errors["unavailable"] > 0
    assert result.first_error == "unavailable"
    assert result.requests == len(records)
    assert all(r.error == "unavailable" for r in failed)
    assert len(failed) < 4 * 0.35 / 0.05 + 4    # each failing worker waited before its next request


class LaggingStats:
    """Triton's statistics as a backend reports them: the last batch is counted `lag` reads late."""

    def __init__(self, counts: list[tuple[int, int]]) -> None:
        self.counts = counts
        self.reads = 0

    async def get_inference_statistics(self, model: str, as_json: bool = True) -> dict[str, Any]:
        inferences, executions = self.counts[min(self.reads, len(self.counts) - 1)]
        self.reads += 1
        return {"model_stats": [{"name": model, "inference_count": inferences, "execution_count": executions}]}


def test_settled_stats_waits_for_the_last_batch_to_be_counted() -> None:
    client = LaggingStats([(40, 5), (40, 5), (48, 6)])
    assert asyncio.run(settled_stats(client, "m", 48, timeout_s=5, poll_s=0.001)) == (48, 6)
    assert client.reads == 3


def test_settled_stats_returns_what_is_there_at_the_timeout() -> None:
    client = LaggingStats([(40, 5)])
    assert asyncio.run(settled_stats(client, "m", 48, timeout_s=0.05, poll_s=0.01)) == (40, 5)
    assert client.reads >= 2
