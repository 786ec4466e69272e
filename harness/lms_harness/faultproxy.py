"""A small counting and fault-injecting HTTP/1.1 proxy in front of a Kubernetes API server.

Clients (the operator) talk plain HTTP (or TLS with --tls-cert/--tls-key) to the proxy; the
proxy forwards every request over TLS to the real API server with the kubeconfig's
credentials, streams responses (watches included) back unchanged, and counts requests per
status code and user agent. Armed rules answer the next N matching requests itself with an
error (429 with Retry-After, 500, ...) instead of forwarding them, so back-off can be tested
against a real API server.

Control endpoints on the same port (never forwarded):
  GET  /__faultproxy/stats           counters as JSON
  POST /__faultproxy/inject          {"status": 429, "count": 5, "retry_after": 1,
                                      "method": "PATCH", "path": "regex"}  arm a rule
  POST /__faultproxy/reset           drop rules and zero the counters

CLI:
  python -m lms_harness.faultproxy --kubeconfig KC --write-kubeconfig OUT [--listen 127.0.0.1:0]
                      [--inject 429:5:1[:METHOD[:PATHREGEX]]] [--stats-out FILE]
prints `listening on http://HOST:PORT` and runs until SIGTERM/SIGINT.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import signal
import ssl
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

CONTROL_PREFIX = "/__faultproxy/"
MAX_HEAD = 64 * 1024
HOP_HEADERS = {"connection", "keep-alive", "proxy-connection", "te", "upgrade"}
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests",
           500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


class ProxyError(Exception):
    """A malformed request or kubeconfig; the message names the field."""


# -- pure parts ---------------------------------------------------------------------------------

@dataclass
class Rule:
    """Answer the next `remaining` requests matching method/path with `status` (and Retry-After)."""

    status: int
    remaining: int
    retry_after: float | None = None
    method: str | None = None
    path: str | None = None
    injected: int = 0

    def matches(self, method: str, target: str) -> bool:
        """True while armed and the request's method and path (regex search) match."""
        if self.remaining <= 0:
            return False
        if self.method and self.method.upper() != method.upper():
            return False
        return not self.path or re.search(self.path, target) is not None


def parse_rule(text: str) -> Rule:
    """`STATUS:COUNT[:RETRY_AFTER[:METHOD[:PATHREGEX]]]` -> Rule (the CLI's --inject)."""
    parts = text.split(":", 4)
    try:
        status, count = int(parts[0]), int(parts[1])
        retry = float(parts[2]) if len(parts) > 2 and parts[2] != "" else None
    except (IndexError, ValueError):
        raise ProxyError(f"--inject: {text!r} is not STATUS:COUNT[:RETRY_AFTER[:METHOD[:PATHREGEX]]]") from None
    if not 400 <= status <= 599 or count < 0:
        raise ProxyError(f"--inject: status must be 400-599 and count >= 0, got {text!r}")
    method = parts[3] or None if len(parts) > 3 else None
    path = parts[4] or None if len(parts) > 4 else None
    if path:
        re.compile(path)
    return Rule(status=status, remaining=count, retry_after=retry, method=method, path=path)


def rule_from_json(doc: dict[str, Any]) -> Rule:
    """The control endpoint's JSON body -> Rule."""
    try:
        status = int(doc["status"])
        count = int(doc.get("count", 1))
    except (KeyError, TypeError, ValueError):
        raise ProxyError("inject: body needs an integer `status` (and optional `count`)") from None
    if not 400 <= status <= 599 or count < 0:
        raise ProxyError("inject: status must be 400-599 and count >= 0")
    retry = doc.get("retry_after")
    path = doc.get("path")
    if path:
        re.compile(path)
    return Rule(status=status, remaining=count, retry_after=None if retry is None else float(retry),
                method=doc.get("method"), path=path)


