#!/usr/bin/env python3
"""The operator at N LargeModelServices (default 1000) on a local control plane with kwok nodes.

Every object's version is already published (one real `lms compress` output, hard-linked into
each object's version folder under the repository root the operator reads), so no compression
runs: the operator goes straight to the Triton Deployment, Service, HPA and PDB.

The cluster comes from the sandbox's scripts (tools/build.sh, sandbox/cluster.sh), without the
pod runner. kwok's stages in sandbox/kwok.yaml leave the project's CPU-pool pods to the pod
runner, so this bench marks those pods Running/Ready itself (a status patch per pod, what kwok's
pod-ready stage would write). Extra kwok nodes give the CPU pool room for N pods.

The operator talks to the API server through bench/faultproxy.py (no faults armed), which counts
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
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lms_sandbox.podrunner import kill_group

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
DEFAULT_OUT = ROOT / "bench" / "results" / "scale.json"
FLOOR_OUT = ROOT / "bench" / "results" / "scale_floor.json"
CACHE = Path(os.environ.get("LMS_CACHE", Path.home() / ".cache" / "lms"))
TEACHER = ROOT / "examples" / "models" / "digits-teacher" / "model.pt"
GROUP, VERSION, PLURAL = "serving.lms.dev", "v1alpha1", "largemodelservices"
CLAIM = "lms-models"
OPERATOR_USER = "system:serviceaccount:lms-system:lms-operator"
CHILD_KINDS = (("apps/v1", "deployments"), ("v1", "services"), ("autoscaling/v2", "horizontalpodautoscalers"),
               ("policy/v1", "poddisruptionbudgets"), ("batch/v1", "jobs"))


def log(msg: str) -> None:
    """Progress on stderr."""
    print(f"scale [{time.strftime('%H:%M:%S')}]: {msg}", file=sys.stderr, flush=True)


# -- pure helpers -------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    import math

    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100.0 * len(ordered))))
    return ordered[rank - 1]


def ready_curve(ready_at: list[float], points: int = 200) -> list[list[float]]:
    """[[seconds, objects ready]] at up to `points` evenly spaced counts (for the plot)."""
    ordered = sorted(ready_at)
    if not ordered:
        return []
    step = max(1, len(ordered) // points)
    curve = [[round(t, 3), i + 1] for i, t in enumerate(ordered) if (i + 1) % step == 0]
    if curve[-1][1] != len(ordered):
        curve.append([round(ordered[-1], 3), len(ordered)])
    return [[0.0, 0]] + curve


def manifest(name: str, namespace: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """One scale object: the digits example with an absolute model URI and the shared claim.

    `spec` replaces the default spec (the API server's defaulted copy, so that version keys
    computed here match the operator's)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "LargeModelService",
        "metadata": {"name": name, "namespace": namespace, "labels": {"bench": "scale"}},
        "spec": spec or {
            "model": {"uri": f"file://{TEACHER}", "format": "torchscript", "task": "tabular-classification"},
            "compression": {"distillation": {"studentLayers": 1, "temperature": 4.0, "alpha": 0.5, "epochs": 30, "seed": 0},
                            "quantization": {"mode": "dynamic", "perChannel": True},
                            "qualityGate": {"metric": "accuracy", "min": 0.9, "samples": 256}},
            "serving": {"device": "cpu", "nodePool": {"nodeSelector": {"lms.dev/pool": "cpu"}},
                        "resources": {"cpu": "100m", "memory": "256Mi"}, "maxBatchSize": 64},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
            "repository": {"pvc": CLAIM},
        },
    }


def scale_node(i: int, pods: int) -> dict[str, Any]:
    """An extra kwok CPU-pool node (same labels as sandbox/nodes.yaml's CPU pool)."""
    name = f"lms-scale-cpu-{i}"
    cap = {"cpu": "256", "memory": "1Ti", "pods": str(pods)}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                         "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                    "kubernetes.io/arch": "amd64", "type": "kwok", "lms.dev/pool": "cpu"}},
            "spec": {"taints": []}, "status": {"allocatable": cap, "capacity": cap}}


def operator_fields_time(obj: dict[str, Any]) -> str | None:
    """Latest managedFields time of the operator's field manager (what its writes touched)."""
    times = [m.get("time") or "" for m in (obj.get("metadata") or {}).get("managedFields") or []
             if m.get("manager") == "lms-operator"]
    return max(times) if times else None


def fingerprint(obj: dict[str, Any]) -> tuple[str, int, str | None]:
    """(resourceVersion, generation, operator write time) of an object."""
    meta = obj.get("metadata") or {}
    return meta.get("resourceVersion", ""), int(meta.get("generation") or 0), operator_fields_time(obj)


