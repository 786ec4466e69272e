"""The kubelet's resource metrics endpoint (/metrics/resource) for the pod runner's CPU-pool nodes,
and its /containerLogs (what the API server asks for `kubectl logs`) from the pod runner's logs.

metrics-server scrapes every node's kubelet over HTTPS at InternalIP:daemonEndpoints port and
decodes the Prometheus text the kubelet serves (sigs.k8s.io/metrics-server
pkg/scraper/client/resource/decode.go): node_cpu_usage_seconds_total,
node_memory_working_set_bytes, and container_cpu_usage_seconds_total /
container_memory_working_set_bytes / container_start_time_seconds labelled
{container, namespace, pod}, each with a millisecond timestamp. It turns two scrapes into a rate,
which the HPA controller reads as a pod's CPU usage through metrics.k8s.io.

Here each container is a local process group (the pod runner starts every container in its own
session), so its CPU seconds are the sum of utime+stime (and reaped children's) over the group's
processes in /proc, and its working set is their resident memory. A node's figures are the sum of
its pods' containers. The parsing and rendering are pure functions; KubeletMetrics serves them
and keeps the nodes' status pointing at it (kwok's heartbeat stage rewrites the port).
"""
from __future__ import annotations

import http.server
import logging
import os
import select
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("podrunner.metrics")

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
NODE_PATCH_SECONDS = 20.0


@dataclass(frozen=True)
class ProcStat:
    """What one /proc/<pid>/stat line says about CPU time and the process group."""

    pid: int
    pgrp: int
    cpu_ticks: int      # utime + stime + cutime + cstime
    rss_pages: int


def parse_proc_stat(text: str) -> ProcStat:
    """Parse /proc/<pid>/stat. The command name (field 2) may hold spaces and parentheses, so the
    fields are counted after its last ')'. Raises ValueError on a malformed line."""
    head, sep, tail = text.rpartition(")")
    if not sep:
        raise ValueError(f"not a /proc stat line: {text[:80]!r}")
    pid = int(head.split("(", 1)[0])
    rest = tail.split()
    # rest[0] is field 3 (state): field n is rest[n - 3]
    if len(rest) < 22:
        raise ValueError(f"short /proc stat line for pid {pid}")
    pgrp = int(rest[5 - 3])
    utime, stime, cutime, cstime = (int(rest[i - 3]) for i in (14, 15, 16, 17))
    rss = int(rest[24 - 3])
    return ProcStat(pid=pid, pgrp=pgrp, cpu_ticks=utime + stime + cutime + cstime, rss_pages=max(rss, 0))


def read_proc(proc_root: Path = Path("/proc")) -> list[ProcStat]:
    """Every live process's stat (processes that exit while being read are skipped)."""
    out: list[ProcStat] = []
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            out.append(parse_proc_stat((entry / "stat").read_text()))
        except (OSError, ValueError):
            continue
    return out


@dataclass(frozen=True)
class Usage:
    """One container's cumulative CPU seconds and working set."""

    cpu_seconds: float
    memory_bytes: int


def group_usage(stats: Iterable[ProcStat], pgrp: int, clk_tck: int = CLK_TCK, page_size: int = PAGE_SIZE) -> Usage:
    """Sum CPU time and resident memory over the processes of one process group."""
    ticks = 0
    pages = 0
    for st in stats:
        if st.pgrp == pgrp:
            ticks += st.cpu_ticks
            pages += st.rss_pages
    return Usage(cpu_seconds=ticks / clk_tck, memory_bytes=pages * page_size)


@dataclass(frozen=True)
class ContainerSample:
    """A container's usage, where it runs, and when it was sampled (ms since the epoch)."""

    node: str
    namespace: str
    pod: str
    container: str
    usage: Usage
    start_time: float          # seconds since the epoch
    timestamp_ms: int


@dataclass
class NodeSamples:
    containers: list[ContainerSample] = field(default_factory=list)


def rfc3339_seconds(value: str | None) -> float:
    """Seconds since the epoch of an API timestamp (2006-01-02T15:04:05Z); 0 when absent."""
    if not value:
        return 0.0
    from datetime import datetime, timezone

    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


def sample_containers(running: Iterable[tuple[str, str, str, str, int, str | None]], stats: list[ProcStat],
                      now_ms: int) -> list[ContainerSample]:
    """Samples for (node, namespace, pod, container, process group id, started_at) rows."""
    return [ContainerSample(node=node, namespace=ns, pod=pod, container=container,
                            usage=group_usage(stats, pgrp), start_time=rfc3339_seconds(started),
                            timestamp_ms=now_ms)
            for node, ns, pod, container, pgrp, started in running]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else f"{float(value):.0f}"


