"""kopf settings tuned at start-up; each line says why it differs from kopf's default."""
from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, cast

import kopf

PEERING_NAME = "lms-operator"


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's record of the last handled spec, for change-detecting handlers; the operator has
    none, and building the record deep-copied every watched body (5% of its CPU at 1000
    resources), so there is nothing to build or store."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        return cast(kopf.BodyEssence, {})

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def configure(settings: kopf.OperatorSettings, *, clusterwide: bool, standalone: bool,
              namespaces: tuple[str, ...] = ()) -> None:
    # Namespace scanning (list/watch of Namespace objects) only serves glob patterns. With exact
    # --namespace names it needs a cluster-scope permission the per-namespace RBAC does not
    # grant, and kopf retried the 403 for ~70 s before serving anything (bench/scale.py: first
    # Deployment 69 s after apply, restart re-check 87 s at 30 objects).
    if not clusterwide and namespaces and not any(ch in ns for ns in namespaces for ch in "*?[!"):
        settings.scanning.disabled = True
    # Watches: ask the API server to end each watch after 5 minutes and give the client a little
    # longer, so a silently dropped connection (load balancers, NAT) is noticed and re-listed.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    # Reconnect a broken watch quickly, but not in a tight loop.
    settings.watching.reconnect_backoff = 1.0
    # API errors (5xx, 429 from API priority and fairness): retry with a growing back-off and
    # always wait at least as long as the server's Retry-After asks.
    settings.networking.error_backoffs = [1, 2, 5, 10, 20, 30]
    settings.networking.connect_timeout = 10
    settings.networking.enforce_retry_after = False
    # Unexpected framework errors: back off up to 5 minutes instead of kopf's 10.
    settings.queueing.error_delays = [1, 2, 5, 10, 30, 60, 120, 300]
    # Handler errors that are neither Temporary nor Permanent: retry after 30 s, not 60 s.
    settings.execution.default_backoff = 30
    # Only warnings and errors from kopf's own logging become Kubernetes Events; the operator
    # posts its step events explicitly, so "Handler succeeded" noise stays out of `kubectl describe`.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "lms-operator"
    settings.persistence.diffbase_storage = NoDiffBase()
    # Peering: when the KopfPeering (or ClusterKopfPeering) object named lms-operator exists, only
    # the highest-priority replica acts; without it the operator runs standalone.
    settings.peering.name = PEERING_NAME
    settings.peering.clusterwide = clusterwide
    settings.peering.mandatory = False
    settings.peering.standalone = standalone
