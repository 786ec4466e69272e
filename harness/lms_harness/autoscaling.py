"""Start and stop the sandbox's Prometheus and KEDA (through sandbox/autoscaling.sh) from Python,
and read what they report.

The autoscaling e2e tests and bench/autoscale.py use it; `make sandbox AUTOSCALING=1` calls the
script itself.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "sandbox" / "autoscaling.sh"


class AutoscalingError(RuntimeError):
    """Prometheus or KEDA did not start."""


def _run(action: str, folder: Path, kubeconfig: Path, bin_dir: str, components: tuple[str, ...],
         timeout: float) -> str:
    done = subprocess.run([str(SCRIPT), action, str(folder), str(kubeconfig), *components],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "LMS_TOOLS_BIN": bin_dir, "LMS_PYTHON": sys.executable})
    if done.returncode != 0:
        raise AutoscalingError(f"sandbox/autoscaling.sh {action} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done.stdout


def start_autoscaling(folder: Path, kubeconfig: Path, bin_dir: str,
                      components: tuple[str, ...] = ("prometheus", "keda")) -> str:
    """Start Prometheus and/or KEDA for the cluster; returns Prometheus's base URL."""
    out = _run("up", folder, kubeconfig, bin_dir, components, timeout=300)
    env = dict(line.split("=", 1) for line in Path(out.strip().splitlines()[-1]).read_text().splitlines() if "=" in line)
    return env.get("LMS_PROMETHEUS_ADDRESS", "")


def stop_autoscaling(folder: Path, kubeconfig: Path, bin_dir: str,
                     components: tuple[str, ...] = ("prometheus", "keda")) -> None:
    """Stop them; for KEDA also remove its APIService and CRDs, as uninstalling KEDA does."""
    _run("down", folder, kubeconfig, bin_dir, components, timeout=180)


def prometheus_query(base_url: str, query: str, timeout: float = 5.0) -> list[dict[str, object]]:
    """An instant PromQL query's result vector ([] when nothing matches)."""
    url = f"{base_url}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        body = json.loads(resp.read())
    if body.get("status") != "success":
        raise AutoscalingError(f"Prometheus query {query!r} failed: {body}")
    return list(body["data"]["result"])


def prometheus_value(base_url: str, query: str) -> float | None:
    """The single value of an instant query, None when it matches nothing."""
    result = prometheus_query(base_url, query)
    return float(result[0]["value"][1]) if result else None  # type: ignore[index]
