"""The scale bench's phases, each returning the JSON fields it measured: the floor (no operator),
the burst of N objects until Ready, the idle window, the operator restart and the paced objects."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from lms_harness.faultproxy import ProxyProcess
from lms_harness.operator import OperatorProcess
from lms_harness.processes import wait_until
from lms_harness.scale.api import ClusterApi
from lms_harness.scale.measure import (apiserver_requests, compare_snapshots, ready_curve, request_mix,
                                       rounded_percentile, wait_quiet)
from lms_harness.scale.objects import create_all, create_paced, create_with_children, log
from lms_harness.scale.recorder import Recorder
from lms_harness.scale.report import profile_top


@dataclass
class Bench:
    """What every phase works with."""

    api: ClusterApi
    rec: Recorder
    namespace: str
    spec: dict[str, Any]


def latencies(rec: Recorder, names: list[str]) -> list[float]:
    """Object created -> its Deployment seen, for the names that have both."""
    with rec.lock:
        return [rec.deployment_seen[n] - rec.created[n] for n in names if n in rec.deployment_seen and n in rec.created]


def measure_floor(b: Bench, names: list[str], workers: int, timeout: float) -> dict[str, Any]:
    """The cluster's own share of the work: every object and its serving objects written at once by
    the bench, then the time until every Deployment has an available replica. With no operator
    running, this is a lower bound for all_ready_s on the same machine."""
    cluster0 = apiserver_requests(b.api)
    log(f"floor: creating {len(names)} LargeModelServices and applying their serving objects (no operator)")
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda name: create_with_children(b.api, b.rec, b.namespace, name, b.spec), names))
    written_s = time.monotonic() - t0
    log(f"floor: written in {written_s:.1f}s; waiting for every Deployment to be available")
    deadline, last_log = t0 + timeout, 0.0
    while len(b.rec.available) < len(names) and time.monotonic() < deadline:
        if time.monotonic() - last_log > 10:
            log(f"floor: {len(b.rec.available)}/{len(names)} Deployments available, {b.rec.pods_readied} pods readied")
            last_log = time.monotonic()
        time.sleep(0.5)
    with b.rec.lock:
        available = [b.rec.available[n] - t0 for n in names if n in b.rec.available]
    lat = latencies(b.rec, names)
    cluster = request_mix(cluster0, apiserver_requests(b.api))
    done = len(available) == len(names)
    log(f"floor: {'all' if done else len(available)} Deployments available at {max(available, default=0):.1f}s")
    return {"mode": "floor", "written_s": round(written_s, 2), "deployments_available": len(available),
            "floor_all_available_s": round(max(available), 2) if done else None,
            "apply_to_deployment_p50_s": rounded_percentile(lat, 50),
            "apply_to_deployment_p99_s": rounded_percentile(lat, 99),
            "pods_made_ready": b.rec.pods_readied, "cluster_requests_until_ready": cluster["total"],
            "cluster_requests_by_verb_resource": cluster["by_verb_resource"],
            "available_curve": ready_curve(available), "recorder_errors": b.rec.errors[:10]}


def wait_all_ready(b: Bench, operator: OperatorProcess, objects: int, deadline: float) -> float:
    """Wait until `objects` are Ready (or the deadline); returns the operator's peak RSS seen (MiB)."""
    rss_max, last_log = 0.0, 0.0
    while time.monotonic() < deadline:
        n_ready, n_deployments, n_pods = b.rec.counts()
        rss_max = max(rss_max, operator.peak_rss_mib() or 0.0)
        if n_ready >= objects:
            break
        if time.monotonic() - last_log > 10:
            log(f"{n_ready}/{objects} Ready, {n_deployments} Deployments, "
                f"{n_pods} pods readied, operator RSS peak {rss_max:.0f} MiB")
            last_log = time.monotonic()
        if not operator.running():
            raise RuntimeError(f"operator exited with {operator.proc.returncode if operator.proc else None}; "
                               f"see {operator.log_path}")
        time.sleep(0.5)
    return rss_max


