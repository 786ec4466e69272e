"""Service proxy: plays kube-proxy for the project's Services in the kwok sandbox.

There is no kube-proxy (and no pod network) in the sandbox, so a Service's ClusterIP routes
nowhere. For every Service labelled app.kubernetes.io/part-of=lms and each of its named ports
(http, grpc, metrics) this opens a local TCP port and records it on the Service as the
annotation sandbox.lms.dev/<port name> = 127.0.0.1:PORT (the pod runner's style for pods).

Each new connection goes round-robin to a ready endpoint of the Service: the EndpointSlices the
real controller-manager keeps (conditions.ready and not terminating), each endpoint's pod mapped
to that pod's own sandbox.lms.dev/<port name> annotation. A connection that finds no ready
endpoint is closed at once; a connection already open is left alone when its endpoint goes
(like conntrack), so a pod draining in its preStop sleep finishes what it has.

The pod runner starts one (`ServiceProxy.start()`) in its own process: it is the node's kube-proxy.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import Any

PROJECT_SELECTOR = "app.kubernetes.io/part-of=lms"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
ANNOTATION_PREFIX = "sandbox.lms.dev/"
LOCAL_HOST = "127.0.0.1"
CONNECT_TIMEOUT = 3.0
CHUNK = 256 * 1024
log = logging.getLogger("serviceproxy")

Key = tuple[str, str]  # (namespace, name)


# -- pure parts -----------------------------------------------------------------------------------

def obj_key(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "default", meta.get("name") or ""


def service_port_names(service: Mapping[str, Any]) -> list[str]:
    """Names of a Service's TCP ports that the proxy serves (an unnamed port uses a named targetPort)."""
    names: list[str] = []
    for port in (service.get("spec") or {}).get("ports") or []:
        if (port.get("protocol") or "TCP") != "TCP":
            continue
        name = port.get("name") or (port.get("targetPort") if isinstance(port.get("targetPort"), str) else None)
        if name and name not in names:
            names.append(name)
    return names


def annotation(port_name: str) -> str:
    return ANNOTATION_PREFIX + port_name


def service_annotations(ports: Mapping[str, int]) -> dict[str, str]:
    """The annotations that say where the proxy listens for each of a Service's ports."""
    return {annotation(name): f"{LOCAL_HOST}:{port}" for name, port in sorted(ports.items())}


def endpoint_serving(endpoint: Mapping[str, Any]) -> bool:
    """Ready and not terminating, as kube-proxy reads an EndpointSlice (ready unset counts as ready)."""
    cond = endpoint.get("conditions") or {}
    return cond.get("ready") is not False and cond.get("terminating") is not True


def ready_addresses(slices: Iterable[Mapping[str, Any]], pods: Mapping[Key, Mapping[str, Any]],
                    port_name: str) -> list[str]:
    """Local addresses ("127.0.0.1:PORT") of a Service's ready endpoints for one port, sorted.

    An endpoint counts when its slice says ready and not terminating, its pod is known, not being
    deleted, and carries the pod runner's annotation for the port; the slice's podIP is fake.
    """
    out: set[str] = set()
    for sl in slices:
        ns = (sl.get("metadata") or {}).get("namespace") or "default"
        for ep in sl.get("endpoints") or []:
            ref = ep.get("targetRef") or {}
            if ref.get("kind") != "Pod" or not endpoint_serving(ep):
                continue
            pod = pods.get((ref.get("namespace") or ns, ref.get("name") or ""))
            if pod is None or (pod.get("metadata") or {}).get("deletionTimestamp"):
                continue
            address = ((pod.get("metadata") or {}).get("annotations") or {}).get(annotation(port_name))
            if address:
                out.add(address)
    return sorted(out)


