"""Pod runner: plays kubelet for the project's pods on CPU-pool nodes of a kwok cluster.

kwok fakes every other pod. Pods labelled app.kubernetes.io/part-of=lms that the real
scheduler binds to a node labelled lms.dev/pool=cpu are run here as local processes
(`lms ...` from this environment, `tritonserver ...` as a local Triton), with volumes mapped
to folders under the state dir and status written back through pods/status.

It also plays the node's kube-proxy (lms_harness.serviceproxy: one local port per project
Service port), serves each CPU-pool node's kubelet resource metrics for metrics-server
(lms_harness.kubeletmetrics: CPU and memory of each container's process group) and honours
graceful termination: a deleted pod's preStop hook runs before its processes get SIGTERM,
within terminationGracePeriodSeconds. The pod object is gone by then (kwok removes it at once),
so the pod is out of its Services' rotation while it drains.

    python -m lms_harness.podrunner --kubeconfig K --state-dir D
"""
from __future__ import annotations

import argparse
import atexit
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from lms_harness.lifecycle import MAX_GRACE_SECONDS, MIN_TERM_SECONDS, grace_seconds, prestop
from lms_harness.mapping import LocalContainer, UnsupportedPod, build_local_container, pod_key
from lms_harness.ports import free_ports
from lms_harness.processes import kill_group
from lms_harness.status import (ContainerState, endpoint_annotations, fake_pod_ip, now_rfc3339, pod_status,
                                termination_message)

PROJECT_SELECTOR = "app.kubernetes.io/part-of=lms"
POOL_LABEL = "lms.dev/pool"
RUN_POOL = "cpu"
SHUTDOWN_TERM_SECONDS = 15.0   # SIGTERM to SIGKILL when the runner itself stops
log = logging.getLogger("podrunner")


def http_ready(address: str, path: str = "/v2/health/ready") -> bool:
    """True when GET http://address/path answers 2xx."""
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=1.0) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


class Running:
    """One container process plus the state reported for it."""

    def __init__(self, spec: dict[str, Any], local: LocalContainer | None, state: ContainerState) -> None:
        self.spec = spec
        self.local = local
        self.state = state
        self.proc: subprocess.Popen[bytes] | None = None
        self.restart_at = 0.0


