"""What an autoscaled model does over time: replicas (desired, ready), the HPA's decision and
Triton's queue time per request as Prometheus computes it, sampled once a second in a thread;
and load from `lms bench`'s generator in another thread, every request recorded.

The autoscaling e2e tests assert on them; bench/autoscale.py turns them into figures and a plot.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lms_harness.autoscaling import prometheus_value

if TYPE_CHECKING:
    from lms_operator.serving.loadgen import LoadRun, RequestRecord


@dataclass
class Sample:
    t: float                      # seconds since the timeline started
    replicas: int                 # Deployment spec.replicas (what the autoscaler asked for)
    ready: int                    # Deployment status.readyReplicas
    desired: int | None           # the HPA's status.desiredReplicas (None: no HPA yet)
    queue_us: float | None        # mean queue time per request over the window (None: no series)
    hpa_metric: float | None = None  # the HPA's current reading of its first metric (None: none yet)


@dataclass
class Timeline:
    """Samples a Deployment, its HPA and a PromQL query every `interval` seconds until stopped."""

    apps: Any                     # kubernetes AppsV1Api
    autoscaling: Any              # kubernetes AutoscalingV2Api
    namespace: str
    deployment: str
    hpa: str
    prometheus: str
    query: str
    interval: float = 1.0
    samples: list[Sample] = field(default_factory=list)
    start: float = field(default_factory=time.time)  # samples' t counts from here (time.time())
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def now(self) -> float:
        return time.time() - self.start

    def sample(self) -> Sample:
        dep = self.apps.read_namespaced_deployment(self.deployment, self.namespace)
        try:
            status = self.autoscaling.read_namespaced_horizontal_pod_autoscaler(self.hpa, self.namespace).status
        except Exception:  # noqa: BLE001 - no HPA (yet) reads as None
            status = None
        try:
            queue = prometheus_value(self.prometheus, self.query)
        except OSError:
            queue = None
        return Sample(self.now(), int(dep.spec.replicas or 0), int(dep.status.ready_replicas or 0),
                      status.desired_replicas if status else None, queue, hpa_reading(status))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self.sample())
            except Exception:  # noqa: BLE001 - a missed sample is a gap, not a failure
                pass
            self._stop.wait(self.interval)

    def __enter__(self) -> Timeline:
        self._thread = threading.Thread(target=self._run, name="timeline", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def first(self, predicate: Any, after: float = 0.0) -> float | None:
        """Time of the first sample at or after `after` that satisfies predicate(sample)."""
        return next((s.t for s in self.samples if s.t >= after and predicate(s)), None)

    def describe(self, last: int = 20) -> str:
        """The last samples, one line each, for a failure message that says where a chain stopped."""
        lines = ["t s | replicas | ready | HPA desired | HPA reading | queue us (Prometheus)"]
        lines += [f"{s.t:6.1f} | {s.replicas} | {s.ready} | {s.desired} | {s.hpa_metric} | "
                  f"{None if s.queue_us is None else round(s.queue_us)}" for s in self.samples[-last:]]
        return "\n".join(lines)

    def as_rows(self) -> list[dict[str, Any]]:
        return [{"t": round(s.t, 2), "replicas": s.replicas, "ready": s.ready, "desired": s.desired,
                 "queue_us": None if s.queue_us is None else round(s.queue_us, 1)} for s in self.samples]


def hpa_reading(status: Any) -> float | None:
    """The HPA's current reading of its first metric (an external metric's value or average
    value, a resource's average value), None before the controller-manager has read it."""
    from kubernetes.utils import parse_quantity

    for metric in (status.current_metrics or []) if status is not None else []:
        source = metric.external or metric.resource or metric.pods or metric.object
        current = source.current if source is not None else None
        quantity = current and (current.value or current.average_value)
        if quantity is not None:
            return float(parse_quantity(quantity))
    return None


class BackgroundLoad:
    """Closed-loop gRPC load (lms bench's generator) in a thread until stop(): `connections`
    connections, each replaced every `reconnect_s` seconds, so a Service spreads them over
    replicas added later."""

    def __init__(self, url: str, model: str, concurrency: int, *, connections: int = 4,
                 reconnect_s: float = 2.0, sequence_length: int = 128) -> None:
        self.options = {"connections": connections, "reconnect_s": reconnect_s, "sequence_length": sequence_length}
        self.url, self.model, self.concurrency = url, model, concurrency
        self.started = 0.0                    # time.time() when the load began
        self.result: LoadRun | None = None
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)

    def _run(self) -> None:
        from lms_operator.serving.loadgen import run_load

        try:
            self.result = run_load(self.url, self.model, self.concurrency, stop=self._stop, **self.options)
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.failure = exc

    def start(self) -> BackgroundLoad:
        self.started = time.time()
        self._thread.start()
        return self

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 60) -> LoadRun:
        """End the load (requests in flight finish) and return what it measured."""
        self._stop.set()
        self._thread.join(timeout)
        if self.failure is not None:
            raise RuntimeError(f"the load generator failed: {self.failure}") from self.failure
        if self.result is None:
            raise RuntimeError(f"the load generator did not stop within {timeout} s")
        return self.result


def p99_ms(records: list[RequestRecord], start: float, end: float) -> float | None:
    """p99 client latency of the successful requests that started in [start, end) (time.time())."""
    import numpy as np

    latencies = [r.latency_s for r in records if r.ok and start <= r.start < end]
    return float(np.percentile(latencies, 99) * 1000.0) if latencies else None
