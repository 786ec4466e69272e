"""The scale bench's eyes and kubelet: watches LargeModelServices, Deployments and project pods,
records when each object got where, and marks the pods Running/Ready (kwok's stages leave the
project's CPU-pool pods to the pod runner, which the bench does not start)."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lms_harness.scale.api import PLURAL, ClusterApi

POD_SELECTOR = "app.kubernetes.io/part-of=lms"


def ready_pod_status(pod: dict[str, Any]) -> dict[str, Any]:
    """What a kubelet (or kwok's pod-ready stage) writes once the containers run."""
    meta, spec = pod["metadata"], pod["spec"]
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    n = abs(hash(meta["name"])) % 65000
    conds = [{"type": t, "status": "True", "lastTransitionTime": now}
             for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]
    return {"phase": "Running", "podIP": f"10.{n // 250 % 250}.{n % 250}.{7}", "hostIP": "10.255.0.1",
            "startTime": now, "conditions": conds,
            "containerStatuses": [{"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": True,
                                   "started": True, "restartCount": 0, "state": {"running": {"startedAt": now}}}
                                  for c in spec.get("containers", [])]}


class Recorder:
    """Watches LMS objects, Deployments and project pods; marks the pods Ready (the bench's kubelet)."""

    def __init__(self, api: ClusterApi, namespace: str) -> None:
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
        for t, ev in self.api.watch(self.ns, PLURAL, self.stop):
            obj = ev["object"]
            name = obj["metadata"]["name"]
            phase = (obj.get("status") or {}).get("phase") or ""
            with self.lock:
                self.phases[name] = phase
                if phase == "Ready" and name not in self.ready:
                    self.ready[name] = t

    def _watch_deployments(self) -> None:
        for t, ev in self.api.watch(self.ns, "deployments", self.stop):
            labels = (ev["object"].get("metadata") or {}).get("labels") or {}
            owner = labels.get("app.kubernetes.io/instance")
            if owner:
                with self.lock:
                    self.deployment_seen.setdefault(owner, t)
                    if int((ev["object"].get("status") or {}).get("availableReplicas") or 0) > 0:
                        self.available.setdefault(owner, t)

    def _watch_pods(self) -> None:
        for _, ev in self.api.watch(self.ns, "pods", self.stop, label_selector=POD_SELECTOR):
            if ev["type"] != "DELETED":
                self._consider(ev["object"])

    def _sweep_pods(self) -> None:
        """A missed watch event must not leave a pod unready forever: look at all of them now and then."""
        self.stop.wait(20)
        for pod in self.api.list(self.ns, "pods", POD_SELECTOR)["items"]:
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
        meta = pod["metadata"]
        try:
            self.api.patch_pod_status(self.ns, meta["name"], ready_pod_status(pod))
            with self.lock:
                self.pods_readied += 1
        except Exception:  # the pod may be gone (its replacement gets its own event); else the sweep retries
            with self.lock:
                self.pod_errors += 1
                self.submitted.discard(meta.get("uid"))

    def counts(self) -> tuple[int, int, int]:
        """(objects Ready, Deployments seen, pods made ready) so far."""
        with self.lock:
            return len(self.ready), len(self.deployment_seen), self.pods_readied
