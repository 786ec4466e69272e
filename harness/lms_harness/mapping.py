"""Pure translation of a pod's container into a local process: folders, argv, environment.

The pod runner plays kubelet for the project's pods on CPU-pool nodes. Nothing here
touches the API server or the file system, so every rule is unit-testable.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TERMINATION_LOG_ENV = "LMS_TERMINATION_LOG"
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
TRITON_PORT_FLAGS = {"--http-port": "http", "--grpc-port": "grpc", "--metrics-port": "metrics"}
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


class UnsupportedPod(ValueError):
    """The pod asks for something the runner cannot do locally (named in the message)."""


@dataclass(frozen=True)
class Mount:
    """A container mount path and the local folder that stands in for it."""

    mount_path: str
    local_path: str
    read_only: bool = False


@dataclass
class LocalContainer:
    """Everything needed to start one container as a local process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    termination_log: str
    mounts: list[Mount] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    triton: bool = False


def pod_key(pod: dict[str, Any]) -> str:
    """`<namespace>_<name>`, the per-pod file and folder name under the state dir."""
    meta = pod["metadata"]
    return f"{meta.get('namespace', 'default')}_{meta['name']}"


def volume_folder(volume: dict[str, Any], namespace: str, pod_dir: Path, state_dir: Path) -> Path | None:
    """The local folder a pod volume maps to, or None for kinds the runner does not provide."""
    if pvc := volume.get("persistentVolumeClaim"):
        return state_dir / "pvc" / namespace / pvc["claimName"]
    if host := volume.get("hostPath"):
        return Path(host["path"])
    if "emptyDir" in volume or "configMap" in volume or "secret" in volume:
        return pod_dir / "volumes" / volume["name"]
    return None


def container_mounts(container: dict[str, Any], volumes: list[dict[str, Any]], namespace: str,
                     pod_dir: Path, state_dir: Path) -> list[Mount]:
    """Mounts of one container, longest mount path first so nested mounts win when rewriting."""
    by_name = {v["name"]: v for v in volumes}
    mounts: list[Mount] = []
    for vm in container.get("volumeMounts") or []:
        volume = by_name.get(vm["name"])
        if volume is None:
            raise UnsupportedPod(f"volumeMount {vm['name']!r}: no such volume in the pod")
        folder = volume_folder(volume, namespace, pod_dir, state_dir)
        if folder is None:
            continue
        if sub := vm.get("subPath"):
            folder = folder / sub
        mounts.append(Mount(vm["mountPath"].rstrip("/") or "/", str(folder), bool(vm.get("readOnly"))))
    return sorted(mounts, key=lambda m: len(m.mount_path), reverse=True)


def rewrite_paths(text: str, mounts: list[Mount]) -> str:
    """Replace every mount path that appears as a whole path (or path prefix) in text.

    One pass over the text: a local folder substituted for one mount is never
    rewritten again by another mount (a state folder under /tmp next to a /tmp mount).
    Longer mount paths win over their prefixes.
    """
    local = {m.mount_path: m.local_path for m in mounts if m.mount_path != "/"}
    if not local:
        return text
    alternatives = "|".join(re.escape(path) for path in sorted(local, key=len, reverse=True))
    pattern = re.compile(r"(?<![\w.-])(" + alternatives + r")(?=/|$|[^\w.-])")
    return pattern.sub(lambda match: local[match.group(1)], text)


