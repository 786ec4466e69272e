"""lms_harness.faultproxy against a real local TLS server that demands a client certificate.

The upstream is a plain `http.server` over TLS (HTTP/1.1 keep-alive, chunked streaming like a
watch); the proxy must present the kubeconfig's client certificate, forward bodies, stream
chunks as they come, inject errors with Retry-After, count per user agent, and drop the
connection when the upstream is away.
"""
from __future__ import annotations

import base64
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from lms_harness import faultproxy as fp


# -- pure parts ---------------------------------------------------------------------------------

def test_parse_rule_full_and_short() -> None:
    r = fp.parse_rule("429:3:2:PATCH:/apis/serving")
    assert (r.status, r.remaining, r.retry_after, r.method, r.path) == (429, 3, 2.0, "PATCH", "/apis/serving")
    r = fp.parse_rule("500:1")
    assert (r.status, r.remaining, r.retry_after, r.method, r.path) == (500, 1, None, None, None)


@pytest.mark.parametrize("text", ["abc", "429", "200:1", "429:-1", "700:1", "429:x"])
def test_parse_rule_rejects(text: str) -> None:
    with pytest.raises(fp.ProxyError, match="--inject"):
        fp.parse_rule(text)


def test_rule_matching_counts_down() -> None:
    r = fp.Rule(status=500, remaining=1, method="get", path=r"^/api/v1/pods")
    assert not r.matches("POST", "/api/v1/pods")
    assert not r.matches("GET", "/apis/apps/v1/deployments")
    assert r.matches("GET", "/api/v1/pods?watch=1")
    r.remaining = 0
    assert not r.matches("GET", "/api/v1/pods")


@pytest.mark.parametrize(("method", "target", "key"), [
    ("PATCH", "/apis/apps/v1/namespaces/n/deployments/d?fieldManager=x", "PATCH deployments"),
    ("PATCH", "/apis/serving.lms.dev/v1alpha1/namespaces/n/largemodelservices/m/status", "PATCH largemodelservices/status"),
    ("GET", "/api/v1/namespaces/n/pods?labelSelector=a", "GET pods"),
    ("GET", "/api/v1/namespaces?watch=true", "GET namespaces?watch"),
    ("GET", "/apis/apps/v1/deployments?watch=1", "GET deployments?watch"),
    ("GET", "/version", "GET /version"),
])
def test_resource_of(method: str, target: str, key: str) -> None:
    assert fp.resource_of(method, target) == key


def test_error_response_is_a_kubernetes_status() -> None:
    raw = fp.error_response(429, 2, "GET", "/api/v1/pods")
    head, body = raw.split(b"\r\n\r\n", 1)
    status, headers = fp.parse_status_head(head + b"\r\n\r\n")
    assert status == 429 and fp.header(headers, "Retry-After") == "2"
    assert int(fp.header(headers, "Content-Length")) == len(body)
    doc = json.loads(body)
    assert doc["kind"] == "Status" and doc["code"] == 429 and doc["reason"] == "TooManyRequests"
    assert doc["details"]["retryAfterSeconds"] == 2


def test_parse_request_head_rejects_garbage() -> None:
    with pytest.raises(fp.ProxyError):
        fp.parse_request_head(b"NONSENSE\r\n\r\n")
    req = fp.parse_request_head(b"GET /api HTTP/1.1\r\nHost: x\r\nUser-Agent: kopf/1.37 (x)\r\n\r\n")
    assert req.get("user-agent") == "kopf/1.37 (x)" and fp.agent_family(req.get("User-Agent")) == "kopf"


def test_upstream_head_rewrites_host_and_length() -> None:
    req = fp.parse_request_head(b"POST /x HTTP/1.1\r\nHost: proxy:1\r\nConnection: close\r\n"
                                b"Transfer-Encoding: chunked\r\nImpersonate-User: sa\r\n\r\n")
    head = fp.upstream_head(req, "up:6443", 5).decode()
    assert "Host: up:6443" in head and "Content-Length: 5" in head and "Impersonate-User: sa" in head
    assert "chunked" not in head and "Connection: close" not in head and "proxy:1" not in head