def compare_snapshots(before: dict[str, tuple[str, int, str | None]],
                      after: dict[str, tuple[str, int, str | None]]) -> dict[str, Any]:
    """Objects created, deleted, re-generated or written by the operator between two snapshots."""
    created = sorted(set(after) - set(before))
    deleted = sorted(set(before) - set(after))
    common = set(before) & set(after)
    regenerated = sorted(k for k in common if before[k][1] != after[k][1])
    operator_writes = sorted(k for k in common if before[k][2] != after[k][2])
    rv_changed = sorted(k for k in common if before[k][0] != after[k][0])
    # only the operator (and kopf inside it) writes LargeModelServices; children also get status
    # writes from Kubernetes controllers, so for them only generation and operator-owned fields count
    lms_written = sorted(k for k in rv_changed if k.startswith("LargeModelService/"))
    changed = sorted(set(created) | set(deleted) | set(regenerated) | set(operator_writes) | set(lms_written))
    return {"changes": len(changed), "created": created[:20], "deleted": deleted[:20],
            "generation_changed": regenerated[:20], "operator_field_writes": operator_writes[:20],
            "lms_written": lms_written[:20],
            "resource_version_changed": len(rv_changed), "examples_rv_changed": rv_changed[:10]}


def parse_prometheus(text: str, metric: str, label: str = "") -> float:
    """Sum of the samples of `metric` whose labels contain `label` (e.g. 'trigger="spec"')."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(metric) and line[len(metric):len(metric) + 1] in (" ", "{") and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- processes ----------------------------------------------------------------------------------

def run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 600, check_rc: bool = True,
        **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise with the tail of its stderr."""
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, **kw)
    if check_rc and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])}... failed ({done.returncode}): {done.stderr[-2000:]}")
    return done


