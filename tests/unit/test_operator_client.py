"""The API client against a local HTTP server: server-side apply request shape and error mapping."""
from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from lms_operator.runtime.controller import owner_of
from lms_operator.k8s import errors
from lms_operator.k8s.client import FIELD_MANAGER, Kube
from lms_operator.reconcile.serving import observe_deployment

SEEN: list[dict[str, Any]] = []


class Handler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        SEEN.append({"method": self.command, "path": self.path, "type": self.headers.get("Content-Type"),
                     "auth": self.headers.get("Authorization"), "body": json.loads(body) if body else None})
        if self.command == "POST":
            status, reply = 409, {"kind": "Status", "reason": "AlreadyExists", "message": "exists"}
        elif "missing" in self.path:
            status, reply = 404, {"kind": "Status", "reason": "NotFound", "message": "nope"}
        else:
            status, reply = 200, {"metadata": {"name": "x", "generation": 1}, "spec": {}}
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def kube() -> Iterator[Kube]:
    from kubernetes import client

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    config = client.Configuration()
    config.host = f"http://127.0.0.1:{server.server_address[1]}"
    config.api_key = {"authorization": "Bearer t0ken"}
    SEEN.clear()
    try:
        yield Kube(client.ApiClient(config))
    finally:
        server.shutdown()


DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "m-triton", "namespace": "ns"},
              "spec": {"template": {}}}


def test_apply_is_server_side_apply_with_our_field_manager(kube: Kube) -> None:
    asyncio.run(kube.apply(DEPLOYMENT))
    req = SEEN[-1]
    assert req["method"] == "PATCH" and req["type"] == "application/apply-patch+yaml"
    assert req["path"] == f"/apis/apps/v1/namespaces/ns/deployments/m-triton?fieldManager={FIELD_MANAGER}&force=true"
    assert req["body"] == DEPLOYMENT and req["auth"] == "Bearer t0ken"


def test_create_conflict_returns_the_existing_object(kube: Kube) -> None:
    obj, created = asyncio.run(kube.create({**DEPLOYMENT, "kind": "Deployment"}))
    assert not created and obj["metadata"]["name"] == "x"
    assert [r["method"] for r in SEEN] == ["POST", "GET"]


def test_missing_object_is_none_and_status_patch_is_a_merge_patch(kube: Kube) -> None:
    assert asyncio.run(kube.get("v1", "PersistentVolumeClaim", "ns", "missing")) is None
    asyncio.run(kube.patch_status("serving.lms.dev/v1alpha1", "LargeModelService", "ns", "m", {"phase": "Ready"}))
    req = SEEN[-1]
    assert req["type"] == "application/merge-patch+json"
    assert req["path"].startswith("/apis/serving.lms.dev/v1alpha1/namespaces/ns/largemodelservices/m/status?")
    assert req["body"] == {"status": {"phase": "Ready"}}
    with pytest.raises(errors.NotFound):
        asyncio.run(kube.call("GET", "/api/v1/namespaces/ns/pods/missing"))


def test_deployment_observation() -> None:
    dep = {"metadata": {"generation": 2}, "spec": {"replicas": 2, "template": {"metadata": {"labels": {
        "serving.lms.dev/version": "k2"}}}},
        "status": {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "readyReplicas": 3,
                   "availableReplicas": 3}}
    mid = observe_deployment(dep)
    assert mid is not None and mid.version == "k2" and not mid.rolled_out and mid.ready_replicas == 3
    dep["status"].update(replicas=2)
    done = observe_deployment(dep)
    assert done is not None and done.rolled_out
    assert observe_deployment(None) is None


def test_owner_of_finds_the_controlling_resource() -> None:
    job = {"metadata": {"namespace": "ns", "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x"},
        {"apiVersion": "serving.lms.dev/v1alpha1", "kind": "LargeModelService", "name": "m"}]}}
    assert owner_of(job) == ("ns", "m")
    assert owner_of({"metadata": {"namespace": "ns"}}) is None