class RoundRobin:
    """The ready backends of one Service port; each new connection takes the next one (thread-safe)."""

    def __init__(self, addresses: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._addresses: list[str] = sorted(set(addresses))
        self._next = 0

    def set(self, addresses: Iterable[str]) -> None:
        with self._lock:
            self._addresses = sorted(set(addresses))

    def addresses(self) -> list[str]:
        with self._lock:
            return list(self._addresses)

    def rotation(self) -> list[str]:
        """Backends in the order a new connection tries them: the next in turn first, the rest as fallbacks."""
        with self._lock:
            if not self._addresses:
                return []
            i = self._next % len(self._addresses)
            self._next += 1
            return self._addresses[i:] + self._addresses[:i]


# -- forwarding ------------------------------------------------------------------------------------

async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> bool:
    """Copy until EOF (then half-close dst; True) or an error (False)."""
    try:
        while data := await src.read(CHUNK):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof() and not dst.is_closing():
            dst.write_eof()
        return True
    except (ConnectionError, OSError, RuntimeError):
        return False


class Route:
    """One listening port forwarding each accepted connection to the next ready backend."""

    def __init__(self, backends: RoundRobin, name: str = "") -> None:
        self.backends = backends
        self.name = name
        self.port = 0
        self.served: Counter[str] = Counter()   # backend address -> connections forwarded
        self.refused = 0                         # connections closed for want of a ready endpoint
        self.open = 0
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str = LOCAL_HOST, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._handle, host, port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        """Stop accepting; connections already forwarded carry on until either side ends them."""
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _connect(self) -> tuple[str, asyncio.StreamReader, asyncio.StreamWriter] | None:
        for address in self.backends.rotation():
            host, _, port = address.rpartition(":")
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), CONNECT_TIMEOUT)
            except (OSError, ValueError, asyncio.TimeoutError) as exc:
                log.info("route %s: backend %s refused a connection: %s", self.name, address, exc)
                continue
            return address, reader, writer
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect()
        if upstream is None:
            self.refused += 1
            writer.close()
            return
        address, up_reader, up_writer = upstream
        self.served[address] += 1
        self.open += 1
        try:
            to_server = asyncio.ensure_future(_pipe(reader, up_writer))
            to_client = asyncio.ensure_future(_pipe(up_reader, writer))
            pending = {to_server, to_client}
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if any(not task.result() for task in done):
                    break  # a reset on one side ends both
            for task in pending:
                task.cancel()
        finally:
            self.open -= 1
            for w in (writer, up_writer):
                w.close()