def peak_rss_mib(pid: int) -> float | None:
    """VmHWM (peak resident set) of a live process, MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class Operator:
    """`lms operator` for one namespace, reading the repository root, through the proxy."""

    def __init__(self, kubeconfig: Path, namespace: str, repo_root: Path, metrics_port: int, log_path: Path,
                 profile: Path | None, resync: float) -> None:
        self.metrics_port = metrics_port
        cmd = [str(VENV_BIN / "python")]
        if profile:
            cmd += ["-m", "cProfile", "-o", str(profile)]
        cmd += ["-m", "lms_operator.cli", "operator", "--namespace", namespace, "--repository-root", str(repo_root),
                "--metrics-port", str(metrics_port), "--liveness-port", "0", "--standalone",
                "--resync-seconds", str(resync)]
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.rss_samples: list[float] = []

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def reconciles(self, trigger: str = "") -> float:
        """Reconcile passes finished since this process started (one trigger, or all)."""
        return parse_prometheus(self.metrics(), "lms_operator_reconciles_total",
                                f'trigger="{trigger}"' if trigger else "")

    def peak_rss(self) -> float | None:
        return peak_rss_mib(self.proc.pid)

    def stop(self) -> None:
        kill_group(self.proc, 40)
        self.log.close()


# -- the API side -------------------------------------------------------------------------------

class Api:
    """Raw JSON access with the bench's own (admin) identity, straight to the API server."""

    def __init__(self, kubeconfig: Path) -> None:
        from kubernetes import client, config

        self.client = config.new_client_from_config(config_file=str(kubeconfig))
        self.client.configuration.connection_pool_maxsize = 32
        self.client.rest_client.pool_manager.connection_pool_kw["maxsize"] = 32
        self.core = client.CoreV1Api(self.client)
        self.custom = client.CustomObjectsApi(self.client)

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                query: str = "", timeout: float = 60, stream: bool = False) -> Any:
        """One request; JSON answer (or the raw response when stream=True)."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        serialized = self.client.param_serialize(method, path + (("?" + query) if query else ""),
                                                 header_params=headers, auth_settings=["BearerToken"])
        url, headers = serialized[1], serialized[2]
        data = json.dumps(body).encode() if body is not None else None
        resp = self.client.rest_client.pool_manager.request(method, url, body=data, headers=headers,
                                                            preload_content=not stream, timeout=timeout)
        if stream:
            return resp
        if not 200 <= resp.status < 300:
            raise RuntimeError(f"{method} {path}: {resp.status} {resp.data[:300]!r}")
        return json.loads(resp.data) if resp.data else None

    def list(self, path: str, query: str = "") -> dict[str, Any]:
        return self.request("GET", path, query=query, timeout=120)  # type: ignore[no-any-return]

    def watch(self, path: str, query: str, stop: threading.Event) -> Iterator[tuple[float, dict[str, Any]]]:
        """(arrival time, event) for a collection, re-listing nothing: starts at the current state."""
        rv = self.list(path, query + ("&" if query else "") + "limit=1")["metadata"]["resourceVersion"]
        while not stop.is_set():
            q = f"{query}{'&' if query else ''}watch=1&allowWatchBookmarks=true&timeoutSeconds=60&resourceVersion={rv}"
            resp = self.request("GET", path, query=q, timeout=90, stream=True)
            buf = b""
            try:
                for chunk in resp.stream(65536, decode_content=True):
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        if not line.strip():
                            continue
                        ev = json.loads(line)
                        obj = ev.get("object") or {}
                        if ev.get("type") == "ERROR":
                            rv = self.list(path, query + ("&" if query else "") + "limit=1")["metadata"]["resourceVersion"]
                            break
                        rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                        if ev.get("type") != "BOOKMARK":
                            yield time.monotonic(), ev
                    if stop.is_set():
                        return
            finally:
                resp.release_conn()


def ns_path(namespace: str, api_version: str, plural: str) -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{prefix}/namespaces/{namespace}/{plural}"


class Recorder:
    """Watches LMS objects, Deployments and project pods; marks the pods Ready (the bench's kubelet)."""

    def __init__(self, api: Api, namespace: str) -> None:
        self.api, self.ns = api, namespace
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.created: dict[str, float] = {}          # name -> create call answered
        self.deployment_seen: dict[str, float] = {}  # lms name -> first Deployment event
        self.ready: dict[str, float] = {}            # lms name -> first status.phase Ready
        self.available: dict[str, float] = {}        # lms name -> its Deployment's first available replica
        self.phases: dict[str, str] = {}
        self.pods_readied = 0
        self.pod_errors = 0
        self.pool = ThreadPoolExecutor(max_workers=6, thread_name_prefix="kubelet")
        self.submitted: set[str] = set()
        self.threads = [threading.Thread(target=self._guard, args=(f,), daemon=True)
                        for f in (self._watch_lms, self._watch_deployments, self._watch_pods, self._sweep_pods)]
        self.errors: list[str] = []

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def close(self) -> None:
        self.stop.set()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _guard(self, fn: Callable[[], None]) -> None:
        while not self.stop.is_set():
            try:
                fn()
            except Exception as exc:  # a dropped watch is restarted; the error is kept for the report
                if not self.stop.is_set():
                    self.errors.append(f"{fn.__name__}: {type(exc).__name__}: {exc}"[:300])
                    time.sleep(0.5)

    def _watch_lms(self) -> None:
        for t, ev in self.api.watch(f"/apis/{GROUP}/{VERSION}/namespaces/{self.ns}/{PLURAL}", "", self.stop):
            obj = ev["object"]
            name = obj["metadata"]["name"]
            phase = (obj.get("status") or {}).get("phase") or ""
            with self.lock:
                self.phases[name] = phase
                if phase == "Ready" and name not in self.ready:
                    self.ready[name] = t

    def _watch_deployments(self) -> None:
        for t, ev in self.api.watch(ns_path(self.ns, "apps/v1", "deployments"), "", self.stop):
            labels = (ev["object"].get("metadata") or {}).get("labels") or {}
            owner = labels.get("app.kubernetes.io/instance")
            if owner:
                with self.lock:
                    self.deployment_seen.setdefault(owner, t)
                    if int((ev["object"].get("status") or {}).get("availableReplicas") or 0) > 0:
                        self.available.setdefault(owner, t)

    POD_QUERY = "labelSelector=app.kubernetes.io%2Fpart-of%3Dlms"

    def _watch_pods(self) -> None:
        for _, ev in self.api.watch(ns_path(self.ns, "v1", "pods"), self.POD_QUERY, self.stop):
            if ev["type"] != "DELETED":
                self._consider(ev["object"])

    def _sweep_pods(self) -> None:
        """A missed watch event must not leave a pod unready forever: look at all of them now and then."""
        self.stop.wait(20)
        for pod in self.api.list(ns_path(self.ns, "v1", "pods"), self.POD_QUERY)["items"]:
            self._consider(pod)

    def _consider(self, pod: dict[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp") or not (pod.get("spec") or {}).get("nodeName"):
            return
        if any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or []):
            return
        with self.lock:
            if meta.get("uid") in self.submitted:
                return
            self.submitted.add(meta.get("uid"))
        self.pool.submit(self._make_ready, pod)

    def _make_ready(self, pod: dict[str, Any]) -> None:
        """What a kubelet (or kwok's pod-ready stage) writes once the containers run."""
        meta, spec = pod["metadata"], pod["spec"]
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        n = abs(hash(meta["name"])) % 65000
        conds = [{"type": t, "status": "True", "lastTransitionTime": now}
                 for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]
        status = {"phase": "Running", "podIP": f"10.{n // 250 % 250}.{n % 250}.{7}", "hostIP": "10.255.0.1",
                  "startTime": now, "conditions": conds,
                  "containerStatuses": [{"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": True,
                                         "started": True, "restartCount": 0, "state": {"running": {"startedAt": now}}}
                                        for c in spec.get("containers", [])]}
        try:
            self.api.request("PATCH", f"{ns_path(self.ns, 'v1', 'pods')}/{meta['name']}/status",
                             {"status": status}, content_type="application/strategic-merge-patch+json")
            with self.lock:
                self.pods_readied += 1
        except Exception:  # the pod may be gone (its replacement gets its own event); else the sweep retries
            with self.lock:
                self.pod_errors += 1
                self.submitted.discard(meta.get("uid"))


def snapshot(api: Api, namespace: str) -> dict[str, tuple[str, int, str | None]]:
    """Fingerprints of every LMS and child object in the namespace."""
    out: dict[str, tuple[str, int, str | None]] = {}
    for item in api.list(f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}")["items"]:
        out[f"LargeModelService/{item['metadata']['name']}"] = fingerprint(item)
    for api_version, plural in CHILD_KINDS:
        for item in api.list(ns_path(namespace, api_version, plural))["items"]:
            out[f"{plural}/{item['metadata']['name']}"] = fingerprint(item)
    return out


def wait_quiet(api: Api, namespace: str, window: float, timeout: float) -> dict[str, tuple[str, int, str | None]]:
    """Snapshot once nothing in the namespace changed for `window` seconds (controllers settled)."""
    deadline = time.monotonic() + timeout
    last = snapshot(api, namespace)
    while time.monotonic() < deadline:
        time.sleep(window)
        now = snapshot(api, namespace)
        if now == last:
            return now
        last = now
    log(f"namespace {namespace} did not settle within {timeout:.0f}s; comparing anyway")
    return last


# -- set-up --------------------------------------------------------------------------------------

def tools_bin() -> str:
    return run([str(ROOT / "tools" / "build.sh")], timeout=7200).stdout.strip().splitlines()[-1]


def template_version(work: Path) -> Path:
    """One real published version of the scale spec (`lms compress`, cached between runs)."""
    from lms_operator.api.spec import parse_spec
    from lms_operator.api.version import version_key
    from lms_operator.modelrepo.layout import is_complete, version_dir

    doc = manifest("tmpl", "scale")
    key = version_key(parse_spec(doc))
    out = CACHE / "scale-template"
    folder = version_dir(out, "scale", "tmpl", key)
    if not is_complete(folder):
        log("publishing the template version with lms compress (once; cached in ~/.cache/lms/scale-template)")
        work.mkdir(parents=True, exist_ok=True)
        run([str(VENV_BIN / "lms"), "compress", "--spec-json", json.dumps(doc), "--out", str(out)], timeout=1200,
            cwd=str(work))
    return folder


def publish_copies(template: Path, repo_root: Path, namespace: str, names: list[str], spec: dict[str, Any]) -> None:
    """Each object's version folder: model files hard-linked, config.pbtxt renamed, marker last."""
    from lms_operator.api.spec import parse_spec
    from lms_operator.api.version import version_key
    from lms_operator.modelrepo.layout import COMPLETE_MARKER, version_dir

    model_src = template / "tmpl"
    config = (model_src / "config.pbtxt").read_text()
    claim_root = repo_root / namespace / CLAIM
    for name in names:
        dest = version_dir(claim_root, namespace, name, version_key(parse_spec(manifest(name, namespace, spec))))
        if (dest / COMPLETE_MARKER).is_file():
            continue
        (dest / name / "1").mkdir(parents=True, exist_ok=True)
        for src in (model_src / "1").iterdir():
            target = dest / name / "1" / src.name
            if not target.exists():
                os.link(src, target)
        (dest / name / "config.pbtxt").write_text(config.replace('name: "tmpl"', f'name: "{name}"'))
        if (template / "report.json").is_file() and not (dest / "report.json").exists():
            os.link(template / "report.json", dest / "report.json")
        (dest / COMPLETE_MARKER).touch()


def defaulted_spec(api: Api, namespace: str) -> dict[str, Any]:
    """The spec as the API server stores it (CRD defaults applied), from a dry-run create."""
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    return api.request("POST", path, manifest("dry-run", namespace), query="dryRun=All")["spec"]  # type: ignore[no-any-return]


def apiserver_requests(api: Api) -> dict[str, float]:
    """The API server's own request counter (every client, the operator included) by verb and resource."""
    resp = api.request("GET", "/metrics", stream=True)
    text = resp.read().decode()
    resp.release_conn()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line[line.index("{") + 1:line.rindex("}")]))
        sub = labels.get("subresource", "")
        key = f"{labels.get('verb')} {labels.get('resource') or '-'}{'/' + sub if sub else ''}"
        counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def request_mix(before: dict[str, float], after: dict[str, float], top: int = 25) -> dict[str, Any]:
    diff = {k: int(v - before.get(k, 0.0)) for k, v in after.items() if v - before.get(k, 0.0) >= 1}
    ranked = sorted(diff.items(), key=lambda kv: -kv[1])
    return {"total": sum(diff.values()), "by_verb_resource": dict(ranked[:top])}


