"""Prometheus metrics of the operator, served on --metrics-port at /metrics.

The metric objects live in prometheus_client's process-wide registry; the per-phase counts the
gauge shows are kept by the Controller (PhaseGauge), not here.
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from lms_operator.api.contract import PHASES

RECONCILES = Counter("lms_operator_reconciles_total", "Reconcile passes by trigger and result.",
                     ["trigger", "result"])
DURATION = Histogram("lms_operator_reconcile_duration_seconds", "Wall time of one reconcile pass.",
                     buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
ERRORS = Counter("lms_operator_errors_total", "Reconcile passes that raised, by exception type.", ["type"])
RESOURCES = Gauge("lms_operator_resources", "LargeModelServices per phase.", ["phase"])


class PhaseGauge:
    """Each resource's last phase, and the per-phase gauge computed from them."""

    def __init__(self) -> None:
        self.phase_of: dict[str, str] = {}

    def record(self, key: str, phase: str | None) -> None:
        """Remember one resource's phase (None = gone) and refresh the per-phase gauge."""
        if phase is None:
            self.phase_of.pop(key, None)
        else:
            self.phase_of[key] = phase
        for name in PHASES:
            RESOURCES.labels(phase=name).set(sum(1 for p in self.phase_of.values() if p == name))


def serve(port: int) -> None:
    """Start the /metrics HTTP server in a daemon thread (0 = disabled)."""
    if port:
        from prometheus_client import start_http_server

        start_http_server(port)
