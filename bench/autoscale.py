"""Autoscaling benchmark: examples/minilm-autoscale.yaml in the sandbox with Prometheus and KEDA
(`make sandbox AUTOSCALING=1`), under closed-loop load from `lms bench`'s generator through the
Service.

1. One replica, saturated: maxReplicas 1 and the load for --saturate seconds; its p99.
2. Scale-up: maxReplicas 3 and the same load for --load seconds; when the HPA first asks for a
   second replica, when it is ready, the p99 once the replica count has settled.
3. Scale-down: the load stops; time until one ready replica.
4. Scale to zero: minReplicas 0; time until none; then minReplicas 1 again and the time until
   the first answer.

Every request's outcome is kept; failed requests are counted in every phase. Writes
bench/results/autoscale.json and autoscale.png (replicas, queue time, p99 over time).

    .venv/bin/python bench/autoscale.py [--concurrency 16] [--sequence-length 128] [--load 150] [--saturate 45] [--keep]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "harness"))

from lms_harness.autoscaling import prometheus_value  # noqa: E402
from lms_harness.processes import wait_until  # noqa: E402
from lms_harness.timeline import BackgroundLoad, Timeline, p99_ms  # noqa: E402

EXAMPLE = ROOT / "examples" / "minilm-autoscale.yaml"
RESULTS = ROOT / "bench" / "results"
NAMESPACE = "default"
NAME = "minilm-autoscale"
SERVER = f"{NAME}-triton"
TARGETS = {"second_ready_within_s": 60, "failed_requests": 0, "p99_after_over_saturated_max": 0.6}


def log(msg: str) -> None:
    print(f"[autoscale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Sandbox:
    """`make sandbox AUTOSCALING=1` and the API clients for it."""

    def __init__(self) -> None:
        out = subprocess.run([str(ROOT / "sandbox" / "up.sh")], env={**os.environ, "AUTOSCALING": "1"},
                             capture_output=True, text=True, timeout=3600)
        if out.returncode != 0:
            raise SystemExit(f"sandbox/up.sh failed:\n{out.stderr[-3000:]}")
        self.kubeconfig = out.stdout.strip().splitlines()[-1]
        env = (ROOT / ".sandbox" / "autoscaling" / "autoscaling.env").read_text()
        self.prometheus = dict(line.split("=", 1) for line in env.splitlines() if "=" in line)["LMS_PROMETHEUS_ADDRESS"]
        self.bin_dir = subprocess.run([str(ROOT / "tools" / "build.sh")], capture_output=True, text=True,
                                      check=True).stdout.strip().splitlines()[-1]
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=self.kubeconfig)
        self.apps, self.hpas, self.core = client.AppsV1Api(api), client.AutoscalingV2Api(api), client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def kubectl(self, *args: str, input: str | None = None) -> str:
        done = subprocess.run([f"{self.bin_dir}/kubectl", "--kubeconfig", self.kubeconfig, *args], input=input,
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def autoscaling(self, **fields: Any) -> None:
        self.kubectl("patch", "lms", NAME, "-n", NAMESPACE, "--type=merge", "-p",
                     json.dumps({"spec": {"autoscaling": fields}}))

    def replicas(self) -> tuple[int, int]:
        dep = self.apps.read_namespaced_deployment(SERVER, NAMESPACE)
        return int(dep.spec.replicas or 0), int(dep.status.ready_replicas or 0)

    def lms_status(self) -> dict[str, Any]:
        obj = self.custom.get_namespaced_custom_object("serving.lms.dev", "v1alpha1", NAMESPACE, "largemodelservices", NAME)
        return dict(obj.get("status") or {})

    def grpc(self) -> str:
        return str(wait_until(lambda: (self.core.read_namespaced_service(SERVER, NAMESPACE).metadata.annotations
                                       or {}).get("sandbox.lms.dev/grpc"), 60, "the Service proxy's grpc address"))


def ready_replicas(sb: Sandbox, count: int, timeout: float, what: str) -> float:
    start = time.time()
    wait_until(lambda: sb.replicas() == (count, count), timeout, what, 1.0)
    return time.time() - start


def settle(sb: Sandbox, query: str) -> None:
    """One ready replica and no queue left in the rate window, so phases do not overlap."""
    ready_replicas(sb, 1, 600, "one ready replica")
    wait_until(lambda: (prometheus_value(sb.prometheus, query) or 0.0) < 1.0, 180, "an empty queue", 2.0)


def windows(records: list[Any], start: float, end: float, step: float = 5.0) -> list[dict[str, Any]]:
    """p99 and failures per `step` seconds, for the plot."""
    rows, t = [], start
    while t < end:
        p99 = p99_ms(records, t, t + step)
        failed = sum(1 for r in records if not r.ok and t <= r.start < t + step)
        rows.append({"t": round(t - start, 1), "p99_ms": None if p99 is None else round(p99, 1), "failed": failed})
        t += step
    return rows


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples, p99 = result["timeline"], result["p99_windows"]
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    t = [s["t"] for s in samples]
    axes[0].step(t, [s["replicas"] for s in samples], where="post", label="asked (spec.replicas)")
    axes[0].step(t, [s["ready"] for s in samples], where="post", label="ready")
    axes[0].set_ylabel("replicas")
    axes[0].legend(loc="upper right")
    axes[1].plot(t, [None if s["queue_us"] is None else s["queue_us"] / 1000 for s in samples])
    axes[1].axhline(result["target_queue_us"] / 1000, linestyle="--", color="grey", label="target")
    axes[1].set_ylabel("queue ms / request")
    axes[1].legend(loc="upper right")
    axes[2].plot([w["t"] for w in p99], [w["p99_ms"] for w in p99], marker=".")
    axes[2].set_ylabel("client p99 ms (5 s)")
    axes[2].set_xlabel("seconds since the load started")
    for ax in axes:
        ax.axvline(result["load_s"], color="red", linestyle=":")
    fig.suptitle(f"{NAME}: KEDA on Triton queue time, load {result['concurrency']} concurrent")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--sequence-length", type=int, default=128)
    ap.add_argument("--load", type=float, default=150.0, help="seconds of load in the scale-up phase")
    ap.add_argument("--saturate", type=float, default=45.0, help="seconds of load on one replica")
    ap.add_argument("--keep", action="store_true", help="leave the resource applied")
    args = ap.parse_args()

    log("sandbox with Prometheus and KEDA (sandbox/up.sh, AUTOSCALING=1)")
    sb = Sandbox()
    sb.kubectl("apply", "-n", NAMESPACE, "-f", str(EXAMPLE))
    sb.autoscaling(minReplicas=1, maxReplicas=1)
    log("waiting for Ready (compression, then serving)")
    wait_until(lambda: sb.lms_status().get("phase") == "Ready", 1800, f"{NAME} Ready", 2.0)
    scaled = sb.custom.get_namespaced_custom_object("keda.sh", "v1alpha1", NAMESPACE, "scaledobjects", SERVER)
    trigger = scaled["spec"]["triggers"][0]["metadata"]
    query, target = trigger["query"], float(trigger["threshold"])
    settle(sb, query)
    url = sb.grpc()
    load_args = {"concurrency": args.concurrency, "sequence_length": args.sequence_length}

    log(f"phase 1: one replica, {args.saturate:.0f} s of load")
    load = BackgroundLoad(url, NAME, **load_args).start()
    time.sleep(args.saturate)
    one = load.stop()
    p99_one = p99_ms(one.records, load.started + 10, load.started + args.saturate)
    settle(sb, query)

    log(f"phase 2: maxReplicas 3, {args.load:.0f} s of load")
    sb.autoscaling(maxReplicas=3)
    timeline = Timeline(sb.apps, sb.hpas, NAMESPACE, SERVER, f"keda-hpa-{SERVER}", sb.prometheus, query)
    with timeline:
        load = BackgroundLoad(url, NAME, **load_args).start()
        time.sleep(args.load)
        run = load.stop()
        load_end = timeline.now()
        log("phase 3: load stopped, waiting for one replica")
        scale_down_s = ready_replicas(sb, 1, 600, "one replica after the load")
        log("phase 4: minReplicas 0")
        sb.autoscaling(minReplicas=0)
        zero_start = time.time()
        wait_until(lambda: sb.replicas()[0] == 0, 600, "zero replicas", 1.0)
        to_zero_s = time.time() - zero_start
        sb.autoscaling(minReplicas=1)
        wake_start = time.time()
        wait_until(lambda: sb.replicas()[1] >= 1, 600, "a replica after zero", 0.5)
        wake = BackgroundLoad(url, NAME, concurrency=1, sequence_length=args.sequence_length).start()
        time.sleep(3)
        first = wake.stop()
        first_answer_s = (min(r.start + r.latency_s for r in first.records if r.ok) - wake_start
                          if any(r.ok for r in first.records) else None)

    start = load.started - timeline.start
    decision = timeline.first(lambda s: (s.desired or 0) >= 2 or s.replicas >= 2, after=start)
    second = timeline.first(lambda s: s.ready >= 2, after=start)
    peak = max(s.ready for s in timeline.samples if start <= s.t <= load_end)
    settled = timeline.first(lambda s: s.ready >= peak, after=start) or load_end
    p99_after = p99_ms(run.records, timeline.start + settled + 10, timeline.start + load_end)
    failed = one.level.errors + run.level.errors + first.level.errors
    result: dict[str, Any] = {
        "model": NAME, "concurrency": args.concurrency, "sequence_length": args.sequence_length,
        "target_queue_us": target, "query": query,
        "load_start_to_scale_decision_s": None if decision is None else round(decision - start, 1),
        "load_start_to_second_ready_s": None if second is None else round(second - start, 1),
        "p99_ms_one_replica_saturated": None if p99_one is None else round(p99_one, 1),
        "p99_ms_after_scale_up": None if p99_after is None else round(p99_after, 1),
        "max_replicas": peak,
        "scale_down_s": round(scale_down_s, 1),
        "scale_to_zero_s": round(to_zero_s, 1),
        "zero_to_first_answer_s": None if first_answer_s is None else round(first_answer_s, 1),
        "failed_requests": failed,
        "requests": {"one_replica": one.level.requests, "scale_up": run.level.requests, "after_zero": first.level.requests},
        "errors": {**one.errors, **run.errors, **first.errors},
        "load_s": round(load_end - start, 1),
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg(), "python": platform.python_version()},
    }
    second_s = result["load_start_to_second_ready_s"]
    result["targets"] = {
        "second_ready_within_60s": second_s is not None and second_s <= TARGETS["second_ready_within_s"],
        "no_failed_requests": failed == TARGETS["failed_requests"],
        "p99_after_scale_up_at_most_0.6x": (p99_one is not None and p99_after is not None
                                            and p99_after <= TARGETS["p99_after_over_saturated_max"] * p99_one),
    }
    result["timeline"] = [{**row, "t": round(row["t"] - start, 2)} for row in timeline.as_rows()]
    result["p99_windows"] = windows(run.records, load.started, load.started + load_end - start)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "autoscale.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, RESULTS / "autoscale.png")
    summary = {k: v for k, v in result.items() if k not in ("timeline", "p99_windows", "query")}
    print(json.dumps(summary, indent=2))
    if not args.keep:
        sb.kubectl("delete", "lms", NAME, "-n", NAMESPACE, "--wait=false")
    return 0 if all(result["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