def create_one(api: Api, rec: Recorder, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Create one object and record when the API server answered; the created object."""
    created = api.request("POST", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}", manifest(name, namespace, spec))
    with rec.lock:
        rec.created[name] = time.monotonic()
    return created  # type: ignore[no-any-return]


def create_with_children(api: Api, rec: Recorder, namespace: str, name: str, spec: dict[str, Any]) -> None:
    """Create one object, then server-side apply the four serving objects the operator would: its
    writes without its reads, status or queue (the floor run, no operator)."""
    from lms_operator.api import schema
    from lms_operator.api.spec import parse_spec
    from lms_operator.api.version import version_key
    from lms_operator.k8s import paths
    from lms_operator.resources import meta
    from lms_operator.resources.render import serving_objects
    from lms_operator.resources.settings import BuildSettings

    created = create_one(api, rec, namespace, name, spec)
    lms = parse_spec(manifest(name, namespace, spec))
    owner = meta.owner_reference(schema.API_VERSION, schema.KIND, name, created["metadata"]["uid"])
    for obj in serving_objects(lms, version_key(lms), BuildSettings(), owner):
        path = paths.item(obj["apiVersion"], obj["kind"], namespace, obj["metadata"]["name"])
        api.request("PATCH", path, obj, content_type="application/apply-patch+yaml", query="fieldManager=lms-floor&force=true")


def measure_floor(api: Api, rec: Recorder, namespace: str, names: list[str], spec: dict[str, Any],
                  workers: int, timeout: float) -> dict[str, Any]:
    """The cluster's own share of the work: every object and its serving objects written at once by
    the bench, then the time until every Deployment has an available replica. With no operator
    running, this is a lower bound for all_ready_s on the same machine."""
    cluster0 = apiserver_requests(api)
    log(f"floor: creating {len(names)} LargeModelServices and applying their serving objects (no operator)")
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda name: create_with_children(api, rec, namespace, name, spec), names))
    written_s = time.monotonic() - t0
    log(f"floor: written in {written_s:.1f}s; waiting for every Deployment to be available")
    deadline, last_log = t0 + timeout, 0.0
    while len(rec.available) < len(names) and time.monotonic() < deadline:
        if time.monotonic() - last_log > 10:
            log(f"floor: {len(rec.available)}/{len(names)} Deployments available, {rec.pods_readied} pods readied")
            last_log = time.monotonic()
        time.sleep(0.5)
    with rec.lock:
        available = [rec.available[n] - t0 for n in names if n in rec.available]
        lat = [rec.deployment_seen[n] - rec.created[n] for n in names if n in rec.deployment_seen]
    cluster = request_mix(cluster0, apiserver_requests(api))
    done = len(available) == len(names)
    log(f"floor: {'all' if done else len(available)} Deployments available at {max(available, default=0):.1f}s")
    return {"mode": "floor", "written_s": round(written_s, 2), "deployments_available": len(available),
            "floor_all_available_s": round(max(available), 2) if done else None,
            "apply_to_deployment_p50_s": round(percentile(lat, 50), 3) if lat else None,
            "apply_to_deployment_p99_s": round(percentile(lat, 99), 3) if lat else None,
            "pods_made_ready": rec.pods_readied, "cluster_requests_until_ready": cluster["total"],
            "cluster_requests_by_verb_resource": cluster["by_verb_resource"],
            "available_curve": ready_curve(available), "recorder_errors": rec.errors[:10]}


def create_paced(api: Api, rec: Recorder, namespace: str, names: list[str], rate: float, spec: dict[str, Any]) -> None:
    """Create objects one by one at `rate` per second (a GitOps sync or a team adding models)."""
    start = time.monotonic()
    for i, name in enumerate(names):
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        create_one(api, rec, namespace, name, spec)


def create_all(api: Api, rec: Recorder, namespace: str, names: list[str], workers: int,
               spec: dict[str, Any]) -> float:
    """Create every object concurrently; returns the monotonic time of the first create."""
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda name: create_one(api, rec, namespace, name, spec), names))
    return t0


# -- the bench -----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
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
    if args.objects < 1:
        print("scale: --objects must be >= 1", file=sys.stderr)
        return 2

    def interrupted(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")  # run the clean-up below

    signal.signal(signal.SIGTERM, interrupted)
    work = Path(tempfile.mkdtemp(prefix="lms-scale-"))
    kubeconfig = work / "kubeconfig"
    bin_dir = tools_bin()
    env = {**os.environ, "LMS_TOOLS_BIN": bin_dir, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    kubectl = [str(Path(bin_dir) / "kubectl"), "--kubeconfig", str(kubeconfig)]
    procs: list[subprocess.Popen[bytes]] = []
    operator: Operator | None = None
    rec: Recorder | None = None
    result: dict[str, Any] = {"benchmark": "scale", "objects": args.objects,
                              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "machine": f"{os.cpu_count()} cores, {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, no GPU",
                              "pods_made_ready_by": "bench/scale.py (kwok stages leave project CPU-pool pods to the pod runner, which is not started)"}
    try:
        template = template_version(work)
        log(f"template version {template}")
        log(f"cluster {args.cluster_name} up (sandbox/cluster.sh)")
        run([str(ROOT / "sandbox" / "cluster.sh"), "up", args.cluster_name, str(kubeconfig)], env=env, timeout=600)
        for crd in sorted((ROOT / "crds").glob("*.yaml")):
            workaround = apply_crd(kubectl, env, crd, work)
            if workaround:
                result.setdefault("crd_workaround", []).extend(workaround)
        run(kubectl + ["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"], env=env)
        # the operator runs under its own ServiceAccount's RBAC (the proxy impersonates it)
        run(kubectl + ["create", "namespace", "lms-system"], env=env, check_rc=False)
        for manifest_file in sorted((ROOT / "deploy" / "rbac").glob("*.yaml")):
            run(kubectl + ["apply", "-f", str(manifest_file)], env=env)
        # kube-apiserver's default Service range is a /24 (254 ClusterIPs): add a ServiceCIDR so that
        # N Services fit (without it every Service past ~250 fails with "range is full")
        service_cidr = {"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
                        "metadata": {"name": "lms-scale"}, "spec": {"cidrs": ["10.112.0.0/16"]}}
        run(kubectl + ["apply", "-f", "-"], env=env, input=json.dumps(service_cidr))
        run(kubectl + ["wait", "--for=condition=Ready", "servicecidr/lms-scale", "--timeout=60s"], env=env)
        result["service_cidr_added"] = service_cidr["spec"]["cidrs"]
        extra = max(0, -(-(args.objects + 50) // 250))
        nodes = "\n---\n".join(json.dumps(scale_node(i, 250)) for i in range(extra))
        if nodes:
            run(kubectl + ["apply", "-f", "-"], env=env, input=nodes)
            run(kubectl + ["wait", "--for=condition=Ready", "node", "--all", "--timeout=120s"], env=env)
        api = Api(kubeconfig)
        ns = args.namespace
        if run(kubectl + ["get", "namespace", ns, "--ignore-not-found", "-o", "name"], env=env).stdout.strip():
            log(f"namespace {ns} exists: deleting it first")
            run(kubectl + ["delete", "namespace", ns, "--wait=true", "--timeout=600s"], env=env, timeout=700)
        api.request("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
        api.request("POST", ns_path(ns, "v1", "persistentvolumeclaims"),
                    {"metadata": {"name": CLAIM}, "spec": {"accessModes": ["ReadWriteMany"],
                                                           "resources": {"requests": {"storage": "1Gi"}}}})
        names = [f"m-{i:04d}" for i in range(args.objects)]
        repo_root = work / "repository"
        t = time.monotonic()
        spec = defaulted_spec(api, ns)
        paced_names = [f"p-{i:04d}" for i in range(args.paced)]
        publish_copies(template, repo_root, ns, names + paced_names, spec)
        log(f"published {len(names)} version folders (hard links) in {time.monotonic() - t:.1f}s")

        rec = Recorder(api, ns)
        rec.start()
        time.sleep(1)
        if args.floor:
            result.update(measure_floor(api, rec, ns, names, spec, args.create_workers, args.ready_timeout))
            result["load_average"] = os.getloadavg()
            write_result(args.out, result)
            log(f"wrote {args.out}")
            return 0 if result["floor_all_available_s"] is not None else 1

        proxy_kc = work / "kubeconfig.proxy"
        proxy = subprocess.Popen([sys.executable, str(ROOT / "bench" / "faultproxy.py"), "--kubeconfig", str(kubeconfig),
                                  "--write-kubeconfig", str(proxy_kc), "--impersonate", OPERATOR_USER],
                                 stdout=subprocess.PIPE,
                                 stderr=open(work / "proxy.log", "wb"), start_new_session=True)
        procs.append(proxy)
        line = proxy.stdout.readline().decode().strip() if proxy.stdout else ""
        if not line.startswith("listening on "):
            raise RuntimeError(f"faultproxy did not start: {line!r}")
        proxy_url = line.split(" ", 2)[2]

        def proxy_stats() -> dict[str, Any]:
            with urllib.request.urlopen(f"{proxy_url}/__faultproxy/stats", timeout=10) as r:
                return json.loads(r.read())  # type: ignore[no-any-return]

        def proxy_reset() -> None:
            req = urllib.request.Request(f"{proxy_url}/__faultproxy/reset", data=b"{}", method="POST")
            urllib.request.urlopen(req, timeout=10).read()

        metrics_port = free_port()
        profile = work / "operator.prof" if args.profile else None
        operator = Operator(proxy_kc, ns, repo_root, metrics_port, work / "operator.log", profile, args.resync_seconds)
        wait_until(lambda: operator.reconciles() >= 0, 120, "operator metrics endpoint")
        time.sleep(2)
        proxy_reset()
        cpu0 = cpu_seconds(operator.proc.pid) or 0.0
        cluster0 = apiserver_requests(api)
        log(f"creating {args.objects} LargeModelServices")
        t0 = time.monotonic()
        create_all(api, rec, ns, names, args.create_workers, spec)
        result["create_s"] = round(time.monotonic() - t0, 2)
        log(f"created in {result['create_s']}s; waiting for Ready")
        rss_max = 0.0
        deadline = t0 + args.ready_timeout
        last_log = 0.0
        while time.monotonic() < deadline:
            with rec.lock:
                n_ready = len(rec.ready)
            rss_max = max(rss_max, operator.peak_rss() or 0.0)
            if n_ready >= args.objects:
                break
            if time.monotonic() - last_log > 10:
                log(f"{n_ready}/{args.objects} Ready, {len(rec.deployment_seen)} Deployments, "
                    f"{rec.pods_readied} pods readied, operator RSS peak {rss_max:.0f} MiB")
                last_log = time.monotonic()
            if operator.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {operator.proc.returncode}; see {work / 'operator.log'}")
            time.sleep(0.5)
        with rec.lock:
            ready = dict(rec.ready)
            created = dict(rec.created)
            seen = dict(rec.deployment_seen)
        stats_ready = proxy_stats()
        cluster = request_mix(cluster0, apiserver_requests(api))
        result["ready_objects"] = len(ready)
        result["all_ready_s"] = round(max(ready.values()) - t0, 2) if len(ready) == args.objects else None
        lat = [seen[n] - created[n] for n in created if n in seen]
        result["apply_to_deployment_p50_s"] = round(percentile(lat, 50), 3) if lat else None
        result["apply_to_deployment_p99_s"] = round(percentile(lat, 99), 3) if lat else None
        result["apply_to_deployment_max_s"] = round(max(lat), 3) if lat else None
        result["deployments_seen"] = len(seen)
        with rec.lock:
            available = list(rec.available.values())
        result["all_deployments_available_s"] = round(max(available) - t0, 2) if len(available) >= args.objects else None
        result["ready_curve"] = ready_curve([v - t0 for v in ready.values()])
        result["api_requests"] = stats_ready["requests"]
        result["http_429"] = stats_ready["http_429"]
        result["api_requests_by_method"] = stats_ready["by_method"]
        result["api_requests_by_agent"] = stats_ready["by_agent"]
        result["api_requests_by_status"] = stats_ready["by_status"]
        result["api_requests_by_resource"] = stats_ready.get("by_resource")
        result["cluster_requests_until_ready"] = cluster["total"]
        result["operator_share_of_cluster_requests"] = round(stats_ready["requests"] / max(1, cluster["total"]), 3)
        result["cluster_requests_by_verb_resource"] = cluster["by_verb_resource"]
        result["operator_cpu_s_until_ready"] = round((cpu_seconds(operator.proc.pid) or 0.0) - cpu0, 1)
        result["pods_made_ready"] = rec.pods_readied
        log(f"all Ready: {result['all_ready_s']}s, p99 apply->Deployment {result['apply_to_deployment_p99_s']}s, "
            f"{result['api_requests']} requests, {result['http_429']} x 429")

        # steady state: what the operator asks of the API server when nothing changes
        proxy_reset()
        time.sleep(args.idle_window)
        idle = proxy_stats()
        result["idle_window_s"] = args.idle_window
        result["idle_requests"] = idle["requests"]
        result["idle_requests_per_s"] = round(idle["requests"] / max(1e-9, idle["uptime_s"]), 2) if "uptime_s" in idle else None
        result["idle_requests_by_method"] = idle["by_method"]
        result["idle_requests_by_resource"] = idle.get("by_resource")
        rss_max = max(rss_max, operator.peak_rss() or 0.0)
        result["operator_peak_rss_mib"] = rss_max

        # restart: the new process must re-check every object and change nothing
        log("waiting for the namespace to settle before the restart")
        before = wait_quiet(api, ns, window=5, timeout=180)
        operator.stop()
        if profile and profile.is_file():
            result["profile_top"] = profile_top(profile, 25)
        operator = Operator(proxy_kc, ns, repo_root, metrics_port, work / "operator.log", None, args.resync_seconds)
        proxy_reset()
        t1 = time.monotonic()
        wait_until(lambda: operator.reconciles() >= 0, 120, "restarted operator metrics endpoint")
        rechecked = wait_until(lambda: operator.reconciles("spec") >= args.objects, args.recheck_timeout,
                               f"the restarted operator reconciling {args.objects} objects", fail=False)
        result["restart_recheck_s"] = round(time.monotonic() - t1, 2) if rechecked else None
        time.sleep(3)
        restart_stats = proxy_stats()
        result["restart_api_requests"] = restart_stats["requests"]
        result["restart_api_requests_by_method"] = restart_stats["by_method"]
        result["restart_api_requests_by_resource"] = restart_stats.get("by_resource")
        result["restart_http_429"] = restart_stats["http_429"]
        after = wait_quiet(api, ns, window=5, timeout=120)
        diff = compare_snapshots(before, after)
        result["restart_changes"] = diff["changes"]
        result["restart_diff"] = diff
        result["operator_peak_rss_mib_after_restart"] = operator.peak_rss()

        # paced: latency of one object when the operator is not working through a queue of 1000
        if paced_names:
            log(f"paced: {len(paced_names)} more objects at {args.paced_rate}/s")
            create_paced(api, rec, ns, paced_names, args.paced_rate, spec)
            wait_until(lambda: all(n in rec.ready for n in paced_names), 120, "the paced objects Ready", fail=False)
            with rec.lock:
                lat = [rec.deployment_seen[n] - rec.created[n] for n in paced_names if n in rec.deployment_seen]
                to_ready = [rec.ready[n] - rec.created[n] for n in paced_names if n in rec.ready]
            result["paced"] = {"objects": len(paced_names), "rate_per_s": args.paced_rate, "ready": len(to_ready),
                               "apply_to_deployment_p50_s": round(percentile(lat, 50), 3) if lat else None,
                               "apply_to_deployment_p99_s": round(percentile(lat, 99), 3) if lat else None,
                               "apply_to_ready_p99_s": round(percentile(to_ready, 99), 3) if to_ready else None}
        result["recorder_errors"] = rec.errors[:10]
        result["targets"] = {"all_ready_s<=120": bool(result["all_ready_s"] is not None and result["all_ready_s"] <= 120),
                             "apply_to_deployment_p99_s<=2": bool(result["apply_to_deployment_p99_s"] is not None
                                                                  and result["apply_to_deployment_p99_s"] <= 2),
                             "operator_peak_rss_mib<=512": bool(rss_max and rss_max <= 512),
                             "restart_recheck_s<=60": bool(result["restart_recheck_s"] is not None and result["restart_recheck_s"] <= 60),
                             "restart_changes==0": result["restart_changes"] == 0,
                             "paced apply_to_deployment_p99_s<=2": bool((result.get("paced") or {}).get("apply_to_deployment_p99_s") is not None
                                                                       and result["paced"]["apply_to_deployment_p99_s"] <= 2)}
        result["load_average"] = os.getloadavg()
        write_result(args.out, result)
        log(f"wrote {args.out}: {json.dumps(result['targets'])}")
        return 0
    except (Exception, KeyboardInterrupt) as exc:
        log(f"failed: {type(exc).__name__}: {exc}")
        result["error"] = f"{type(exc).__name__}: {exc}"[:500]
        result["work_dir"] = str(work)
        print(json.dumps(result, indent=1))
        return 1
    finally:
        if rec is not None:
            rec.close()
        if operator is not None:
            operator.stop()
        for proc in procs:
            kill_group(proc, 10)
        if not args.keep:
            subprocess.run([str(ROOT / "sandbox" / "cluster.sh"), "down", args.cluster_name], env=env,
                           capture_output=True, text=True, timeout=300)
            log(f"cluster {args.cluster_name} deleted; logs in {work}")
        else:
            log(f"cluster {args.cluster_name} kept; kubeconfig {kubeconfig}; logs in {work}")


def strip_conflicting_defaults(node: Any, path: str = "") -> list[str]:
    """Drop `default` from objects that carry CEL rules (an empty default object fails their rules
    when the API server checks defaults against them). Returns the schema paths changed."""
    changed: list[str] = []
    if isinstance(node, dict):
        if "default" in node and node.get("x-kubernetes-validations") and node.get("type") == "object":
            del node["default"]
            changed.append(path or "/")
        for k, v in node.items():
            changed += strip_conflicting_defaults(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            changed += strip_conflicting_defaults(v, f"{path}/{i}")
    return changed


def apply_crd(kubectl: list[str], env: dict[str, str], crd: Path, work: Path) -> list[str]:
    """Apply a CRD as committed; if the API server rejects its defaults against its CEL rules,
    apply a copy without those defaults (every scale object sets those fields) and say so."""
    import yaml

    done = subprocess.run(kubectl + ["apply", "--server-side", "--force-conflicts", "-f", str(crd)], env=env,
                          capture_output=True, text=True, timeout=120)
    if done.returncode == 0:
        return []
    if "no such key" not in done.stderr:
        raise RuntimeError(f"applying {crd.name} failed: {done.stderr[-1500:]}")
    doc = yaml.safe_load(crd.read_text())
    changed = strip_conflicting_defaults(doc)
    fixed = work / crd.name
    fixed.write_text(yaml.safe_dump(doc))
    run(kubectl + ["apply", "--server-side", "--force-conflicts", "-f", str(fixed)], env=env)
    log(f"{crd.name} was rejected by the API server ({done.stderr.strip().splitlines()[0][:120]}); "
        f"applied it without the defaults at {changed}")
    return [f"{crd.name}: rejected as committed (default objects fail their CEL rules); applied without "
            f"defaults at {p}" for p in changed]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(pred: Callable[[], Any], timeout: float, what: str, fail: bool = True, interval: float = 0.25) -> bool:
    """Poll until pred() is truthy (exceptions count as not yet); raise or return False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return True
        except Exception:  # not up yet
            pass
        time.sleep(interval)
    if fail:
        raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
    return False


def profile_top(path: Path, n: int) -> list[str]:
    """The n functions with the most cumulative time, one line each."""
    import io
    import pstats

    buf = io.StringIO()
    pstats.Stats(str(path), stream=buf).sort_stats("tottime").print_stats(n)
    return [line.strip() for line in buf.getvalue().splitlines() if line.strip()][-n:]


def write_result(out: Path, result: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(out)


if __name__ == "__main__":
    sys.exit(main())
