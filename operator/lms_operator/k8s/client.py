"""Async facade over the sync kubernetes client: every call runs in a worker thread.

The operator's event loop must never block, and the official client is
synchronous, so each request goes through asyncio.to_thread. Writes use
server-side apply with one field manager, so re-applying an identical body is a
no-op on the server (no new ReplicaSet, no event storm).
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import urlencode

from lms_operator.k8s import errors, paths

FIELD_MANAGER = "lms-operator"
REQUEST_TIMEOUT = (5, 30)
POOL_SIZE = 32
THROTTLE_RETRIES = 3
MAX_RETRY_AFTER = 30.0


def load_api_client() -> Any:
    """An ApiClient from KUBECONFIG / ~/.kube/config, or the in-cluster ServiceAccount."""
    from kubernetes import client, config

    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)
    except config.ConfigException:
        config.load_kube_config(client_configuration=cfg)
    # one pooled connection per executor thread (the default, cpus * 5, drops and re-opens
    # TLS connections once more requests are in flight)
    cfg.connection_pool_maxsize = POOL_SIZE
    return client.ApiClient(cfg)


class Kube:
    """The few verbs the operator needs, as coroutines returning plain dicts."""

    def __init__(self, api_client: Any | None = None) -> None:
        self._api = api_client if api_client is not None else load_api_client()

    def _call(self, method: str, path: str, query: dict[str, str] | None = None, body: Any = None,
              content_type: str = "application/json") -> Any:
        url_path = path + ("?" + urlencode(query) if query else "")
        headers = {"Accept": "application/json", "Content-Type": content_type}
        serialized = self._api.param_serialize(method, url_path, header_params=headers,
                                               auth_settings=["BearerToken"])
        _, url, headers = serialized[0], serialized[1], serialized[2]
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(THROTTLE_RETRIES + 1):
            resp = self._api.rest_client.pool_manager.request(method, url, body=data, headers=headers,
                                                              timeout=_timeout())
            if resp.status != 429 or attempt == THROTTLE_RETRIES:
                break
            # API priority and fairness asked us to wait: honour Retry-After here, in this worker
            # thread, instead of failing the pass and letting the next trigger retry at once.
            time.sleep(retry_after_seconds(resp.headers.get("Retry-After")))
        if not 200 <= resp.status < 300:
            raise errors.from_response(resp.status, resp.data)
        return json.loads(resp.data) if resp.data else None

    async def call(self, method: str, path: str, query: dict[str, str] | None = None, body: Any = None,
                   content_type: str = "application/json") -> Any:
        return await asyncio.to_thread(self._call, method, path, query, body, content_type)

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return await self.call("GET", paths.item(api_version, kind, namespace, name))  # type: ignore[no-any-return]
        except errors.NotFound:
            return None

    async def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        result = await self.call("GET", paths.collection(api_version, kind, namespace), {"labelSelector": selector})
        return list(result.get("items", []))

    async def create(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """(object, created): a 409 means it is already there, and the existing one is returned."""
        meta = obj["metadata"]
        try:
            created = await self.call("POST", paths.collection(obj["apiVersion"], obj["kind"], meta["namespace"]),
                                      body=obj)
            return created, True
        except errors.Conflict:
            existing = await self.get(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
            if existing is None:
                raise
            return existing, False

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply with our field manager, taking ownership of conflicting fields."""
        meta = obj["metadata"]
        path = paths.item(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        return await self.call("PATCH", path, {"fieldManager": FIELD_MANAGER, "force": "true"}, obj,  # type: ignore[no-any-return]
                               content_type="application/apply-patch+yaml")

    async def patch(self, api_version: str, kind: str, namespace: str, name: str,
                    patch: dict[str, Any]) -> dict[str, Any]:
        """JSON merge patch of an object: a one-off change outside the fields server-side apply owns."""
        return await self.call("PATCH", paths.item(api_version, kind, namespace, name),  # type: ignore[no-any-return]
                               {"fieldManager": FIELD_MANAGER}, patch, content_type="application/merge-patch+json")

    async def delete(self, api_version: str, kind: str, namespace: str, name: str, uid: str) -> None:
        """Delete exactly this object (uid precondition), its dependents in the background; gone is fine."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background",
                "preconditions": {"uid": uid}}
        try:
            await self.call("DELETE", paths.item(api_version, kind, namespace, name), body=body)
        except (errors.NotFound, errors.Conflict):
            pass

    async def patch_status(self, api_version: str, kind: str, namespace: str, name: str,
                           status: dict[str, Any]) -> dict[str, Any]:
        """JSON merge patch of the status subresource (None values remove fields)."""
        path = paths.item(api_version, kind, namespace, name) + "/status"
        return await self.call("PATCH", path, {"fieldManager": FIELD_MANAGER}, {"status": status},  # type: ignore[no-any-return]
                               content_type="application/merge-patch+json")

    async def api_exists(self, group_version: str) -> bool:
        """Whether the API server serves a group/version (discovery is open to every identity)."""
        try:
            await self.call("GET", f"/apis/{group_version}")
            return True
        except errors.NotFound:
            return False


def retry_after_seconds(value: str | None) -> float:
    """Seconds a 429 asks to wait (Retry-After in seconds), at least 1 and at most 30."""
    try:
        return min(MAX_RETRY_AFTER, max(1.0, float(value or 1)))
    except ValueError:
        return 1.0


def _timeout() -> Any:
    import urllib3

    return urllib3.Timeout(connect=REQUEST_TIMEOUT[0], read=REQUEST_TIMEOUT[1])