@dataclass
class RequestHead:
    """Request line and headers as received (header names keep their case)."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        """First value of header `name` (case-insensitive)."""
        low = name.lower()
        return next((v for k, v in self.headers if k.lower() == low), None)


def parse_request_head(raw: bytes) -> RequestHead:
    """Parse `METHOD TARGET HTTP/1.x` plus headers (raw ends with the blank line)."""
    try:
        text = raw.decode("latin-1")
        lines = text.split("\r\n")
        method, target, version = lines[0].split(" ", 2)
    except ValueError:
        raise ProxyError("request line is not `METHOD TARGET VERSION`") from None
    if not version.startswith("HTTP/1."):
        raise ProxyError(f"unsupported protocol {version!r}")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ProxyError(f"malformed header line {line[:40]!r}")
        headers.append((name.strip(), value.strip()))
    return RequestHead(method, target, version, headers)


def parse_status_head(raw: bytes) -> tuple[int, list[tuple[str, str]]]:
    """Status code and headers of a response head."""
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ProxyError(f"bad status line {lines[0][:60]!r}")
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    return int(parts[1]), headers


def header(headers: list[tuple[str, str]], name: str) -> str | None:
    """First value of `name` in a header list (case-insensitive)."""
    low = name.lower()
    return next((v for k, v in headers if k.lower() == low), None)


def impersonation_headers(user: str | None) -> list[tuple[str, str]]:
    """Impersonate-User/Group headers for `user`; a ServiceAccount gets its groups as the token would."""
    if not user:
        return []
    out = [("Impersonate-User", user)]
    parts = user.split(":")
    if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
        out += [("Impersonate-Group", "system:serviceaccounts"),
                ("Impersonate-Group", f"system:serviceaccounts:{parts[2]}")]
    out.append(("Impersonate-Group", "system:authenticated"))
    return out


def upstream_head(req: RequestHead, host: str, body_length: int,
                  extra: list[tuple[str, str]] | None = None) -> bytes:
    """The request head as sent upstream: Host rewritten, hop-by-hop headers dropped, keep-alive.

    The body goes with a Content-Length (a chunked request body was de-chunked on the way in).
    With `extra` impersonation headers, any the client sent are replaced.
    """
    lines = [f"{req.method} {req.target} HTTP/1.1", f"Host: {host}"]
    for k, v in req.headers:
        low = k.lower()
        if low in HOP_HEADERS or low in ("host", "content-length", "transfer-encoding"):
            continue
        if extra and low.startswith("impersonate-"):
            continue
        lines.append(f"{k}: {v}")
    lines += [f"{k}: {v}" for k, v in extra or []]
    if body_length or req.method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {body_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def error_response(status: int, retry_after: float | None, method: str, target: str, close: bool = False) -> bytes:
    """A Kubernetes-style `Status` error answer, as the API server writes one."""
    reason = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}.get(status, "Unknown")
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": f"injected by faultproxy: {status} for {method} {target}",
                            "reason": reason, "code": status}
    if retry_after is not None:
        body["details"] = {"retryAfterSeconds": int(round(retry_after))}
    data = json.dumps(body).encode()
    head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", "Content-Type: application/json",
            f"Content-Length: {len(data)}", "Connection: close" if close else "Connection: keep-alive"]
    if retry_after is not None:
        head.append(f"Retry-After: {int(round(retry_after))}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


def json_response(status: int, doc: Any) -> bytes:
    """Plain JSON answer for the control endpoints."""
    data = json.dumps(doc, indent=1).encode()
    return (f"HTTP/1.1 {status} {REASONS.get(status, 'OK')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: keep-alive\r\n\r\n").encode() + data


def resource_of(method: str, target: str) -> str:
    """`PATCH deployments/status`-style key of a request (kind of object and subresource, no names)."""
    parts = [p for p in target.split("?", 1)[0].split("/") if p]
    if parts[:1] == ["api"]:
        parts = parts[2:]
    elif parts[:1] == ["apis"]:
        parts = parts[3:]
    else:
        return f"{method} /{parts[0] if parts else ''}"
    if parts[:1] == ["namespaces"] and len(parts) >= 3:
        parts = parts[2:]
    if not parts:
        return f"{method} -"
    key = parts[0] + (f"/{parts[2]}" if len(parts) > 2 else "")
    return f"{method} {key}{'?watch' if 'watch=' in target else ''}"


def agent_family(user_agent: str | None) -> str:
    """`kopf/1.37 (...)` -> `kopf`; the product token counts requests per client kind."""
    if not user_agent:
        return "-"
    return user_agent.split("/", 1)[0].split(" ", 1)[0] or "-"


@dataclass
class Stats:
    """What passed through: requests per status, per method, per user agent; injected answers."""

    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    by_method: Counter[str] = field(default_factory=Counter)
    by_agent: Counter[str] = field(default_factory=Counter)
    by_agent_status: Counter[str] = field(default_factory=Counter)
    by_resource: Counter[str] = field(default_factory=Counter)
    injected: Counter[int] = field(default_factory=Counter)
    upstream_failures: int = 0
    connections: int = 0
    started: float = field(default_factory=time.time)

    def record(self, method: str, agent: str, status: int, target: str = "") -> None:
        """Count one answered request."""
        self.requests += 1
        if target:
            self.by_resource[resource_of(method, target)] += 1
        self.by_status[status] += 1
        self.by_method[method] += 1
        self.by_agent[agent] += 1
        self.by_agent_status[f"{agent} {status}"] += 1

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counters (status codes as strings)."""
        return {"requests": self.requests, "http_429": self.by_status.get(429, 0),
                "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
                "by_method": dict(sorted(self.by_method.items())),
                "by_agent": dict(sorted(self.by_agent.items())),
                "by_agent_status": dict(sorted(self.by_agent_status.items())),
                "by_resource": dict(self.by_resource.most_common()),
                "injected": {str(k): v for k, v in sorted(self.injected.items())},
                "upstream_failures": self.upstream_failures, "connections": self.connections,
                "uptime_s": round(time.time() - self.started, 3)}