def expand_vars(text: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: known names are substituted, `$$` escapes, unknown stay."""
    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR_REF.sub(sub, text)


def field_ref(path: str, pod: dict[str, Any]) -> str:
    """Value of a downward-API fieldRef as the runner sees the pod (it runs on 127.0.0.1)."""
    meta = pod["metadata"]
    spec = pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", "default"),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": "127.0.0.1",
        "status.hostIP": "127.0.0.1",
    }
    if path in simple:
        return str(simple[path])
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise UnsupportedPod(f"env fieldRef {path!r} is not supported by the pod runner")


def container_env(container: dict[str, Any], pod: dict[str, Any], mounts: list[Mount],
                  lookup: Any = None) -> dict[str, str]:
    """The container's own env (in order, with `$(VAR)` expansion and mount paths rewritten).

    `lookup(kind, name, key)` resolves configMapKeyRef/secretKeyRef ('configmap'|'secret');
    without it those references are an error.
    """
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        name = item["name"]
        if "value" in item:
            value = expand_vars(str(item.get("value") or ""), env)
        elif source := item.get("valueFrom"):
            if ref := source.get("fieldRef"):
                value = field_ref(ref["fieldPath"], pod)
            elif (ref := source.get("configMapKeyRef")) or (ref := source.get("secretKeyRef")):
                kind = "configmap" if "configMapKeyRef" in source else "secret"
                if lookup is None:
                    raise UnsupportedPod(f"env {name}: {kind} reference needs the API")
                found = lookup(kind, ref["name"], ref["key"])
                if found is None:
                    if ref.get("optional"):
                        continue
                    raise UnsupportedPod(f"env {name}: {kind} {ref['name']!r} has no key {ref['key']!r}")
                value = found
            else:
                raise UnsupportedPod(f"env {name}: valueFrom {sorted(source)} is not supported")
        else:
            value = ""
        env[name] = rewrite_paths(value, mounts)
    return env


def substitute_triton_ports(args: list[str], ports: dict[str, int]) -> list[str]:
    """Triton flags with the given local ports for --http-port/--grpc-port/--metrics-port.

    Flags missing from args are added, so the server never binds the fixed in-cluster ports.
    """
    out: list[str] = []
    seen: set[str] = set()
    skip_next = False
    for i, arg in enumerate(args):
        if skip_next:
            skip_next = False
            continue
        flag, eq, _value = arg.partition("=")
        if flag in TRITON_PORT_FLAGS:
            seen.add(flag)
            out.append(f"{flag}={ports[TRITON_PORT_FLAGS[flag]]}")
            skip_next = not eq and i + 1 < len(args)
            continue
        out.append(arg)
    for flag, kind in TRITON_PORT_FLAGS.items():
        if flag not in seen:
            out.append(f"{flag}={ports[kind]}")
    return out


def is_triton(argv: list[str]) -> bool:
    """A container whose command is Triton (`tritonserver ...`, any path to it)."""
    return bool(argv) and Path(argv[0]).name == "tritonserver"


def translate_argv(argv: list[str], bin_dir: str, python: str) -> list[str]:
    """argv for the local machine: `lms` and `python` come from the runner's environment."""
    if not argv:
        raise UnsupportedPod("container has neither command nor args; the runner has no image entrypoint")
    head = Path(argv[0]).name
    if head == "lms":
        return [str(Path(bin_dir) / "lms"), *argv[1:]]
    if re.fullmatch(r"python(3(\.\d+)?)?", head):
        return [python, *argv[1:]]
    return list(argv)


def termination_path(container: dict[str, Any]) -> str:
    """Where the container writes its termination message inside the pod."""
    return container.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH


def build_local_container(pod: dict[str, Any], container: dict[str, Any], *, state_dir: Path,
                          bin_dir: str, python: str, free_ports: dict[str, int] | None = None,
                          lookup: Any = None) -> LocalContainer:
    """Translate one container of a pod into a LocalContainer (Triton argv left for the caller).

    For a Triton container, argv holds the Triton flags with local ports; the caller turns it
    into a real command with lms_operator.serving.triton.local_command.
    """
    namespace = pod["metadata"].get("namespace", "default")
    pod_dir = state_dir / "pods" / pod_key(pod)
    mounts = container_mounts(container, (pod.get("spec") or {}).get("volumes") or [], namespace, pod_dir, state_dir)
    term_local = str(pod_dir / f"{container['name']}.termination-log")
    mounts_with_term = [Mount(termination_path(container), term_local), *mounts]
    env = container_env(container, pod, mounts, lookup)
    env[TERMINATION_LOG_ENV] = term_local
    raw = [*(container.get("command") or []), *(container.get("args") or [])]
    expanded = [rewrite_paths(expand_vars(a, env), mounts_with_term) for a in raw]
    cwd = container.get("workingDir")
    if cwd:
        cwd = rewrite_paths(cwd, mounts)
    if is_triton(expanded):
        if free_ports is None:
            raise UnsupportedPod("a Triton container needs free ports")
        args = substitute_triton_ports(expanded[1:], free_ports)
        return LocalContainer(container["name"], ["tritonserver", *args], env, cwd, term_local, mounts,
                              dict(free_ports), triton=True)
    return LocalContainer(container["name"], translate_argv(expanded, bin_dir, python), env, cwd,
                          term_local, mounts)
