"""The scale bench's view of the API server, through the official client's typed calls.

Answers stay plain JSON dicts (`_preload_content=False`, parsed once): the bench reads a few
fields of thousands of objects, and model deserialization would cost its process the CPU the
operator under test competes for on a small machine.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lms_harness.cluster import api_client

GROUP, VERSION, PLURAL = "serving.lms.dev", "v1alpha1", "largemodelservices"

# (typed API class, its namespaced list method, its namespaced patch method) by plural
KINDS = {
    "pods": ("CoreV1Api", "list_namespaced_pod", "patch_namespaced_pod"),
    "services": ("CoreV1Api", "list_namespaced_service", "patch_namespaced_service"),
    "deployments": ("AppsV1Api", "list_namespaced_deployment", "patch_namespaced_deployment"),
    "jobs": ("BatchV1Api", "list_namespaced_job", "patch_namespaced_job"),
    "horizontalpodautoscalers": ("AutoscalingV2Api", "list_namespaced_horizontal_pod_autoscaler",
                                 "patch_namespaced_horizontal_pod_autoscaler"),
    "poddisruptionbudgets": ("PolicyV1Api", "list_namespaced_pod_disruption_budget",
                             "patch_namespaced_pod_disruption_budget"),
}
PLURAL_OF_KIND = {"Deployment": "deployments", "Service": "services", "HorizontalPodAutoscaler": "horizontalpodautoscalers",
                  "PodDisruptionBudget": "poddisruptionbudgets", "Job": "jobs", "Pod": "pods"}


def _json(resp: Any) -> Any:
    data = resp.data
    if not 200 <= resp.status < 300:
        raise RuntimeError(f"{resp.status} {data[:300]!r}")
    return json.loads(data) if data else None


class ClusterApi:
    """The calls the scale bench makes, with the bench's own (admin) identity."""

    def __init__(self, kubeconfig: Path, pool_size: int = 32) -> None:
        from kubernetes import client

        self.client = api_client(kubeconfig, pool_size)
        self.core = client.CoreV1Api(self.client)
        self.custom = client.CustomObjectsApi(self.client)
        self._typed = {name: getattr(client, name)(self.client) for name, _, _ in KINDS.values()}

    # -- LargeModelServices
    def create_lms(self, namespace: str, body: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        extra = {"dry_run": "All"} if dry_run else {}
        return _json(self.custom.create_namespaced_custom_object(  # type: ignore[no-any-return]
            GROUP, VERSION, namespace, PLURAL, body, _preload_content=False, **extra))

    def list_lms(self, namespace: str) -> dict[str, Any]:
        return _json(self.custom.list_namespaced_custom_object(  # type: ignore[no-any-return]
            GROUP, VERSION, namespace, PLURAL, _preload_content=False, _request_timeout=120))

    # -- built-in kinds
    def create_namespace(self, name: str) -> None:
        self.core.create_namespace({"metadata": {"name": name}}, _preload_content=False)

    def create_claim(self, namespace: str, name: str, size: str = "1Gi") -> None:
        body = {"metadata": {"name": name},
                "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": size}}}}
        self.core.create_namespaced_persistent_volume_claim(namespace, body, _preload_content=False)

    def list(self, namespace: str, plural: str, label_selector: str | None = None) -> dict[str, Any]:
        api, list_method, _ = KINDS[plural]
        return _json(getattr(self._typed[api], list_method)(  # type: ignore[no-any-return]
            namespace, label_selector=label_selector, _preload_content=False, _request_timeout=120))

    def apply(self, obj: dict[str, Any], field_manager: str) -> None:
        """Server-side apply, taking ownership of conflicting fields."""
        api, _, patch_method = KINDS[PLURAL_OF_KIND[obj["kind"]]]
        _json(getattr(self._typed[api], patch_method)(
            obj["metadata"]["name"], obj["metadata"]["namespace"], obj, field_manager=field_manager, force=True,
            _content_type="application/apply-patch+yaml", _preload_content=False))

    def patch_pod_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        _json(self.core.patch_namespaced_pod_status(name, namespace, {"status": status},
                                                    _content_type="application/strategic-merge-patch+json",
                                                    _preload_content=False))

    def apiserver_metrics(self) -> str:
        """The API server's own /metrics text (no typed call exists for it)."""
        method, url, headers, body, post = self.client.param_serialize(
            "GET", "/metrics", header_params={"Accept": "text/plain"}, auth_settings=["BearerToken"])
        resp = self.client.call_api(method, url, header_params=headers, body=body, post_params=post,
                                    _request_timeout=60)
        data = resp.read()
        if not 200 <= resp.status < 300:
            raise RuntimeError(f"GET /metrics: {resp.status} {data[:300]!r}")
        return str(data.decode())

    # -- watches
    def _watch_call(self, namespace: str, plural: str, **params: Any) -> Any:
        if plural == PLURAL:
            return self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, **params)
        api, list_method, _ = KINDS[plural]
        return getattr(self._typed[api], list_method)(namespace, **params)

    def watch(self, namespace: str, plural: str, stop: threading.Event,
              label_selector: str | None = None) -> Iterator[tuple[float, dict[str, Any]]]:
        """(arrival time, event) for a collection from its current state on (nothing re-listed);
        an expired resourceVersion starts again from the current state."""
        from kubernetes.watch.watch import iter_resp_lines

        def current() -> str:
            listed = _json(self._watch_call(namespace, plural, label_selector=label_selector, limit=1,
                                            _preload_content=False, _request_timeout=120))
            return str(listed["metadata"]["resourceVersion"])

        rv = current()
        while not stop.is_set():
            resp = self._watch_call(namespace, plural, label_selector=label_selector, watch=True,
                                    allow_watch_bookmarks=True, timeout_seconds=60, resource_version=rv,
                                    _preload_content=False, _request_timeout=90)
            try:
                for line in iter_resp_lines(resp):
                    if not line.strip():
                        continue
                    ev = json.loads(line)
                    if ev.get("type") == "ERROR":
                        rv = current()
                        break
                    rv = ((ev.get("object") or {}).get("metadata") or {}).get("resourceVersion", rv)
                    if ev.get("type") != "BOOKMARK":
                        yield time.monotonic(), ev
                    if stop.is_set():
                        return
            finally:
                resp.release_conn()