class PodWorker(threading.Thread):
    """Runs one pod's containers and keeps its status current until stopped or finished."""

    def __init__(self, runner: "PodRunner", pod: dict[str, Any]) -> None:
        super().__init__(name=f"pod-{pod_key(pod)}", daemon=True)
        self.runner = runner
        self.pod = pod
        self.key = pod_key(pod)
        self.ns = pod["metadata"].get("namespace", "default")
        self.name = pod["metadata"]["name"]
        self.stop_event = threading.Event()
        self.abort = threading.Event()   # skip or cut short preStop hooks (the runner is shutting down)
        self.delete_after_stop = False
        self.pod_ip = fake_pod_ip(str(pod["metadata"].get("uid") or self.key))
        self.containers: list[Running] = []
        self.start_time = now_rfc3339()
        self.last_status: dict[str, Any] | None = None
        self.log_path = runner.state_dir / "pods" / f"{self.key}.log"
        self.pod_dir = runner.state_dir / "pods" / self.key

    # -- lifecycle -------------------------------------------------------------------
    def stop(self, delete: bool, graceful: bool = True) -> None:
        """Ask the worker to stop its processes (and remove the pod object when delete).

        graceful: run preStop hooks first, as for a deleted pod; False when the runner shuts down.
        """
        self.delete_after_stop = self.delete_after_stop or delete
        if not graceful:
            self.abort.set()
        self.stop_event.set()

    def run(self) -> None:
        try:
            self._run()
        except Exception:  # noqa: BLE001 - one broken pod must not take the runner down
            log.exception("pod %s: worker crashed", self.key)
        finally:
            deadline = time.monotonic() + grace_seconds(self.pod)
            live = [c for c in self.containers if c.proc is not None and c.proc.poll() is None]
            if live and self.stop_event.is_set() and not self.abort.is_set():
                self._run_prestop(live, deadline)
            for c in live:
                assert c.proc is not None
                term = max(deadline - time.monotonic(), MIN_TERM_SECONDS)
                kill_group(c.proc, min(term, SHUTDOWN_TERM_SECONDS) if self.abort.is_set() else term)
            if self.delete_after_stop:
                self.runner.delete_pod(self.ns, self.name)
            with self.runner.lock:
                self.runner.draining.discard(self)
            log.info("pod %s: worker done", self.key)

    def _run_prestop(self, live: list[Running], deadline: float) -> None:
        """Each live container's preStop hook, in parallel, until done or the grace period ends."""
        threads = [threading.Thread(target=self._prestop_one, args=(c, deadline), name=f"{self.name}-prestop",
                                    daemon=True) for c in live]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()) + 1.0)

    def _prestop_one(self, c: Running, deadline: float) -> None:
        hook = prestop(c.spec)
        if hook is None:
            return
        if hook.unsupported:
            log.warning("pod %s: %s: %s", self.key, c.state.name, hook.unsupported)
            return
        if not hook.argv:
            seconds = min(hook.sleep_s, max(0.0, deadline - time.monotonic()))
            log.info("pod %s: %s: preStop sleep %.1fs before SIGTERM", self.key, c.state.name, seconds)
            self.abort.wait(seconds)
            return
        assert c.local is not None
        env = {**self.runner.base_env, **c.local.env}
        log.info("pod %s: %s: preStop exec %s", self.key, c.state.name, " ".join(hook.argv))
        with open(self.log_path, "ab") as out:
            try:
                proc = subprocess.Popen(list(hook.argv), cwd=str(self.pod_dir), env=env, stdout=out,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as exc:
                log.warning("pod %s: %s: preStop exec failed to start: %s", self.key, c.state.name, exc)
                return
            while proc.poll() is None and time.monotonic() < deadline and not self.abort.wait(0.1):
                pass
            if proc.poll() is None:
                kill_group(proc, 1.0)

    def _run(self) -> None:
        spec = self.pod["spec"]
        self.pod_dir.mkdir(parents=True, exist_ok=True)
        restart_policy = spec.get("restartPolicy") or "Always"
        try:
            self._prepare()
        except UnsupportedPod as exc:
            self._fail_unsupported(str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - e.g. no local Triton: the pod fails, visibly
            self._fail_unsupported(f"{type(exc).__name__}: {exc}")
            return
        if not self._run_init_containers():
            return
        for c in self.containers:
            self._start(c)
        self._push_status(restart_policy)
        while not self.stop_event.wait(0.5):
            for c in self.containers:
                self._poll(c, restart_policy)
            self._push_status(restart_policy)
            phase = (self.last_status or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                log.info("pod %s: %s", self.key, phase)
                return

    # -- containers ------------------------------------------------------------------
    def _lookup(self, kind: str, name: str, key: str) -> str | None:
        return self.runner.lookup(self.ns, kind, name, key)

    def _translate(self, spec: dict[str, Any]) -> LocalContainer:
        ports = None
        cmd = [*(spec.get("command") or []), *(spec.get("args") or [])]
        if cmd and Path(cmd[0]).name == "tritonserver":
            http, grpc, metrics = free_ports(3)
            ports = {"http": http, "grpc": grpc, "metrics": metrics}
        local = build_local_container(self.pod, spec, state_dir=self.runner.state_dir, bin_dir=self.runner.bin_dir,
                                      python=sys.executable, free_ports=ports, lookup=self._lookup)
        if local.triton:
            from lms_operator.serving.triton import local_command  # heavy-ish, only when needed

            argv, env = local_command(local.argv)
            local.argv = argv
            local.env = {**env, **local.env}
        return local

    def _prepare(self) -> None:
        spec = self.pod["spec"]
        for vol in spec.get("volumes") or []:
            self.runner.materialize_volume(self.ns, self.pod_dir, vol)
        for cspec in spec.get("containers") or []:
            local = self._translate(cspec)
            state = ContainerState(name=cspec["name"], image=cspec.get("image", ""))
            self.containers.append(Running(cspec, local, state))
        ports: dict[str, int] = {}
        for c in self.containers:
            if c.local is not None:
                ports.update(c.local.ports)
        if ports:
            self.runner.annotate(self.ns, self.name, endpoint_annotations(ports))

    def _fail_unsupported(self, message: str) -> None:
        log.warning("pod %s: %s", self.key, message)
        now = now_rfc3339()
        states = [ContainerState(name=c["name"], image=c.get("image", ""), state="terminated", reason="Unsupported",
                                 exit_code=128, message=message, started_at=now, finished_at=now)
                  for c in self.pod["spec"].get("containers") or []]
        self.runner.patch_status(self.ns, self.name, pod_status(states, "Never", self.start_time, pod_ip=self.pod_ip))

    def _run_init_containers(self) -> bool:
        for cspec in self.pod["spec"].get("initContainers") or []:
            try:
                local = self._translate(cspec)
            except UnsupportedPod as exc:
                self._fail_unsupported(str(exc))
                return False
            init = Running(cspec, local, ContainerState(name=cspec["name"]))
            self._start(init)
            while init.proc is not None and init.proc.poll() is None:
                if self.stop_event.wait(0.5):
                    kill_group(init.proc, 5)
                    return False
            if init.proc is None or init.proc.returncode != 0:
                message = f"init container {cspec['name']} failed"
                self._fail_unsupported(message)
                return False
        return True

    def _start(self, c: Running) -> None:
        assert c.local is not None
        local = c.local
        for mount in local.mounts:
            Path(mount.local_path).mkdir(parents=True, exist_ok=True)
        term = Path(local.termination_log)
        term.parent.mkdir(parents=True, exist_ok=True)
        term.write_bytes(b"")
        env = dict(self.runner.base_env)
        env.update(local.env)
        cwd = local.cwd if local.cwd and Path(local.cwd).is_dir() else str(self.pod_dir)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            out.write(f"--- {now_rfc3339()} {c.state.name}: {' '.join(local.argv)}\n".encode())
            out.flush()
            try:
                c.proc = subprocess.Popen(local.argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as exc:
                c.proc = None
                now = now_rfc3339()
                c.state.state, c.state.reason, c.state.exit_code = "terminated", "StartError", 128
                c.state.message, c.state.started_at, c.state.finished_at = str(exc), now, now
                log.warning("pod %s: cannot start %s: %s", self.key, c.state.name, exc)
                return
        self.runner.track(c.proc)
        log.info("pod %s: started %s pid %d: %s", self.key, c.state.name, c.proc.pid, " ".join(local.argv))
        c.state.state, c.state.reason, c.state.started_at = "running", "", now_rfc3339()
        c.state.exit_code, c.state.finished_at, c.state.message = None, None, ""
        c.state.ready = not local.triton and not c.spec.get("readinessProbe")

    def _poll(self, c: Running, restart_policy: str) -> None:
        if c.state.state == "running" and c.proc is not None:
            code = c.proc.poll()
            if code is None:
                c.state.ready = self._probe(c)
                return
            self.runner.untrack(c.proc)
            assert c.local is not None
            raw = Path(c.local.termination_log).read_bytes() if Path(c.local.termination_log).exists() else b""
            c.state.state, c.state.exit_code, c.state.finished_at = "terminated", code, now_rfc3339()
            c.state.reason = "Completed" if code == 0 else "Error"
            c.state.message = termination_message(raw, self._log_tail(), code, c.spec.get("terminationMessagePolicy"))
            c.state.ready = False
            log.info("pod %s: %s exited %d", self.key, c.state.name, code)
            if restart_policy == "Always" or (restart_policy == "OnFailure" and code != 0):
                delay = min(2.0 ** c.state.restart_count, 30.0)
                c.restart_at = time.monotonic() + delay
        elif c.state.state == "terminated" and c.restart_at and time.monotonic() >= c.restart_at:
            c.restart_at = 0.0
            c.state.restart_count += 1
            self._start(c)

    def _probe(self, c: Running) -> bool:
        assert c.local is not None
        if c.local.triton:
            return http_ready(f"127.0.0.1:{c.local.ports['http']}")
        probe = c.spec.get("readinessProbe")
        if not probe:
            return True
        if get := probe.get("httpGet"):
            port = get.get("port")
            if isinstance(port, str):
                named = {p.get("name"): p.get("containerPort") for p in c.spec.get("ports") or []}
                port = named.get(port, port)
            return http_ready(f"127.0.0.1:{port}", get.get("path") or "/")
        return True

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 4096))
                return fh.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def _push_status(self, restart_policy: str) -> None:
        states = [c.state for c in self.containers]
        body = pod_status(states, restart_policy, self.start_time, pod_ip=self.pod_ip)
        if self.last_status is not None and _same_status(body, self.last_status):
            return
        if self.runner.patch_status(self.ns, self.name, body):
            self.last_status = body


def _same_status(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal apart from condition timestamps (so an unchanged pod is not patched every tick)."""
    def strip(s: dict[str, Any]) -> dict[str, Any]:
        out = dict(s)
        out["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in s["conditions"]]
        return out

    return strip(a) == strip(b)


class PodRunner:
    """Watches the project's pods and keeps one PodWorker per pod bound to a CPU-pool node."""

    def __init__(self, kubeconfig: str, state_dir: Path) -> None:
        from kubernetes import client, config

        self.state_dir = state_dir.resolve()
        self.bin_dir = str(Path(sys.executable).parent)
        self.base_env = dict(os.environ)
        self.base_env["PATH"] = os.pathsep.join((self.bin_dir, self.base_env.get("PATH", "")))
        self.base_env.pop("KUBECONFIG", None)
        self.api_client = config.new_client_from_config(config_file=kubeconfig)
        self.core = client.CoreV1Api(self.api_client)
        self.workers: dict[str, PodWorker] = {}
        self.cpu_nodes: set[str] = set()
        self.procs: set[subprocess.Popen[bytes]] = set()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.draining: set[PodWorker] = set()   # stopped workers still in preStop or SIGTERM grace
        self.proxy: Any = None
        self.kubelet: Any = None

    # -- API helpers used by workers ---------------------------------------------------
    def patch_status(self, ns: str, name: str, status: dict[str, Any]) -> bool:
        from kubernetes.client.rest import ApiException

        try:
            self.core.patch_namespaced_pod_status(name, ns, {"status": status})
            return True
        except ApiException as exc:
            if exc.status != 404:
                log.warning("pod %s/%s: status patch failed: %s %s", ns, name, exc.status, exc.reason)
            return False

    def annotate(self, ns: str, name: str, annotations: dict[str, str]) -> None:
        from kubernetes.client.rest import ApiException

        try:
            self.core.patch_namespaced_pod(name, ns, {"metadata": {"annotations": annotations}})
        except ApiException as exc:
            log.warning("pod %s/%s: annotate failed: %s", ns, name, exc.status)

    def delete_pod(self, ns: str, name: str) -> None:
        from kubernetes.client import V1DeleteOptions
        from kubernetes.client.rest import ApiException

        try:
            self.core.delete_namespaced_pod(name, ns, body=V1DeleteOptions(grace_period_seconds=0))
        except ApiException as exc:
            if exc.status != 404:
                log.warning("pod %s/%s: delete failed: %s", ns, name, exc.status)

    def lookup(self, ns: str, kind: str, name: str, key: str) -> str | None:
        """A key of a ConfigMap or Secret (decoded), or None when either is missing."""
        import base64

        from kubernetes.client.rest import ApiException

        try:
            if kind == "configmap":
                return (self.core.read_namespaced_config_map(name, ns).data or {}).get(key)
            data = (self.core.read_namespaced_secret(name, ns).data or {}).get(key)
            return base64.b64decode(data).decode() if data is not None else None
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def materialize_volume(self, ns: str, pod_dir: Path, volume: dict[str, Any]) -> None:
        """Write configMap/secret volume contents into the pod's local volume folder."""
        import base64

        folder = pod_dir / "volumes" / volume["name"]
        if cm := volume.get("configMap"):
            folder.mkdir(parents=True, exist_ok=True)
            obj = self.core.read_namespaced_config_map(cm["name"], ns)
            for key, value in (obj.data or {}).items():
                (folder / key).write_text(value)
        elif sec := volume.get("secret"):
            folder.mkdir(parents=True, exist_ok=True)
            obj = self.core.read_namespaced_secret(sec["secretName"], ns)
            for key, value in (obj.data or {}).items():
                (folder / key).write_bytes(base64.b64decode(value))
        elif "emptyDir" in volume:
            folder.mkdir(parents=True, exist_ok=True)

    def track(self, proc: subprocess.Popen[bytes]) -> None:
        with self.lock:
            self.procs.add(proc)

    def untrack(self, proc: subprocess.Popen[bytes]) -> None:
        with self.lock:
            self.procs.discard(proc)

    # -- kubelet resource metrics -------------------------------------------------------
    def container_samples(self) -> list[Any]:
        """CPU and memory of every running container, for /metrics/resource."""
        from lms_harness.kubeletmetrics import read_proc, sample_containers

        with self.lock:
            workers = list(self.workers.values())
        rows = [(str(w.pod["spec"].get("nodeName") or ""), w.ns, w.name, c.state.name, c.proc.pid, c.state.started_at)
                for w in workers for c in list(w.containers)
                if c.proc is not None and c.proc.poll() is None and c.state.state == "running"]
        return sample_containers(rows, read_proc() if rows else [], int(time.time() * 1000))

    def pod_log(self, namespace: str, name: str) -> tuple[Path, bool] | None:
        """The pod's log file and whether a container of it still runs, for `kubectl logs`."""
        key = pod_key({"metadata": {"namespace": namespace, "name": name}})
        path = self.state_dir / "pods" / f"{key}.log"
        if not path.is_file():
            return None
        with self.lock:
            worker = self.workers.get(key)
        running = worker is not None and any(c.proc is not None and c.proc.poll() is None for c in list(worker.containers))
        return path, running

    def cpu_node_statuses(self) -> list[tuple[str, dict[str, Any]]]:
        nodes = self.core.list_node(label_selector=f"{POOL_LABEL}={RUN_POOL}")
        return [(n.metadata.name, self.api_client.sanitize_for_serialization(n.status) or {}) for n in nodes.items]

    def patch_node_status(self, name: str, body: dict[str, Any]) -> None:
        self.core.patch_node_status(name, body)

    # -- watch loop ---------------------------------------------------------------------
    def refresh_nodes(self) -> None:
        nodes = self.core.list_node(label_selector=f"{POOL_LABEL}={RUN_POOL}")
        self.cpu_nodes = {n.metadata.name for n in nodes.items}

    def handle(self, kind: str, pod: dict[str, Any]) -> None:
        """React to one pod event (pod as a plain API dict)."""
        key = pod_key(pod)
        worker = self.workers.get(key)
        uid = pod["metadata"].get("uid")
        if worker is not None and worker.pod["metadata"].get("uid") != uid:
            self.retire(key, delete=False)  # same name, new pod
            worker = None
        if kind == "DELETED":
            if worker is not None:
                self.retire(key, delete=False)
            return
        if pod["metadata"].get("deletionTimestamp"):
            if worker is not None and worker.is_alive():
                self.retire(key, delete=True)  # the worker deletes the pod once its processes are gone
            elif worker is not None or (pod.get("spec") or {}).get("nodeName") in self.cpu_nodes:
                self.workers.pop(key, None)
                self.delete_pod(pod["metadata"]["namespace"], pod["metadata"]["name"])
            return
        node = (pod.get("spec") or {}).get("nodeName")
        if not node or worker is not None:
            return
        if node not in self.cpu_nodes:
            self.refresh_nodes()
            if node not in self.cpu_nodes:
                return
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return
        log.info("pod %s: bound to %s, running it", key, node)
        worker = PodWorker(self, pod)
        self.workers[key] = worker
        worker.start()

    def retire(self, key: str, delete: bool) -> None:
        """Stop a deleted pod's worker gracefully (preStop, then SIGTERM) without waiting for it."""
        worker = self.workers.pop(key, None)
        if worker is None:
            return
        with self.lock:
            self.draining.add(worker)
        worker.stop(delete=delete)

    def run(self) -> None:
        """List+watch forever (until stop), re-listing when the watch expires."""
        from kubernetes import watch
        from kubernetes.client.rest import ApiException

        from lms_harness.serviceproxy import ServiceProxy

        self.refresh_nodes()
        if self.proxy is None:
            self.proxy = ServiceProxy(self.api_client).start()
        if self.kubelet is None:
            from lms_harness.kubeletmetrics import KubeletMetrics

            try:
                self.kubelet = KubeletMetrics(self.state_dir / "kubelet", self.container_samples,
                                              self.cpu_node_statuses, self.patch_node_status, self.pod_log).start()
            except (OSError, subprocess.CalledProcessError) as exc:  # e.g. no openssl: pods still run
                log.warning("kubelet resource metrics not served: %s", exc)
                self.kubelet = False
        while not self.stopping.is_set():
            try:
                listed = self.core.list_pod_for_all_namespaces(label_selector=PROJECT_SELECTOR)
                rv = listed.metadata.resource_version
                seen: set[str] = set()
                for item in listed.items:
                    pod = self.api_client.sanitize_for_serialization(item)
                    seen.add(pod_key(pod))
                    self.handle("ADDED", pod)
                for key in set(self.workers) - seen:  # deleted while no watch was open
                    self.retire(key, delete=False)
                w = watch.Watch()
                for event in w.stream(self.core.list_pod_for_all_namespaces, label_selector=PROJECT_SELECTOR,
                                      resource_version=rv, timeout_seconds=30, _request_timeout=60):
                    if self.stopping.is_set():
                        w.stop()
                        break
                    obj = event["raw_object"]
                    if event["type"] == "ERROR":
                        break
                    self.handle(event["type"], obj)
            except ApiException as exc:
                if exc.status != 410:
                    log.warning("watch failed: %s %s; retrying", exc.status, exc.reason)
                    self.stopping.wait(1.0)
            except Exception as exc:  # noqa: BLE001 - API server restarts must not end the runner
                if self.stopping.is_set():
                    break
                log.warning("watch error: %s; retrying", exc)
                self.stopping.wait(1.0)

    def shutdown(self) -> None:
        """Stop every worker and kill every process this runner started."""
        self.stopping.set()
        with self.lock:
            workers = [*self.workers.values(), *self.draining]
        for worker in workers:
            worker.stop(delete=False, graceful=False)  # the node goes away: no preStop
        for worker in workers:
            worker.join(timeout=MAX_GRACE_SECONDS + 5)
        if self.proxy is not None:
            self.proxy.stop()
        if self.kubelet:
            self.kubelet.stop()
        with self.lock:
            procs = list(self.procs)
        for proc in procs:
            kill_group(proc, 2.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lms_harness.podrunner", description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True, help="kubeconfig of the cluster to serve")
    parser.add_argument("--state-dir", required=True, type=Path, help="folder for logs, PVC folders, pod files")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(args.kubeconfig).is_file():
        print(f"podrunner: --kubeconfig {args.kubeconfig}: no such file", file=sys.stderr)
        return 2
    args.state_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=str(args.state_dir / "podrunner.log"), level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
    runner = PodRunner(args.kubeconfig, args.state_dir)
    atexit.register(runner.shutdown)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        runner.stopping.set()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("pod runner started (state dir %s)", args.state_dir)
    try:
        runner.run()
    except SystemExit:
        pass
    finally:
        runner.shutdown()
        log.info("pod runner stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
