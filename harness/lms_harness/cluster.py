"""The local control plane the e2e tests and the benches share: pinned binaries, kwok clusters
(sandbox/cluster.sh), API clients and ServiceAccount kubeconfigs."""
from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

# The harness is installed editable from the repository's harness/ folder; LMS_ROOT overrides.
ROOT = Path(os.environ.get("LMS_ROOT") or Path(__file__).resolve().parents[2])


class ClusterError(RuntimeError):
    """A control-plane step failed; the message holds the tail of its output."""


def tools_bin() -> str:
    """Folder with the pinned binaries (tools/build.sh builds them on first use, reuses them after)."""
    done = subprocess.run([str(ROOT / "tools" / "build.sh")], capture_output=True, text=True, timeout=7200)
    if done.returncode != 0:
        raise ClusterError(f"tools/build.sh failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


def tools_env(bin_dir: str) -> dict[str, str]:
    """This environment with the pinned binaries first on PATH (and named for sandbox/cluster.sh)."""
    return {**os.environ, "LMS_TOOLS_BIN": bin_dir, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def cluster_up(name: str, kubeconfig: Path, bin_dir: str, timeout: float = 600) -> None:
    """Create (or reuse) kwok cluster `name` with the CPU and GPU pools; write its admin kubeconfig."""
    done = subprocess.run([str(ROOT / "sandbox" / "cluster.sh"), "up", name, str(kubeconfig)], env=tools_env(bin_dir),
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise ClusterError(f"cluster {name} did not start:\n{done.stderr[-4000:]}")


def cluster_down(name: str, bin_dir: str | None = None, timeout: float = 300) -> None:
    """Delete kwok cluster `name` (a missing one is fine); never raises, teardown goes on."""
    env = tools_env(bin_dir) if bin_dir else dict(os.environ)
    subprocess.run([str(ROOT / "sandbox" / "cluster.sh"), "down", name], env=env,
                   capture_output=True, text=True, timeout=timeout)


def api_client(kubeconfig: Path, pool_size: int = 32) -> Any:
    """An official-client ApiClient for the kubeconfig, with `pool_size` pooled connections."""
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    cfg.connection_pool_maxsize = pool_size
    return client.ApiClient(cfg)


def server_config(kubeconfig: Path) -> dict[str, Any]:
    """The current context's cluster entry with the CA inlined (a relative CA path is read from disk)."""
    doc = yaml.safe_load(kubeconfig.read_text())
    current = doc.get("current-context") or doc["contexts"][0]["name"]
    context = next(c for c in doc["contexts"] if c["name"] == current)["context"]
    cluster = next(c for c in doc["clusters"] if c["name"] == context["cluster"])["cluster"]
    server: dict[str, Any] = {"server": cluster["server"]}
    if "certificate-authority-data" in cluster:
        server["certificate-authority-data"] = cluster["certificate-authority-data"]
    elif "certificate-authority" in cluster:
        ca = Path(cluster["certificate-authority"])
        if not ca.is_absolute():
            ca = kubeconfig.parent / ca
        server["certificate-authority-data"] = base64.b64encode(ca.read_bytes()).decode()
    else:
        server["insecure-skip-tls-verify"] = True
    return server


def token_kubeconfig(admin_kubeconfig: Path, token: str, namespace: str, path: Path,
                     user: str = "lms-operator") -> Path:
    """A kubeconfig for the same API server that authenticates with a bearer token (e.g. a
    ServiceAccount's TokenRequest token), defaulting to `namespace`; written 0600."""
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "operator",
              "clusters": [{"name": "e2e", "cluster": server_config(admin_kubeconfig)}],
              "users": [{"name": user, "user": {"token": token}}],
              "contexts": [{"name": "operator", "context": {"cluster": "e2e", "user": user, "namespace": namespace}}]}
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def podrunner_command(kubeconfig: Path, state_dir: Path, python: str | None = None) -> list[str]:
    """The pod runner (plays kubelet for the project's CPU-pool pods) as a command line."""
    return [python or sys.executable, "-m", "lms_harness.podrunner", "--kubeconfig", str(kubeconfig),
            "--state-dir", str(state_dir)]
