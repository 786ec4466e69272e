"""The pod runner's kubelet /metrics/resource: /proc parsing, process-group sums, the text
metrics-server decodes, the node status that points metrics-server at it, and one real HTTPS
scrape of a live process group."""
from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from lms_harness.kubeletmetrics import (ContainerSample, KubeletMetrics, ProcStat, Usage, group_usage, tail_lines,
                                        node_needs_patch, node_status_patch, parse_proc_stat, read_proc,
                                        render_resource_metrics, rfc3339_seconds, sample_containers)

# a real /proc/<pid>/stat line whose command name holds a space and a ')'
STAT = ("4242 (tritonserver) x) S 1 4200 4200 0 -1 4194560 9000 0 0 0 1500 250 7 3 20 0 12 0 "
        "123456 987654321 5120 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0")


def test_parse_proc_stat_counts_fields_after_the_last_parenthesis() -> None:
    st = parse_proc_stat(STAT)
    assert st == ProcStat(pid=4242, pgrp=4200, cpu_ticks=1500 + 250 + 7 + 3, rss_pages=5120)


@pytest.mark.parametrize("line", ["", "garbage", "12 (x) S 1 2"])
def test_parse_proc_stat_rejects_malformed_lines(line: str) -> None:
    with pytest.raises(ValueError):
        parse_proc_stat(line)


def test_group_usage_sums_only_the_group() -> None:
    stats = [ProcStat(10, 10, 200, 100), ProcStat(11, 10, 50, 20), ProcStat(12, 99, 10_000, 5000)]
    usage = group_usage(stats, 10, clk_tck=100, page_size=4096)
    assert usage == Usage(cpu_seconds=2.5, memory_bytes=120 * 4096)
    assert group_usage(stats, 7, clk_tck=100, page_size=4096) == Usage(0.0, 0)


def test_read_proc_sees_this_process() -> None:
    me = [st for st in read_proc() if st.pid == os.getpid()]
    assert len(me) == 1 and me[0].pgrp == os.getpgrp() and me[0].rss_pages > 0


def sample(pod: str, container: str, cpu: float, mem: int, node: str = "lms-cpu-0", ts: int = 1700000000123) -> ContainerSample:
    return ContainerSample(node=node, namespace="team-a", pod=pod, container=container, usage=Usage(cpu, mem),
                           start_time=1700000000.0, timestamp_ms=ts)


def series(text: str) -> dict[str, tuple[float, int]]:
    """name{labels} -> (value, timestamp), failing on any line that is not a comment or a series."""
    out: dict[str, tuple[float, int]] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.fullmatch(r'([a-z_]+(?:\{[^}]*\})?) (\S+)(?: (\d+))?', line)
        assert m, line
        out[m.group(1)] = (float(m.group(2)), int(m.group(3) or 0))
    return out


def test_render_matches_the_kubelet_format_metrics_server_decodes() -> None:
    text = render_resource_metrics("lms-cpu-0", [
        sample("digits-triton-abc", "triton", 12.5, 300_000_000),
        sample("digits-triton-abc", "sidecar", 0.5, 1_000_000),
        sample("other", "triton", 99.0, 5, node="lms-cpu-1"),      # another node
        sample("fresh", "triton", 0.0, 4096),                       # no CPU yet: left out
    ], now_ms=1700000000999)
    got = series(text)
    lbl = 'container="triton",namespace="team-a",pod="digits-triton-abc"'
    assert got[f"container_cpu_usage_seconds_total{{{lbl}}}"] == (12.5, 1700000000123)
    assert got[f"container_memory_working_set_bytes{{{lbl}}}"] == (300_000_000, 1700000000123)
    assert got[f"container_start_time_seconds{{{lbl}}}"] == (1700000000.0, 1700000000123)
    assert got["node_cpu_usage_seconds_total"] == (13.0, 1700000000999)
    assert got["node_memory_working_set_bytes"] == (301_000_000, 1700000000999)
    assert got['pod_cpu_usage_seconds_total{namespace="team-a",pod="digits-triton-abc"}'] == (13.0, 1700000000123)
    assert got['pod_memory_working_set_bytes{namespace="team-a",pod="digits-triton-abc"}'] == (301_000_000,
                                                                                              1700000000123)
    assert not any("other" in k or "fresh" in k for k in got)
    assert "# TYPE container_cpu_usage_seconds_total counter" in text
    assert text.endswith("scrape_error 0\n")


def test_render_for_an_idle_node_has_no_node_series() -> None:
    got = series(render_resource_metrics("lms-cpu-0", [], now_ms=1))
    assert got == {"scrape_error": (0.0, 0)}


def test_label_values_are_escaped() -> None:
    text = render_resource_metrics("n", [sample('we"ird', "c\\x", 1.0, 1, node="n")], now_ms=1)
    assert 'container="c\\\\x",namespace="team-a",pod="we\\"ird"' in text