def render_resource_metrics(node: str, samples: Iterable[ContainerSample], now_ms: int) -> str:
    """The kubelet's /metrics/resource body for one node (Prometheus text format 0.0.4).

    Containers without CPU or memory yet are left out: metrics-server drops a whole pod when
    one of its containers reports a zero. The node's figures are its containers' sums.
    """
    rows = [s for s in samples if s.node == node and s.usage.cpu_seconds > 0 and s.usage.memory_bytes > 0]
    rows.sort(key=lambda s: (s.namespace, s.pod, s.container))
    lines: list[str] = []

    def family(name: str, help_text: str, kind: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    family("container_cpu_usage_seconds_total", "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
           "counter")
    for s in rows:
        lines.append(f'container_cpu_usage_seconds_total{{container="{_label(s.container)}",'
                     f'namespace="{_label(s.namespace)}",pod="{_label(s.pod)}"}} '
                     f"{_num(s.usage.cpu_seconds)} {s.timestamp_ms}")
    family("container_memory_working_set_bytes", "[STABLE] Current working set of the container in bytes", "gauge")
    for s in rows:
        lines.append(f'container_memory_working_set_bytes{{container="{_label(s.container)}",'
                     f'namespace="{_label(s.namespace)}",pod="{_label(s.pod)}"}} '
                     f"{s.usage.memory_bytes} {s.timestamp_ms}")
    family("container_start_time_seconds", "[STABLE] Start time of the container since unix epoch in seconds", "gauge")
    for s in rows:
        lines.append(f'container_start_time_seconds{{container="{_label(s.container)}",'
                     f'namespace="{_label(s.namespace)}",pod="{_label(s.pod)}"}} '
                     f"{_num(s.start_time)} {s.timestamp_ms}")
    if rows:
        family("node_cpu_usage_seconds_total", "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
               "counter")
        lines.append(f"node_cpu_usage_seconds_total {_num(sum(s.usage.cpu_seconds for s in rows))} {now_ms}")
        family("node_memory_working_set_bytes", "[STABLE] Current working set of the node in bytes", "gauge")
        lines.append(f"node_memory_working_set_bytes {sum(s.usage.memory_bytes for s in rows)} {now_ms}")
    pods: dict[tuple[str, str], list[ContainerSample]] = {}
    for s in rows:
        pods.setdefault((s.namespace, s.pod), []).append(s)
    family("pod_cpu_usage_seconds_total", "[STABLE] Cumulative cpu time consumed by the pod in core-seconds", "counter")
    for (ns, pod), cs in pods.items():
        lines.append(f'pod_cpu_usage_seconds_total{{namespace="{_label(ns)}",pod="{_label(pod)}"}} '
                     f"{_num(sum(c.usage.cpu_seconds for c in cs))} {max(c.timestamp_ms for c in cs)}")
    family("pod_memory_working_set_bytes", "[STABLE] Current working set of the pod in bytes", "gauge")
    for (ns, pod), cs in pods.items():
        lines.append(f'pod_memory_working_set_bytes{{namespace="{_label(ns)}",pod="{_label(pod)}"}} '
                     f"{sum(c.usage.memory_bytes for c in cs)} {max(c.timestamp_ms for c in cs)}")
    family("scrape_error", "[ALPHA] 1 if there was an error while getting container metrics, 0 otherwise", "gauge")
    lines.append("scrape_error 0")
    return "\n".join(lines) + "\n"


def node_status_patch(port: int, address: str = "127.0.0.1") -> dict[str, Any]:
    """The node status that sends metrics-server to this endpoint (InternalIP, kubelet port)."""
    return {"status": {"addresses": [{"type": "InternalIP", "address": address}],
                       "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}}


def node_needs_patch(node_status: dict[str, Any], port: int, address: str = "127.0.0.1") -> bool:
    """True when the node's InternalIP or kubelet port is not this endpoint's."""
    internal = [a.get("address") for a in node_status.get("addresses") or [] if a.get("type") == "InternalIP"]
    current = ((node_status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
    return internal != [address] or current != port


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A key and self-signed certificate for 127.0.0.1 (metrics-server runs with
    --kubelet-insecure-tls, as for kubelets with self-signed serving certificates)."""
    folder.mkdir(parents=True, exist_ok=True)
    key, cert = folder / "kubelet.key", folder / "kubelet.crt"
    if not (key.exists() and cert.exists()):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                        "-subj", "/CN=lms-sandbox-kubelet", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                        "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
        key.chmod(0o600)
    return key, cert


PodLog = Callable[[str, str], "tuple[Path, bool] | None"]
"""(namespace, pod) -> the pod's log file and whether it may still grow, or None for an unknown pod."""

FOLLOW_POLL_SECONDS = 0.5


def tail_lines(data: bytes, lines: int | None) -> bytes:
    """The last `lines` lines of `data` (all of it for None), as `kubectl logs --tail` asks."""
    if lines is None or lines < 0:
        return data
    if lines == 0:
        return b""
    kept = data.splitlines(keepends=True)[-lines:]
    return b"".join(kept)


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "lms-sandbox-kubelet"
    node = ""
    sampler: Callable[[], list[ContainerSample]]
    pod_log: PodLog | None = None

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path, _, query = self.path.partition("?")
        parts = path.strip("/").split("/")
        if len(parts) == 4 and parts[0] == "containerLogs" and self.pod_log is not None:
            self._logs(parts[1], parts[2], urllib.parse.parse_qs(query))
            return
        if path != "/metrics/resource":
            self.send_error(404)
            return
        try:
            body = render_resource_metrics(self.node, self.sampler(), int(time.time() * 1000)).encode()
        except Exception as exc:  # noqa: BLE001 - a scrape error, not a dead server
            log.warning("metrics for %s: %s", self.node, exc)
            self.send_error(500, str(exc))
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _logs(self, namespace: str, pod: str, query: dict[str, list[str]]) -> None:
        """/containerLogs/<ns>/<pod>/<container>: what the API server asks for `kubectl logs`.
        The pod runner keeps one log per pod, so every container name gets the pod's log."""
        assert self.pod_log is not None
        found = self.pod_log(namespace, pod)
        if found is None:
            self.send_error(404, f"no log for pod {namespace}/{pod}")
            return
        file, growing = found
        tail = query.get("tailLines", [None])[0]
        follow = query.get("follow", ["false"])[0] == "true"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.end_headers()
        try:
            with open(file, "rb") as fh:
                self.wfile.write(tail_lines(fh.read(), int(tail) if tail else None))
                self.wfile.flush()
                while follow and growing:
                    if select.select([self.connection], [], [], FOLLOW_POLL_SECONDS)[0]:
                        return  # a following client sends nothing more: readable means it hung up
                    more = fh.read()
                    if more:
                        self.wfile.write(more)
                        self.wfile.flush()
                    else:
                        growing = (self.pod_log(namespace, pod) or (file, False))[1]
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped following

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("%s %s", self.node, fmt % args)


class KubeletMetrics:
    """One HTTPS listener per CPU-pool node (metrics-server finds a node's kubelet by its
    InternalIP and status port, and all nodes here share 127.0.0.1), and a thread that keeps each
    node's status pointing at its listener."""

    def __init__(self, cert_dir: Path, sampler: Callable[[], list[ContainerSample]],
                 list_nodes: Callable[[], list[tuple[str, dict[str, Any]]]],
                 patch_node: Callable[[str, dict[str, Any]], None], pod_log: PodLog | None = None) -> None:
        self.key, self.cert = self_signed_cert(cert_dir)
        self.sampler = sampler
        self.pod_log = pod_log
        self.list_nodes = list_nodes
        self.patch_node = patch_node
        self.servers: dict[str, http.server.ThreadingHTTPServer] = {}
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="kubelet-metrics", daemon=True)

    def start(self) -> "KubeletMetrics":
        self.thread.start()
        return self

    def port(self, node: str) -> int | None:
        srv = self.servers.get(node)
        return srv.server_address[1] if srv is not None else None

    def _serve(self, node: str) -> http.server.ThreadingHTTPServer:
        handler = type(f"Handler_{node}", (_Handler,), {"node": node, "sampler": staticmethod(self.sampler),
                                                        "pod_log": staticmethod(self.pod_log) if self.pod_log else None})
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.cert), str(self.key))
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, name=f"kubelet-{node}", daemon=True).start()
        log.info("kubelet metrics for node %s on https://127.0.0.1:%d/metrics/resource", node, srv.server_address[1])
        return srv

    def sync(self) -> None:
        """Serve every listed node and patch the status of those not pointing at it."""
        for name, status in self.list_nodes():
            if name not in self.servers:
                self.servers[name] = self._serve(name)
            port = self.servers[name].server_address[1]
            if node_needs_patch(status, port):
                self.patch_node(name, node_status_patch(port))
                log.info("node %s: status points at kubelet metrics port %d", name, port)

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.sync()
            except Exception as exc:  # noqa: BLE001 - the API server may be restarting
                log.warning("kubelet metrics: node sync failed: %s", exc)
            self.stop_event.wait(NODE_PATCH_SECONDS)

    def stop(self) -> None:
        self.stop_event.set()
        for srv in self.servers.values():
            srv.shutdown()
            srv.server_close()
