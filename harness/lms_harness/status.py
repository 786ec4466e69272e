"""Pure construction of the pod status the runner writes back, kubelet-style."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

LOCAL_IP = "127.0.0.1"
MAX_MESSAGE_BYTES = 4096


@dataclass
class ContainerState:
    """What the runner knows about one container of a pod."""

    name: str
    image: str = ""
    state: str = "waiting"            # waiting | running | terminated
    reason: str = "ContainerCreating"
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    message: str = ""
    ready: bool = False
    restart_count: int = 0


def now_rfc3339() -> str:
    """Current UTC time in the API's timestamp format."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def termination_message(raw: bytes, log_tail: str, exit_code: int, policy: str | None) -> str:
    """Termination message the kubelet would report: the file, else the log on error if asked."""
    text = raw[:MAX_MESSAGE_BYTES].decode("utf-8", errors="replace").strip()
    if not text and exit_code != 0 and policy == "FallbackToLogsOnError":
        text = log_tail[-2048:].strip()
    return text


def pod_phase(states: list[ContainerState], restart_policy: str) -> str:
    """Pod phase from its containers (Never/OnFailure pods finish; Always pods never do)."""
    if any(s.state == "waiting" and s.started_at is None and s.restart_count == 0 for s in states):
        return "Pending"
    if all(s.state == "terminated" for s in states):
        if all(s.exit_code == 0 for s in states):
            return "Succeeded" if restart_policy != "Always" else "Running"
        if restart_policy == "Never":
            return "Failed"
    return "Running"


def container_status(s: ContainerState) -> dict[str, Any]:
    """One entry of status.containerStatuses."""
    if s.state == "running":
        state: dict[str, Any] = {"running": {"startedAt": s.started_at}}
    elif s.state == "terminated":
        term: dict[str, Any] = {
            "exitCode": s.exit_code if s.exit_code is not None else 0,
            "reason": s.reason or ("Completed" if s.exit_code == 0 else "Error"),
            "startedAt": s.started_at,
            "finishedAt": s.finished_at,
        }
        if s.message:
            term["message"] = s.message
        state = {"terminated": term}
    else:
        waiting: dict[str, Any] = {"reason": s.reason or "ContainerCreating"}
        if s.message:
            waiting["message"] = s.message
        state = {"waiting": waiting}
    return {
        "name": s.name,
        "image": s.image,
        "imageID": "",
        "containerID": f"sandbox://{s.name}",
        "ready": s.ready,
        "started": s.state == "running",
        "restartCount": s.restart_count,
        "state": state,
    }


def _condition(kind: str, ok: bool, now: str, reason: str | None = None) -> dict[str, Any]:
    cond: dict[str, Any] = {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": now}
    if reason and not ok:
        cond["reason"] = reason
    return cond


def fake_pod_ip(uid: str) -> str:
    """A stable, practically unique pod IP in 10.0.0.0/8 for a pod's uid.

    The real address of a locally run pod is in its sandbox.lms.dev/* annotations; the fake one
    only lets the controller-manager list distinct endpoints in EndpointSlices.
    """
    digest = hashlib.sha256(uid.encode()).digest()
    return f"10.{digest[0]}.{digest[1]}.{1 + digest[2] % 254}"


def pod_status(states: list[ContainerState], restart_policy: str, start_time: str, now: str | None = None,
               pod_ip: str = LOCAL_IP) -> dict[str, Any]:
    """The full status body to PATCH through pods/status."""
    now = now or now_rfc3339()
    phase = pod_phase(states, restart_policy)
    running = phase == "Running"
    ready = running and all(s.ready for s in states)
    finished = phase in ("Succeeded", "Failed")
    reason = "PodCompleted" if finished else "ContainersNotReady"
    return {
        "phase": phase,
        "hostIP": LOCAL_IP,
        "hostIPs": [{"ip": LOCAL_IP}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": start_time,
        "conditions": [
            _condition("PodScheduled", True, now),
            _condition("Initialized", True, now),
            _condition("ContainersReady", ready, now, reason),
            _condition("Ready", ready, now, reason),
        ],
        "containerStatuses": [container_status(s) for s in states],
    }


def endpoint_annotations(ports: dict[str, int]) -> dict[str, str]:
    """Annotations that tell tests and tools where a locally run Triton listens."""
    return {f"sandbox.lms.dev/{kind}": f"{LOCAL_IP}:{port}" for kind, port in sorted(ports.items())}
