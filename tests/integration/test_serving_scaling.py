"""Replicas coming and going under load, with real Triton processes behind the sandbox's service proxy.

Two local tritonservers serve a one-model repository; the proxy's routing core (the same Route
the pod runner's kube-proxy uses) is fed the ready endpoints by hand, as EndpointSlices would.
The load generator runs with reconnecting connections. A replica added to the rotation gets
requests within a few seconds (its own Triton statistics say so); a replica taken out of the
rotation, left serving for longer than the reconnect period (the preStop sleep), then sent
SIGTERM, costs no request.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from lms_harness.identity_model import MODEL, write_identity_repository
from lms_harness.serviceproxy import ProxyLoop, RoundRobin
from lms_operator.serving.loadgen import RequestRecord, run_load
from lms_operator.serving.triton import TritonProcess, free_port, server_args

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

RECONNECT_S = 2.0
PRESTOP_S = RECONNECT_S + 2.0   # the drain: longer than one reconnect period


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[TritonProcess]]:
    repo = write_identity_repository(tmp_path_factory.mktemp("repo"))
    logs = tmp_path_factory.mktemp("logs")
    procs = [TritonProcess(server_args(repo, free_port(), free_port(), free_port()), log_path=logs / f"triton-{i}.log")
             for i in range(2)]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.wait_ready(MODEL, timeout=180)
        yield procs
    finally:
        for p in procs:
            p.stop()


def inference_count(server: TritonProcess) -> int:
    """Successful inferences this server has answered (Triton's own statistics)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/v2/models/{MODEL}/stats", timeout=5) as resp:
        stats = json.loads(resp.read())
    return int(stats["model_stats"][0]["inference_stats"]["success"]["count"])


def wait_until(predicate, timeout: float) -> float:  # type: ignore[no-untyped-def]
    """Seconds until predicate() held; fails the test after timeout."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, f"not within {timeout}s"
        time.sleep(0.1)
    return time.monotonic() - start


def test_scale_up_spreads_load_and_scale_down_fails_no_request(servers: list[TritonProcess]) -> None:
    a, b = servers
    addr_a, addr_b = (f"127.0.0.1:{s.grpc_port}" for s in servers)
    loop = ProxyLoop()
    backends = RoundRobin([addr_a])                  # one replica ready
    route = loop.open(backends, "test/identity:grpc")
    records: list[RequestRecord] = []
    stop = threading.Event()
    outcome: dict[str, object] = {}

    def load() -> None:
        try:
            outcome["run"] = run_load(f"127.0.0.1:{route.port}", MODEL, 8, connections=4, reconnect_s=RECONNECT_S,
                                      stop=stop, on_result=records.append, keep_records=False)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=load, daemon=True)
    try:
        thread.start()
        wait_until(lambda: len(records) > 200, 60)
        assert inference_count(b) == 0                 # not in the rotation yet

        # scale-up: B becomes ready; connections age out onto it
        b_before = inference_count(b)
        backends.set([addr_a, addr_b])
        up_at = time.time()
        spread_s = wait_until(lambda: inference_count(b) > b_before + 50, 4 * RECONNECT_S + 5)
        time.sleep(RECONNECT_S * 2)                     # a full period: every slot reconnected once at least
        a1, b1 = inference_count(a), inference_count(b)
        time.sleep(2.0)
        a_share, b_share = inference_count(a) - a1, inference_count(b) - b1

        # scale-down: A leaves the rotation, keeps serving through its preStop sleep, then SIGTERM
        backends.set([addr_b])
        down_at = time.time()
        time.sleep(PRESTOP_S)
        a_after_drain = inference_count(a)
        term_at = time.time()
        assert a.stop(timeout=20) == 0                  # Triton exits cleanly on SIGTERM
        time.sleep(2.0)
        b_end = inference_count(b)
    finally:
        stop.set()
        thread.join(60)
        loop.close(route)
        loop.stop()

    assert "error" not in outcome, outcome.get("error")
    run = outcome["run"]
    failed = [r for r in records if not r.ok]
    print(f"\nrequests {len(records)}, failed {len(failed)}, clients opened {run.clients_opened}, "  # type: ignore[attr-defined]
          f"B serving {spread_s:.1f}s after joining, share A/B over 2 s after a period: {a_share}/{b_share}, "
          f"served after the drain by A: {a_after_drain}, by B in total: {b_end}")
    assert not failed, f"{len(failed)} failed requests, first: {failed[0]}"
    assert run.level.errors == 0 and run.level.requests == len(records)  # type: ignore[attr-defined]
    assert a_share > 0 and b_share > 0                           # load on both replicas
    assert min(a_share, b_share) / max(a_share, b_share) > 0.2   # and spread, not a trickle
    assert any(r.ok for r in records if r.start > term_at + 0.5)  # load went on after A stopped
    assert any(r.start > up_at for r in records) and any(r.start > down_at for r in records)
    assert inference_count(b) >= b_end


def test_bench_cli_with_connections_and_reconnects(servers: list[TritonProcess]) -> None:
    b = servers[1]
    loop = ProxyLoop()
    route = loop.open(RoundRobin([f"127.0.0.1:{b.grpc_port}"]), "test/identity:grpc")
    try:
        done = subprocess.run([sys.executable, "-m", "lms_operator.cli", "bench", f"127.0.0.1:{route.port}",
                               "--model", MODEL, "--concurrency", "4", "--duration", "3", "--requests", "100000",
                               "--connections", "3", "--reconnect-seconds", "1"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        row = done.stdout.splitlines()[1].split()
        assert row[0] == "4" and int(row[1]) > 20 and row[2] == "0"
        assert "batch: not measured (3 connection(s), reconnecting" in done.stderr
        assert sum(route.served.values()) >= 6   # 3 slots reconnected at least once in 3 s (plus the control client)
    finally:
        loop.close(route)
        loop.stop()