class ProxyLoop:
    """An asyncio loop in a daemon thread that owns every Route's sockets."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="serviceproxy-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def open(self, backends: RoundRobin, name: str = "", port: int = 0) -> Route:
        """A started Route on a free local port (or `port`)."""
        route = Route(backends, name)
        self.call(route.start(LOCAL_HOST, port))
        return route

    def close(self, route: Route) -> None:
        self.call(route.close())

    def stop(self) -> None:
        """End every forwarded connection, then the loop (so nothing is left to close after it)."""
        if self.loop.is_running():
            try:
                self.call(_cancel_all(), timeout=5)
            except Exception:  # noqa: BLE001 - stopping anyway
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive() and not self.loop.is_closed():
            self.loop.close()


async def _cancel_all() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# -- the controller: Services, EndpointSlices, pods -> routes -------------------------------------

class Informer(threading.Thread):
    """List+watch one kind into a dict (raw API dicts by (namespace, name)); calls on_change after each change."""

    def __init__(self, name: str, list_fn: Callable[..., Any], serialize: Callable[[Any], Any],
                 selector: str, on_change: Callable[[], None], stopping: threading.Event) -> None:
        super().__init__(name=f"serviceproxy-{name}", daemon=True)
        self.kind = name
        self.list_fn = list_fn
        self.serialize = serialize
        self.selector = selector
        self.on_change = on_change
        self.stopping = stopping
        self.items: dict[Key, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.synced = threading.Event()

    def snapshot(self) -> dict[Key, dict[str, Any]]:
        with self.lock:
            return dict(self.items)

    def run(self) -> None:
        from kubernetes import watch
        from kubernetes.client.rest import ApiException

        while not self.stopping.is_set():
            try:
                listed = self.list_fn(label_selector=self.selector)
                with self.lock:
                    self.items = {obj_key(o): o for o in (self.serialize(i) for i in listed.items)}
                self.synced.set()
                self.on_change()
                w = watch.Watch()
                for event in w.stream(self.list_fn, label_selector=self.selector,
                                      resource_version=listed.metadata.resource_version,
                                      timeout_seconds=30, _request_timeout=60):
                    if self.stopping.is_set():
                        w.stop()
                        break
                    if event["type"] == "ERROR":
                        break
                    obj = event["raw_object"]
                    with self.lock:
                        if event["type"] == "DELETED":
                            self.items.pop(obj_key(obj), None)
                        else:
                            self.items[obj_key(obj)] = obj
                    self.on_change()
            except ApiException as exc:
                if exc.status != 410:
                    log.warning("%s watch failed: %s %s; retrying", self.kind, exc.status, exc.reason)
                    self.stopping.wait(1.0)
            except Exception as exc:  # noqa: BLE001 - API server restarts must not end the proxy
                if self.stopping.is_set():
                    break
                log.warning("%s watch error: %s; retrying", self.kind, exc)
                self.stopping.wait(1.0)


class ServiceProxy:
    """Keeps one Route per project Service port, fed from EndpointSlices and the pods' annotations."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.discovery = client.DiscoveryV1Api(api_client)
        self.stopping = threading.Event()
        self.loop = ProxyLoop()
        self.routes: dict[tuple[str, str, str], Route] = {}   # (namespace, service, port name)
        self._patched: dict[Key, str] = {}                     # service -> resourceVersion we annotated
        self._sync_lock = threading.Lock()
        ser = api_client.sanitize_for_serialization
        self.services = Informer("services", self.core.list_service_for_all_namespaces, ser,
                                 PROJECT_SELECTOR, self.sync, self.stopping)
        self.slices = Informer("endpointslices", self.discovery.list_endpoint_slice_for_all_namespaces, ser,
                               SERVICE_NAME_LABEL, self.sync, self.stopping)
        self.pods = Informer("pods", self.core.list_pod_for_all_namespaces, ser, PROJECT_SELECTOR, self.sync,
                             self.stopping)

    def start(self) -> "ServiceProxy":
        for informer in (self.pods, self.slices, self.services):
            informer.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        for route in list(self.routes.values()):
            try:
                self.loop.close(route)
            except Exception:  # noqa: BLE001 - shutting down
                pass
        self.loop.stop()

    def sync(self) -> None:
        """Bring routes, backends and Service annotations in line with the three caches."""
        if not (self.services.synced.is_set() and self.slices.synced.is_set() and self.pods.synced.is_set()):
            return
        with self._sync_lock:
            services = self.services.snapshot()
            pods = self.pods.snapshot()
            by_service: dict[Key, list[dict[str, Any]]] = {}
            for sl in self.slices.snapshot().values():
                ns = (sl.get("metadata") or {}).get("namespace") or "default"
                svc = ((sl.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL)
                if svc:
                    by_service.setdefault((ns, svc), []).append(sl)
            wanted: set[tuple[str, str, str]] = set()
            for key, service in services.items():
                if (service.get("metadata") or {}).get("deletionTimestamp"):
                    continue
                ports: dict[str, int] = {}
                for port_name in service_port_names(service):
                    rkey = (key[0], key[1], port_name)
                    wanted.add(rkey)
                    route = self.routes.get(rkey)
                    if route is None:
                        route = self.loop.open(RoundRobin(), f"{key[0]}/{key[1]}:{port_name}")
                        self.routes[rkey] = route
                        log.info("service %s/%s port %s: listening on %s:%d", *rkey, LOCAL_HOST, route.port)
                    before = route.backends.addresses()
                    route.backends.set(ready_addresses(by_service.get(key, []), pods, port_name))
                    if route.backends.addresses() != before:
                        log.info("service %s/%s port %s: backends %s", *rkey, route.backends.addresses())
                    ports[port_name] = route.port
                self._annotate(key, service, service_annotations(ports))
            for rkey in set(self.routes) - wanted:
                self.loop.close(self.routes.pop(rkey))
                log.info("service %s/%s port %s: closed", *rkey)

    def _annotate(self, key: Key, service: dict[str, Any], wanted: dict[str, str]) -> None:
        from kubernetes.client.rest import ApiException

        meta = service.get("metadata") or {}
        have = meta.get("annotations") or {}
        if not wanted or all(have.get(k) == v for k, v in wanted.items()):
            return
        rv = meta.get("resourceVersion") or ""
        if self._patched.get(key) == rv:
            return  # already patched this version; the watch brings the annotated one
        try:
            self.core.patch_namespaced_service(key[1], key[0], {"metadata": {"annotations": wanted}})
            self._patched[key] = rv
        except ApiException as exc:
            if exc.status != 404:
                log.warning("service %s/%s: annotate failed: %s %s", *key, exc.status, exc.reason)