# -- kubeconfig -----------------------------------------------------------------------------

@dataclass
class Upstream:
    """Where and how to reach the real API server."""

    host: str
    port: int
    ssl_context: ssl.SSLContext | None
    server_name: str | None
    token: str | None = None


def _material(entry: dict[str, Any], key: str, base: Path, tmp: Path) -> str | None:
    """Path of a kubeconfig credential given as `key` (file) or `key-data` (base64)."""
    if entry.get(f"{key}-data"):
        out = tmp / key
        out.write_bytes(base64.b64decode(entry[f"{key}-data"]))
        return str(out)
    if entry.get(key):
        p = Path(entry[key])
        return str(p if p.is_absolute() else base / p)
    return None


def load_kubeconfig(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(cluster, user, context) entries of the current context."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ProxyError(f"{path}: cannot read kubeconfig: {exc}") from None
    ctx_name = doc.get("current-context")
    ctxs = {c["name"]: c["context"] for c in doc.get("contexts") or []}
    if ctx_name not in ctxs:
        raise ProxyError(f"{path}: current-context {ctx_name!r} not found")
    ctx = ctxs[ctx_name]
    clusters = {c["name"]: c["cluster"] for c in doc.get("clusters") or []}
    users = {u["name"]: u.get("user") or {} for u in doc.get("users") or []}
    if ctx.get("cluster") not in clusters:
        raise ProxyError(f"{path}: cluster {ctx.get('cluster')!r} of context {ctx_name!r} not found")
    return clusters[ctx["cluster"]], users.get(ctx.get("user"), {}), ctx


def upstream_from_kubeconfig(path: Path) -> Upstream:
    """TLS context with the cluster's CA and the user's client certificate (if any)."""
    cluster, user, _ = load_kubeconfig(path)
    url = urlsplit(cluster.get("server", ""))
    if url.scheme not in ("https", "http") or not url.hostname:
        raise ProxyError(f"{path}: cluster.server {cluster.get('server')!r} is not an http(s) URL")
    port = url.port or (443 if url.scheme == "https" else 80)
    if url.scheme == "http":
        return Upstream(url.hostname, port, None, None, user.get("token"))
    tmp = Path(tempfile.mkdtemp(prefix="faultproxy-"))
    base = path.parent
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if cluster.get("insecure-skip-tls-verify"):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ca = _material(cluster, "certificate-authority", base, tmp)
        if ca:
            ctx.load_verify_locations(cafile=ca)
    cert = _material(user, "client-certificate", base, tmp)
    key = _material(user, "client-key", base, tmp)
    if cert and key:
        ctx.load_cert_chain(cert, key)
    return Upstream(url.hostname, port, ctx, cluster.get("tls-server-name") or url.hostname, user.get("token"))


def client_kubeconfig(source: Path, proxy_url: str, ca_file: str | None = None) -> dict[str, Any]:
    """A kubeconfig that reaches the cluster through the proxy (same user name, no client cert).

    Impersonation (`as`, `as-groups`) and bearer tokens are kept: they travel as headers.
    """
    cluster, user, ctx = load_kubeconfig(source)
    new_cluster: dict[str, Any] = {"server": proxy_url}
    if ca_file:
        new_cluster["certificate-authority"] = ca_file
    new_user = {k: v for k, v in user.items() if not k.startswith(("client-certificate", "client-key"))}
    return {"apiVersion": "v1", "kind": "Config", "current-context": "faultproxy",
            "clusters": [{"name": "faultproxy", "cluster": new_cluster}],
            "users": [{"name": "faultproxy", "user": new_user}],
            "contexts": [{"name": "faultproxy", "context": {"cluster": "faultproxy", "user": "faultproxy",
                                                             **({"namespace": ctx["namespace"]} if ctx.get("namespace") else {})}}]}


# -- the proxy ------------------------------------------------------------------------------

class ClientGone(Exception):
    """The downstream client closed its connection."""


class FaultProxy:
    """Counting, fault-injecting forwarder; run it with `serve()` or `start_in_thread()`."""

    def __init__(self, upstream: Upstream, host: str = "127.0.0.1", port: int = 0,
                 server_ssl: ssl.SSLContext | None = None, impersonate: str | None = None) -> None:
        self.upstream = upstream
        self.impersonate = impersonate
        self.host, self.port = host, port
        self.server_ssl = server_ssl
        self.rules: list[Rule] = []
        self.stats = Stats()
        # (monotonic time, method, target, status, injected) of recent answers, for back-off checks
        self.history: deque[tuple[float, str, str, int, bool]] = deque(maxlen=20000)
        self._lock = threading.Lock()
        self._server: asyncio.base_events.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # rules and counters (thread-safe: tests call these from their own thread)
    def inject(self, status: int, count: int = 1, retry_after: float | None = None,
               method: str | None = None, path: str | None = None) -> Rule:
        """Answer the next `count` matching requests with `status` instead of forwarding them."""
        rule = Rule(status=status, remaining=count, retry_after=retry_after, method=method, path=path)
        with self._lock:
            self.rules.append(rule)
        return rule

    def reset(self) -> None:
        """Drop every rule and zero the counters."""
        with self._lock:
            self.rules.clear()
            self.stats = Stats()
            self.history.clear()

    def snapshot(self) -> dict[str, Any]:
        """Current counters plus the armed rules."""
        with self._lock:
            doc = self.stats.as_dict()
            doc["rules"] = [{"status": r.status, "remaining": r.remaining, "injected": r.injected,
                             "method": r.method, "path": r.path} for r in self.rules]
        return doc

    def _take_rule(self, method: str, target: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, target):
                    rule.remaining -= 1
                    rule.injected += 1
                    self.stats.injected[rule.status] += 1
                    return rule
        return None

    def _record(self, method: str, agent: str, status: int, target: str = "", injected: bool = False) -> None:
        with self._lock:
            self.stats.record(method, agent, status, target)
            self.history.append((time.monotonic(), method, target, status, injected))

    def requests_since(self, since: float) -> list[tuple[float, str, str, int, bool]]:
        """Answers recorded at or after monotonic time `since`."""
        with self._lock:
            return [h for h in self.history if h[0] >= since]

    @property
    def url(self) -> str:
        """Base URL clients use."""
        return f"{'https' if self.server_ssl else 'http'}://{self.host}:{self.port}"

    # serving
    async def start(self) -> None:
        """Listen (port 0 picks a free one; `self.port` holds it after)."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port, ssl=self.server_ssl,
                                                  limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and drop every open connection (watches included)."""
        if self._server is not None:
            self._server.close()
            for w in list(self._conns):
                w.close()
            tasks = [t for t in self._tasks if not t.done()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._server.wait_closed()

    def start_in_thread(self) -> str:
        """Run the proxy on its own event loop in a daemon thread; returns its URL."""
        ready = threading.Event()
        errors: list[BaseException] = []

        def main() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(self.start())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                errors.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self.close())
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

        self._thread = threading.Thread(target=main, name="faultproxy", daemon=True)
        self._thread.start()
        ready.wait(30)
        if errors:
            raise errors[0]
        return self.url

    def stop(self) -> None:
        """Stop a proxy started with `start_in_thread`."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        up = self.upstream
        return await asyncio.wait_for(asyncio.open_connection(
            up.host, up.port, ssl=up.ssl_context, server_hostname=up.server_name if up.ssl_context else None,
            limit=MAX_HEAD), timeout=10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        with self._lock:
            self.stats.connections += 1
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                try:
                    raw = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ssl.SSLError):
                    return
                try:
                    req = parse_request_head(raw)
                except ProxyError as exc:
                    writer.write(json_response(400, {"error": str(exc)}))
                    await writer.drain()
                    return
                body = await self._read_request_body(reader, req)
                if req.target.startswith(CONTROL_PREFIX):
                    writer.write(self._control(req, body))
                    await writer.drain()
                    continue
                agent = agent_family(req.get("User-Agent"))
                rule = self._take_rule(req.method, req.target)
                if rule is not None:
                    self._record(req.method, agent, rule.status, req.target, injected=True)
                    writer.write(error_response(rule.status, rule.retry_after, req.method, req.target))
                    await writer.drain()
                    continue
                if upstream is not None and (upstream[0].at_eof() or upstream[1].is_closing()):
                    upstream[1].close()  # the server closed an idle keep-alive connection
                    upstream = None
                if upstream is None:
                    try:
                        upstream = await self._open_upstream()
                    except (OSError, asyncio.TimeoutError, ssl.SSLError):
                        with self._lock:
                            self.stats.upstream_failures += 1
                        return  # like the real server being away: the connection just drops
                keep = await self._forward(req, body, agent, upstream, writer)
                if not keep:
                    return
        except (ConnectionError, ClientGone, asyncio.IncompleteReadError, ssl.SSLError):
            return
        finally:
            self._conns.discard(writer)
            if upstream is not None:
                upstream[1].close()
            writer.close()

    async def _read_request_body(self, reader: asyncio.StreamReader, req: RequestHead) -> bytes:
        length = req.get("Content-Length")
        if length:
            return await reader.readexactly(int(length))
        if (req.get("Transfer-Encoding") or "").lower() == "chunked":
            return await read_chunked(reader)
        return b""

    def _control(self, req: RequestHead, body: bytes) -> bytes:
        verb = req.target[len(CONTROL_PREFIX):].split("?", 1)[0]
        try:
            if verb == "stats" and req.method == "GET":
                return json_response(200, self.snapshot())
            if verb == "reset" and req.method == "POST":
                self.reset()
                return json_response(200, {"reset": True})
            if verb == "inject" and req.method == "POST":
                rule = rule_from_json(json.loads(body or b"{}"))
                with self._lock:
                    self.rules.append(rule)
                return json_response(200, {"armed": rule.remaining, "status": rule.status})
        except (ProxyError, json.JSONDecodeError, re.error) as exc:
            return json_response(400, {"error": str(exc)})
        return json_response(404, {"error": f"no control endpoint {req.method} {verb}"})

    async def _forward(self, req: RequestHead, body: bytes, agent: str,
                       upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                       writer: asyncio.StreamWriter) -> bool:
        """Send one request upstream and stream its answer back; False when either side must close."""
        ur, uw = upstream
        host = f"{self.upstream.host}:{self.upstream.port}"
        uw.write(upstream_head(req, host, len(body), impersonation_headers(self.impersonate)) + body)
        await uw.drain()
        try:
            raw = await ur.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            with self._lock:
                self.stats.upstream_failures += 1
            return False
        status, headers = parse_status_head(raw)
        self._record(req.method, agent, status, req.target)
        out_head = b"\r\n".join(line for line in raw[:-4].split(b"\r\n")
                                if line.split(b":", 1)[0].strip().lower() not in (b"connection", b"keep-alive"))
        writer.write(out_head + b"\r\nConnection: keep-alive\r\n\r\n")
        no_body = req.method == "HEAD" or status in (204, 304) or 100 <= status < 200
        length = header(headers, "Content-Length")
        chunked = (header(headers, "Transfer-Encoding") or "").lower() == "chunked"
        if no_body:
            await writer.drain()
        elif length is not None:
            await copy_exact(ur, writer, int(length))
        elif chunked:
            await copy_chunked(ur, writer)
        else:
            await copy_until_eof(ur, writer)
            return False
        upstream_close = (header(headers, "Connection") or "").lower() == "close"
        return not upstream_close


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    """Read a chunked body and return it de-chunked (request bodies only)."""
    out = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return bytes(out)
        out += await reader.readexactly(size)
        await reader.readexactly(2)


async def copy_exact(src: asyncio.StreamReader, dst: asyncio.StreamWriter, n: int) -> None:
    """Copy exactly n bytes."""
    while n > 0:
        data = await src.read(min(n, 65536))
        if not data:
            raise asyncio.IncompleteReadError(b"", n)
        dst.write(data)
        n -= len(data)
        await _drain(dst)


async def copy_chunked(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy a chunked body chunk by chunk (a watch's events reach the client as they come)."""
    while True:
        line = await src.readuntil(b"\r\n")
        size = int(line.split(b";", 1)[0].strip(), 16)
        dst.write(line)
        if size == 0:
            while True:
                trailer = await src.readuntil(b"\r\n")
                dst.write(trailer)
                if trailer == b"\r\n":
                    break
            await _drain(dst)
            return
        await copy_exact(src, dst, size + 2)


async def copy_until_eof(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy until the upstream closes."""
    while data := await src.read(65536):
        dst.write(data)
        await _drain(dst)


async def _drain(dst: asyncio.StreamWriter) -> None:
    if dst.is_closing():
        raise ClientGone()
    try:
        await dst.drain()
    except (ConnectionError, RuntimeError):
        raise ClientGone() from None


# -- CLI ------------------------------------------------------------------------------------

def server_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """TLS for the listening side when a certificate is given."""
    if not cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


def main(argv: list[str] | None = None) -> int:
    """Run the proxy until SIGTERM/SIGINT; print the URL first, write stats at exit."""
    p = argparse.ArgumentParser(description="Counting, fault-injecting proxy in front of a Kubernetes API server")
    p.add_argument("--kubeconfig", type=Path, required=True, help="kubeconfig of the real API server")
    p.add_argument("--write-kubeconfig", type=Path, help="write a kubeconfig that goes through the proxy")
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any free port)")
    p.add_argument("--tls-cert", help="serve TLS with this certificate (PEM)")
    p.add_argument("--tls-key", help="key for --tls-cert")
    p.add_argument("--inject", action="append", default=[], help="STATUS:COUNT[:RETRY_AFTER[:METHOD[:PATHREGEX]]]")
    p.add_argument("--stats-out", type=Path, help="write the counters as JSON here at exit")
    p.add_argument("--impersonate", help="forward every request as this user (e.g. system:serviceaccount:NS:NAME)")
    args = p.parse_args(argv)
    try:
        host, _, port = args.listen.rpartition(":")
        proxy = FaultProxy(upstream_from_kubeconfig(args.kubeconfig), host or "127.0.0.1", int(port),
                           server_context(args.tls_cert, args.tls_key), impersonate=args.impersonate)
        for text in args.inject:
            proxy.rules.append(parse_rule(text))
    except (ProxyError, ValueError, OSError, ssl.SSLError) as exc:
        print(f"faultproxy: {exc}", file=sys.stderr)
        return 2

    async def run() -> None:
        await proxy.start()
        if args.write_kubeconfig:
            doc = client_kubeconfig(args.kubeconfig, proxy.url, args.tls_cert)
            tmp = args.write_kubeconfig.with_suffix(".tmp")
            tmp.write_text(yaml.safe_dump(doc))
            tmp.replace(args.write_kubeconfig)
        print(f"listening on {proxy.url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await proxy.close()

    asyncio.run(run())
    if args.stats_out:
        args.stats_out.write_text(json.dumps(proxy.snapshot(), indent=1) + "\n")
    return 0


class ProxyProcess:
    """The proxy as its own process (its own interpreter: a benchmark's threads do not slow it),
    controlled over its /__faultproxy/ endpoints."""

    def __init__(self, kubeconfig: Path, write_kubeconfig: Path, log_path: Path, impersonate: str | None = None) -> None:
        import subprocess

        argv = [sys.executable, "-m", "lms_harness.faultproxy", "--kubeconfig", str(kubeconfig),
                "--write-kubeconfig", str(write_kubeconfig)]
        if impersonate:
            argv += ["--impersonate", impersonate]
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        line = self.proc.stdout.readline().decode().strip() if self.proc.stdout else ""
        if not line.startswith("listening on "):
            self.stop()
            raise ProxyError(f"faultproxy did not start: {line!r} (see {log_path})")
        self.url = line.split(" ", 2)[2]
        self.kubeconfig = write_kubeconfig

    def stats(self) -> dict[str, Any]:
        import urllib.request

        with urllib.request.urlopen(f"{self.url}{CONTROL_PREFIX}stats", timeout=10) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def reset(self) -> None:
        import urllib.request

        req = urllib.request.Request(f"{self.url}{CONTROL_PREFIX}reset", data=b"{}", method="POST")
        urllib.request.urlopen(req, timeout=10).read()

    def stop(self) -> None:
        from lms_harness.processes import kill_group

        kill_group(self.proc, 10)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