def measure_burst(b: Bench, operator: OperatorProcess, proxy: ProxyProcess, names: list[str], workers: int,
                  ready_timeout: float) -> tuple[dict[str, Any], float]:
    """Create every object at once and time them to Ready; (fields, operator peak RSS)."""
    cpu0 = operator.cpu_seconds() or 0.0
    cluster0 = apiserver_requests(b.api)
    log(f"creating {len(names)} LargeModelServices")
    t0 = create_all(b.api, b.rec, b.namespace, names, workers, b.spec)
    result: dict[str, Any] = {"create_s": round(time.monotonic() - t0, 2)}
    log(f"created in {result['create_s']}s; waiting for Ready")
    rss_max = wait_all_ready(b, operator, len(names), t0 + ready_timeout)
    with b.rec.lock:
        ready = dict(b.rec.ready)
        seen = len(b.rec.deployment_seen)
        available = list(b.rec.available.values())
    stats = proxy.stats()
    cluster = request_mix(cluster0, apiserver_requests(b.api))
    lat = latencies(b.rec, names)
    result.update({
        "ready_objects": len(ready),
        "all_ready_s": round(max(ready.values()) - t0, 2) if len(ready) == len(names) else None,
        "apply_to_deployment_p50_s": rounded_percentile(lat, 50),
        "apply_to_deployment_p99_s": rounded_percentile(lat, 99),
        "apply_to_deployment_max_s": round(max(lat), 3) if lat else None,
        "deployments_seen": seen,
        "all_deployments_available_s": round(max(available) - t0, 2) if len(available) >= len(names) else None,
        "ready_curve": ready_curve([v - t0 for v in ready.values()]),
        "api_requests": stats["requests"], "http_429": stats["http_429"],
        "api_requests_by_method": stats["by_method"], "api_requests_by_agent": stats["by_agent"],
        "api_requests_by_status": stats["by_status"], "api_requests_by_resource": stats.get("by_resource"),
        "cluster_requests_until_ready": cluster["total"],
        "operator_share_of_cluster_requests": round(stats["requests"] / max(1, cluster["total"]), 3),
        "cluster_requests_by_verb_resource": cluster["by_verb_resource"],
        "operator_cpu_s_until_ready": round((operator.cpu_seconds() or 0.0) - cpu0, 1),
        "pods_made_ready": b.rec.pods_readied,
    })
    log(f"all Ready: {result['all_ready_s']}s, p99 apply->Deployment {result['apply_to_deployment_p99_s']}s, "
        f"{result['api_requests']} requests, {result['http_429']} x 429")
    return result, rss_max


def measure_idle(proxy: ProxyProcess, window: float) -> dict[str, Any]:
    """Steady state: what the operator asks of the API server when nothing changes."""
    proxy.reset()
    time.sleep(window)
    idle = proxy.stats()
    return {"idle_window_s": window, "idle_requests": idle["requests"],
            "idle_requests_per_s": round(idle["requests"] / max(1e-9, idle["uptime_s"]), 2) if "uptime_s" in idle else None,
            "idle_requests_by_method": idle["by_method"], "idle_requests_by_resource": idle.get("by_resource")}


def measure_restart(b: Bench, operator: OperatorProcess, proxy: ProxyProcess, objects: int,
                    recheck_timeout: float) -> dict[str, Any]:
    """Restart the operator: the new process must re-check every object and change nothing."""
    log("waiting for the namespace to settle before the restart")
    before = wait_quiet(b.api, b.namespace, window=5, timeout=180, log=log)
    operator.stop(40)
    result: dict[str, Any] = {}
    if operator.profile and operator.profile.is_file():
        result["profile_top"] = profile_top(operator.profile, 25)
    operator.profile = None
    operator.start(ready_timeout=None)
    proxy.reset()
    t1 = time.monotonic()
    wait_until(lambda: operator.reconciles() >= 0, 120, "restarted operator metrics endpoint", interval=0.25)
    try:
        wait_until(lambda: operator.reconciles("spec") >= objects, recheck_timeout,
                   f"the restarted operator reconciling {objects} objects", interval=0.25)
        rechecked = True
    except TimeoutError:
        rechecked = False
    result["restart_recheck_s"] = round(time.monotonic() - t1, 2) if rechecked else None
    time.sleep(3)
    stats = proxy.stats()
    result.update({"restart_api_requests": stats["requests"], "restart_api_requests_by_method": stats["by_method"],
                   "restart_api_requests_by_resource": stats.get("by_resource"), "restart_http_429": stats["http_429"]})
    diff = compare_snapshots(before, wait_quiet(b.api, b.namespace, window=5, timeout=120, log=log))
    result.update({"restart_changes": diff["changes"], "restart_diff": diff,
                   "operator_peak_rss_mib_after_restart": operator.peak_rss_mib()})
    return result


def measure_paced(b: Bench, names: list[str], rate: float) -> dict[str, Any]:
    """Latency of one object when the operator is not working through a queue of N."""
    log(f"paced: {len(names)} more objects at {rate}/s")
    create_paced(b.api, b.rec, b.namespace, names, rate, b.spec)
    try:
        wait_until(lambda: all(n in b.rec.ready for n in names), 120, "the paced objects Ready", interval=0.25)
    except TimeoutError:
        pass
    lat = latencies(b.rec, names)
    with b.rec.lock:
        to_ready = [b.rec.ready[n] - b.rec.created[n] for n in names if n in b.rec.ready]
    return {"objects": len(names), "rate_per_s": rate, "ready": len(to_ready),
            "apply_to_deployment_p50_s": rounded_percentile(lat, 50),
            "apply_to_deployment_p99_s": rounded_percentile(lat, 99),
            "apply_to_ready_p99_s": rounded_percentile(to_ready, 99)}
