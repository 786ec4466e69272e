#!/usr/bin/env python3
"""The operator at N LargeModelServices (default 1000) on a local control plane with kwok nodes.

Every object's version is already published (one real `lms compress` output, hard-linked into
each object's version folder under the repository root the operator reads), so no compression
runs: the operator goes straight to the Triton Deployment, Service, HPA and PDB.

The cluster comes from the sandbox's scripts (tools/build.sh, sandbox/cluster.sh), without the
pod runner. kwok's stages in sandbox/kwok.yaml leave the project's CPU-pool pods to the pod
runner, so this bench marks those pods Running/Ready itself (a status patch per pod, what kwok's
pod-ready stage would write). Extra kwok nodes give the CPU pool room for N pods.

The operator talks to the API server through lms_harness.faultproxy (no faults armed), which counts
its requests and any HTTP 429. Measured:
  all_ready_s                 first create -> last object with status.phase Ready
  apply_to_deployment_p50/p99 object created (create call answered) -> its Deployment seen (watch)
  operator_peak_rss_mib       VmHWM of the operator process (/proc)
  api_requests, http_429      requests the operator made until all were Ready
  idle_requests_per_s         the operator's request rate once everything is Ready (resync sweep)
  restart_recheck_s           operator restarted -> it has reconciled all N (its reconcile counter)
  restart_changes             objects (LMS + children) the restarted operator created or changed
  cluster_requests_until_ready  every client's requests (the API server's own counter), for the
                              operator's share of the API server's work
  paced.*                     apply->Deployment and ->Ready for objects created one by one at
                              --paced-rate after the burst: one object's latency without a queue
Results go to bench/results/scale.json.

With --floor no operator runs: the bench creates the same objects and server-side applies each
one's Deployment, Service, HPA and PDB itself (the operator's writes, without its reads, status
writes or queue), then times until every Deployment has an available replica. That is the
cluster's own share of the work on this machine, a lower bound for all_ready_s; results go to
bench/results/scale_floor.json.

Usage: bench/scale.py [--objects 1000] [--floor] [--keep] [--profile]
The parts live in the harness (harness/lms_harness/scale/); this file wires the phases together.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lms_harness.cluster import cluster_down, tools_bin
from lms_harness.faultproxy import ProxyProcess
from lms_harness.operator import OperatorProcess
from lms_harness.ports import free_port
from lms_harness.processes import wait_until
from lms_harness.scale.api import ClusterApi
from lms_harness.scale.objects import defaulted_spec, log, publish_copies, template_version
from lms_harness.scale.phases import (Bench, measure_burst, measure_floor, measure_idle, measure_paced,
                                      measure_restart)
from lms_harness.scale.recorder import Recorder
from lms_harness.scale.report import machine, targets, write_result
from lms_harness.scale.setup import fresh_namespace, prepare_cluster

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "scale.json"
FLOOR_OUT = ROOT / "bench" / "results" / "scale_floor.json"
OPERATOR_USER = "system:serviceaccount:lms-system:lms-operator"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="The operator at N LargeModelServices on a local kwok cluster.")
    p.add_argument("--objects", type=int, default=1000)
    p.add_argument("--namespace", default="scale")
    p.add_argument("--cluster-name", default="lms-scale")
    p.add_argument("--out", type=Path, help=f"default {DEFAULT_OUT.relative_to(ROOT)} ({FLOOR_OUT.relative_to(ROOT)} with --floor)")
    p.add_argument("--floor", action="store_true",
                   help="no operator: the bench writes every object's serving objects itself and times the cluster alone")
    p.add_argument("--ready-timeout", type=float, default=900)
    p.add_argument("--recheck-timeout", type=float, default=600)
    p.add_argument("--idle-window", type=float, default=65, help="seconds to count requests once all are Ready")
    p.add_argument("--create-workers", type=int, default=8)
    p.add_argument("--paced", type=int, default=60, help="objects created one by one at the end, at --paced-rate")
    p.add_argument("--paced-rate", type=float, default=2.0, help="objects per second of the paced phase")
    p.add_argument("--resync-seconds", type=float, default=60.0, help="the operator's --resync-seconds")
    p.add_argument("--profile", action="store_true", help="run the first operator under cProfile; top functions in the JSON")
    p.add_argument("--keep", action="store_true", help="leave the cluster running afterwards")
    args = p.parse_args(argv)
    args.out = args.out or (FLOOR_OUT if args.floor else DEFAULT_OUT)
    return args


@dataclass
class Run:
    """One bench run: its folder, cluster and the processes to stop at the end."""

    args: argparse.Namespace
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="lms-scale-")))
    bin_dir: str = ""
    rec: Recorder | None = None
    operator: OperatorProcess | None = None
    proxy: ProxyProcess | None = None
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.work / "kubeconfig"

    def close(self) -> None:
        """Stop what this run started; delete the cluster unless --keep."""
        if self.rec is not None:
            self.rec.close()
        if self.operator is not None:
            self.operator.stop(40)
        if self.proxy is not None:
            self.proxy.stop()
        if not self.args.keep:
            cluster_down(self.args.cluster_name, self.bin_dir or None)
            log(f"cluster {self.args.cluster_name} deleted; logs in {self.work}")
        else:
            log(f"cluster {self.args.cluster_name} kept; kubeconfig {self.kubeconfig}; logs in {self.work}")


def prepare(run: Run) -> tuple[Bench, list[str], list[str], Path]:
    """Cluster, namespace, published versions and the recorder: (bench, names, paced names, repository root)."""
    args = run.args
    template = template_version(run.work)
    log(f"template version {template}")
    kubectl = prepare_cluster(args.cluster_name, run.kubeconfig, run.bin_dir, run.work, args.objects, run.result)
    api = ClusterApi(run.kubeconfig)
    fresh_namespace(api, kubectl, args.namespace)
    names = [f"m-{i:04d}" for i in range(args.objects)]
    paced_names = [f"p-{i:04d}" for i in range(args.paced)]
    repo_root = run.work / "repository"
    t = time.monotonic()
    spec = defaulted_spec(api, args.namespace)
    publish_copies(template, repo_root, args.namespace, names + paced_names, spec)
    log(f"published {len(names)} version folders (hard links) in {time.monotonic() - t:.1f}s")
    run.rec = Recorder(api, args.namespace)
    run.rec.start()
    time.sleep(1)
    return Bench(api, run.rec, args.namespace, spec), names, paced_names, repo_root


def start_operator(run: Run, repo_root: Path) -> OperatorProcess:
    """The fault proxy (impersonating the operator's ServiceAccount) and the operator behind it."""
    args = run.args
    run.proxy = ProxyProcess(run.kubeconfig, run.work / "kubeconfig.proxy", run.work / "proxy.log", OPERATOR_USER)
    run.operator = OperatorProcess(run.proxy.kubeconfig, run.work / "operator.log", (args.namespace,), repo_root,
                                   metrics_port=free_port(), liveness_port=0, resync_seconds=args.resync_seconds,
                                   standalone=True, profile=run.work / "operator.prof" if args.profile else None)
    run.operator.start(ready_timeout=None)
    wait_until(lambda: run.operator is not None and run.operator.reconciles() >= 0, 120, "operator metrics endpoint",
               interval=0.25)
    time.sleep(2)
    run.proxy.reset()
    return run.operator


def run_with_operator(run: Run, bench: Bench, names: list[str], paced_names: list[str], repo_root: Path) -> None:
    """Burst, idle window, restart and paced phase, in that order; fills run.result."""
    args, result = run.args, run.result
    operator = start_operator(run, repo_root)
    assert run.proxy is not None
    burst, rss_max = measure_burst(bench, operator, run.proxy, names, args.create_workers, args.ready_timeout)
    result.update(burst)
    result.update(measure_idle(run.proxy, args.idle_window))
    rss_max = max(rss_max, operator.peak_rss_mib() or 0.0)
    result["operator_peak_rss_mib"] = rss_max
    result.update(measure_restart(bench, operator, run.proxy, args.objects, args.recheck_timeout))
    if paced_names:
        result["paced"] = measure_paced(bench, paced_names, args.paced_rate)
    result["recorder_errors"] = bench.rec.errors[:10]
    result["targets"] = targets(result, rss_max)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.objects < 1:
        print("scale: --objects must be >= 1", file=sys.stderr)
        return 2

    def interrupted(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")  # run the clean-up below

    signal.signal(signal.SIGTERM, interrupted)
    run = Run(args)
    run.result.update({"benchmark": "scale", "objects": args.objects,
                       "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(),
                       "pods_made_ready_by": "bench/scale.py (kwok stages leave project CPU-pool pods to the pod "
                                             "runner, which is not started)"})
    try:
        run.bin_dir = tools_bin()
        bench, names, paced_names, repo_root = prepare(run)
        if args.floor:
            run.result.update(measure_floor(bench, names, args.create_workers, args.ready_timeout))
        else:
            run_with_operator(run, bench, names, paced_names, repo_root)
        run.result["load_average"] = os.getloadavg()
        write_result(args.out, run.result)
        log(f"wrote {args.out}" + ("" if args.floor else f": {json.dumps(run.result['targets'])}"))
        return 0 if not args.floor or run.result["floor_all_available_s"] is not None else 1
    except (Exception, KeyboardInterrupt) as exc:
        log(f"failed: {type(exc).__name__}: {exc}")
        run.result["error"] = f"{type(exc).__name__}: {exc}"[:500]
        run.result["work_dir"] = str(run.work)
        print(json.dumps(run.result, indent=1))
        return 1
    finally:
        run.close()


if __name__ == "__main__":
    sys.exit(main())