def test_sample_containers_and_timestamps() -> None:
    stats = [ProcStat(10, 10, 300, 10)]
    rows = [("lms-cpu-0", "team-a", "p", "triton", 10, "2026-01-01T00:00:10Z")]
    (s,) = sample_containers(rows, stats, now_ms=5)
    assert s.usage.cpu_seconds == pytest.approx(300 / os.sysconf("SC_CLK_TCK"))
    assert s.start_time == rfc3339_seconds("2026-01-01T00:00:10Z") == 1767225610.0
    assert rfc3339_seconds(None) == 0.0


def test_node_status_points_metrics_server_at_the_endpoint() -> None:
    patch = node_status_patch(4321)
    assert patch == {"status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                                "daemonEndpoints": {"kubeletEndpoint": {"Port": 4321}}}}
    assert not node_needs_patch(patch["status"], 4321)
    # kwok's heartbeat stage writes its own port back; a different InternalIP also needs a patch
    assert node_needs_patch({**patch["status"], "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}, 4321)
    assert node_needs_patch({"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                             "daemonEndpoints": {"kubeletEndpoint": {"Port": 4321}}}, 4321)


def test_https_endpoint_serves_a_busy_process_groups_cpu(tmp_path: Path) -> None:
    """A real process group burning CPU, served over TLS on the port patched into the node."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
    patched: dict[str, dict] = {}
    try:
        def sampler() -> list[ContainerSample]:
            return sample_containers([("lms-cpu-0", "team-a", "busy", "triton", busy.pid, None)], read_proc(),
                                     int(time.time() * 1000))

        km = KubeletMetrics(tmp_path, sampler, lambda: [("lms-cpu-0", {})], lambda n, b: patched.__setitem__(n, b))
        km.sync()
        port = km.port("lms-cpu-0")
        assert port and patched["lms-cpu-0"] == node_status_patch(port)
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE   # metrics-server's --kubelet-insecure-tls
        time.sleep(1.0)

        def scrape() -> float:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics/resource", context=ctx, timeout=5) as r:
                assert r.headers["Content-Type"].startswith("text/plain")
                got = series(r.read().decode())
            return got['container_cpu_usage_seconds_total{container="triton",namespace="team-a",pod="busy"}'][0]

        first = scrape()
        time.sleep(1.0)
        second = scrape()
        assert first > 0.1 and second > first
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"https://127.0.0.1:{port}/other", context=ctx, timeout=5)
        km.stop()
    finally:
        busy.kill()
        busy.wait()


def test_tail_lines_keeps_the_last_lines() -> None:
    assert tail_lines(b"a\nb\nc\n", 2) == b"b\nc\n"
    assert tail_lines(b"a\nb", None) == b"a\nb" and tail_lines(b"a\nb", 0) == b""
    assert tail_lines(b"a\nb", 5) == b"a\nb"


def test_container_logs_are_served_tailed_and_followed_until_the_pod_ends(tmp_path: Path) -> None:
    log_file = tmp_path / "team-a_job.log"
    log_file.write_text("step 1\nstep 2\n")
    running = threading.Event()
    running.set()

    def pod_log(ns: str, pod: str) -> tuple[Path, bool] | None:
        return (log_file, running.is_set()) if (ns, pod) == ("team-a", "job") else None

    km = KubeletMetrics(tmp_path / "certs", lambda: [], lambda: [("lms-cpu-0", {})], lambda n, b: None, pod_log)
    km.sync()
    idle = threading.active_count()

    def settles() -> bool:  # every request's thread has ended
        deadline = time.monotonic() + 5
        while threading.active_count() > idle and time.monotonic() < deadline:
            time.sleep(0.1)
        return threading.active_count() == idle

    base = f"https://127.0.0.1:{km.port('lms-cpu-0')}/containerLogs/team-a"
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(f"{base}/job/compress?tailLines=1", context=ctx, timeout=5) as r:
            assert r.read() == b"step 2\n"
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}/other/compress", context=ctx, timeout=5)
        assert err.value.code == 404

        def finish() -> None:
            time.sleep(1.0)
            with open(log_file, "a") as fh:
                fh.write("published\n")
            time.sleep(1.0)
            running.clear()

        finisher = threading.Thread(target=finish, daemon=True)
        finisher.start()
        with urllib.request.urlopen(f"{base}/job/compress?follow=true", context=ctx, timeout=10) as r:
            assert r.read() == b"step 1\nstep 2\npublished\n"  # returns once the pod has ended

        finisher.join()
        assert settles()
        running.set()  # a quiet pod that still runs: a client that hangs up frees its follower
        with urllib.request.urlopen(f"{base}/job/compress?follow=true", context=ctx, timeout=10) as r:
            assert r.read(7) == b"step 1\n"
            assert threading.active_count() == idle + 1
        assert settles()
    finally:
        km.stop()