def test_impersonation_replaces_client_headers() -> None:
    req = fp.parse_request_head(b"GET /x HTTP/1.1\r\nImpersonate-User: admin\r\n\r\n")
    head = fp.upstream_head(req, "up", 0, fp.impersonation_headers("system:serviceaccount:lms-system:lms-operator")).decode()
    assert "Impersonate-User: admin" not in head
    assert "Impersonate-User: system:serviceaccount:lms-system:lms-operator" in head
    assert "Impersonate-Group: system:serviceaccounts:lms-system" in head
    assert fp.impersonation_headers(None) == []


# -- a real TLS upstream ------------------------------------------------------------------------

def _selfsigned(tmp: Path, name: str) -> tuple[Path, Path]:
    cert, key = tmp / f"{name}.crt", tmp / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[dict[str, Any]] = []
    release = threading.Event()

    def log_message(self, *_: Any) -> None:
        pass

    def _reply(self, status: int, doc: Any) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        peer = self.connection.getpeercert()
        Upstream.seen.append({"path": self.path, "agent": self.headers.get("User-Agent"),
                              "host": self.headers.get("Host"), "peer_cn": dict(x[0] for x in peer["subject"])["commonName"]})
        if self.path.startswith("/watch"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i, wait in enumerate([False, True]):
                if wait:
                    Upstream.release.wait(10)
                line = json.dumps({"type": "ADDED", "n": i}).encode() + b"\n"
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return
        self._reply(200, {"path": self.path})

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self._reply(201, {"echo": json.loads(body)})


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test certificates")
    tmp = tmp_path_factory.mktemp("tls")
    server_cert, server_key = _selfsigned(tmp, "localhost")
    client_cert, client_key = _selfsigned(tmp, "lms-operator")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(server_cert, server_key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(client_cert))
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    server.daemon_threads = True
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    kubeconfig = tmp / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": f"https://127.0.0.1:{port}",
                                                "certificate-authority-data": base64.b64encode(server_cert.read_bytes()).decode()}}],
        "users": [{"name": "u", "user": {"client-certificate": str(client_cert), "client-key-data":
                                          base64.b64encode(client_key.read_bytes()).decode(), "as": "system:serviceaccount:x:y"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u", "namespace": "ns1"}}]}))
    yield kubeconfig, port
    server.shutdown()


@pytest.fixture
def proxy(upstream: tuple[Path, int]) -> Iterator[Any]:
    p = fp.FaultProxy(fp.upstream_from_kubeconfig(upstream[0]))
    p.start_in_thread()
    Upstream.seen.clear()
    yield p
    p.stop()


def _conn(p: Any) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", p.port, timeout=15)


def test_forwards_with_client_cert_and_keeps_alive(proxy: Any) -> None:
    c = _conn(proxy)
    for i in range(3):
        c.request("GET", f"/api/v1/namespaces/n/pods/p{i}", headers={"User-Agent": "kopf/1.37"})
        r = c.getresponse()
        assert r.status == 200 and json.loads(r.read()) == {"path": f"/api/v1/namespaces/n/pods/p{i}"}
    c.request("POST", "/apis/x", body=json.dumps({"a": 1}), headers={"User-Agent": "kubectl/v1.36"})
    r = c.getresponse()
    assert r.status == 201 and json.loads(r.read()) == {"echo": {"a": 1}}
    c.close()
    assert [s["peer_cn"] for s in Upstream.seen] == ["lms-operator"] * 3
    assert Upstream.seen[0]["host"].startswith("127.0.0.1:")
    snap = proxy.snapshot()
    assert snap["requests"] == 4 and snap["by_agent"] == {"kopf": 3, "kubectl": 1}
    assert snap["connections"] == 1 and snap["by_status"] == {"200": 3, "201": 1}


def test_injects_errors_then_succeeds(proxy: Any) -> None:
    proxy.inject(429, count=2, retry_after=1, method="GET", path="/pods")
    c = _conn(proxy)
    statuses = []
    for _ in range(3):
        c.request("GET", "/api/v1/pods", headers={"User-Agent": "kopf/1.37"})
        r = c.getresponse()
        body = r.read()
        statuses.append(r.status)
        if r.status == 429:
            assert r.getheader("Retry-After") == "1" and json.loads(body)["code"] == 429
    c.request("GET", "/api/v1/nodes")
    assert c.getresponse().status == 200
    c.close()
    assert statuses == [429, 429, 200]
    history = proxy.requests_since(0)
    assert [(h[1], h[2], h[3], h[4]) for h in history[:3]] == [
        ("GET", "/api/v1/pods", 429, True), ("GET", "/api/v1/pods", 429, True), ("GET", "/api/v1/pods", 200, False)]
    assert len(Upstream.seen) == 2  # the injected answers never reached the server
    snap = proxy.snapshot()
    assert snap["http_429"] == 2 and snap["injected"] == {"429": 2} and snap["rules"][0]["remaining"] == 0


def test_control_endpoints(proxy: Any) -> None:
    c = _conn(proxy)
    c.request("POST", "/__faultproxy/inject", body=json.dumps({"status": 500, "count": 1}))
    assert c.getresponse().read() and True
    c.request("GET", "/api/v1/x")
    r = c.getresponse()
    r.read()
    assert r.status == 500
    c.request("POST", "/__faultproxy/inject", body=json.dumps({"status": 200}))
    r = c.getresponse()
    assert r.status == 400 and "400-599" in json.loads(r.read())["error"]
    c.request("GET", "/__faultproxy/stats")
    stats = json.loads(c.getresponse().read())
    assert stats["by_status"] == {"500": 1} and stats["requests"] == 1
    c.request("POST", "/__faultproxy/reset")
    c.getresponse().read()
    c.close()
    assert proxy.snapshot()["requests"] == 0


def test_streams_chunks_as_they_come(proxy: Any) -> None:
    Upstream.release.clear()
    c = _conn(proxy)
    c.request("GET", "/watch/pods")
    r = c.getresponse()
    first = r.fp.readline()  # first chunk-size line arrives before the server sends the second event
    assert int(first.strip(), 16) > 0
    assert json.loads(r.fp.readline()) == {"type": "ADDED", "n": 0}
    Upstream.release.set()
    rest = r.fp.read1(4096) if hasattr(r.fp, "read1") else b""
    deadline = time.monotonic() + 10
    while b"0\r\n\r\n" not in rest and time.monotonic() < deadline:
        rest += r.fp.read1(4096)
    assert b'"n": 1' in rest and rest.endswith(b"0\r\n\r\n")
    c.close()


def test_upstream_away_drops_connection(upstream: tuple[Path, int]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    up = fp.upstream_from_kubeconfig(upstream[0])
    up.port = dead_port
    p = fp.FaultProxy(up)
    p.start_in_thread()
    try:
        c = _conn(p)
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            c.request("GET", "/api")
            c.getresponse()
        assert p.snapshot()["upstream_failures"] == 1
    finally:
        p.stop()


def test_client_kubeconfig_keeps_identity_drops_certs(upstream: tuple[Path, int]) -> None:
    doc = fp.client_kubeconfig(upstream[0], "http://127.0.0.1:1")
    user = doc["users"][0]["user"]
    assert user == {"as": "system:serviceaccount:x:y"}
    assert doc["clusters"][0]["cluster"] == {"server": "http://127.0.0.1:1"}
    assert doc["contexts"][0]["context"]["namespace"] == "ns1"


def test_bad_kubeconfig_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "kc"
    bad.write_text("current-context: nope\ncontexts: []\n")
    with pytest.raises(fp.ProxyError, match="current-context 'nope' not found"):
        fp.upstream_from_kubeconfig(bad)
    assert fp.main(["--kubeconfig", str(bad)]) == 2
