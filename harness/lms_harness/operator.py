"""`lms operator` as a local process: the one way the e2e tests, the benches and the sandbox start it.

    python -m lms_harness.operator --kubeconfig K (--all-namespaces | --namespace NS ...) [--repository-root R]

runs the operator in the foreground (it replaces this process: the sandbox records its pid);
`OperatorProcess` starts one from Python, waits until it serves, reads its metrics and stops
it by process group (the operator's children go with it).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lms_harness.ports import free_port
from lms_harness.processes import kill_group

# Environment an outer shell may have set that would change what the operator under test does.
INHERITED_FAULTS = ("LMS_FAULT_EXIT_AT",)


class OperatorExited(RuntimeError):
    """The operator process ended while it was expected to run; the message holds its log tail."""


def operator_command(kubeconfig: Path, namespaces: tuple[str, ...] = (), repository_root: Path | None = None,
                     metrics_port: int = 0, liveness_port: int = 0, resync_seconds: float | None = None,
                     standalone: bool = False, profile: Path | None = None,
                     extra_env: Mapping[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) of `lms operator` from this environment's Python; no namespaces: all of them."""
    argv = [sys.executable]
    if profile is not None:
        argv += ["-m", "cProfile", "-o", str(profile)]
    argv += ["-m", "lms_operator.cli", "operator"]
    if namespaces:
        for namespace in namespaces:
            argv += ["--namespace", namespace]
    else:
        argv.append("--all-namespaces")
    if repository_root is not None:
        argv += ["--repository-root", str(repository_root)]
    argv += ["--metrics-port", str(metrics_port), "--liveness-port", str(liveness_port)]
    if resync_seconds is not None:
        argv += ["--resync-seconds", str(resync_seconds)]
    if standalone:
        argv.append("--standalone")
    env = {k: v for k, v in os.environ.items() if k not in INHERITED_FAULTS}
    env.update({"KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1", **(extra_env or {})})
    return argv, env


def metric_total(text: str, metric: str, label: str = "") -> float:
    """Sum of the Prometheus samples of `metric` whose labels contain `label` (e.g. 'trigger="spec"')."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(metric) and line[len(metric):len(metric) + 1] in (" ", "{") and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass
class OperatorProcess:
    """One `lms operator` process with its own log file; restartable with `start()` after `stop()`."""

    kubeconfig: Path
    log_path: Path
    namespaces: tuple[str, ...] = ()
    repository_root: Path | None = None
    metrics_port: int = field(default_factory=free_port)
    liveness_port: int = 0                 # 0: no liveness endpoint (readiness is read from /metrics)
    resync_seconds: float | None = None
    standalone: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. LMS_FAULT_EXIT_AT
    profile: Path | None = None            # run under cProfile, writing here
    args: tuple[str, ...] = ()             # `lms` arguments as given (a chart's container args) instead of the fields
    proc: subprocess.Popen[bytes] | None = None
    log_offset: int = 0                    # where this start's output begins in log_path

    def start(self, ready_timeout: float | None = 90) -> OperatorProcess:
        """Start the process; wait until it serves unless ready_timeout is None."""
        argv, env = operator_command(self.kubeconfig, self.namespaces, self.repository_root, self.metrics_port,
                                     self.liveness_port, self.resync_seconds, self.standalone, self.profile,
                                     self.extra_env)
        if self.args:
            argv = [sys.executable, "-m", "lms_operator.cli", *self.args]
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        if ready_timeout is not None:
            self.wait_ready(ready_timeout)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the operator was not started"
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_running(self) -> None:
        """Raise OperatorExited (with the log tail) when the process has ended."""
        if self.proc is not None and self.proc.poll() is not None:
            raise OperatorExited(f"operator exited with {self.proc.returncode}:\n{self.output()[-3000:]}")

    def ready(self) -> bool:
        """True once the operator answers on its liveness endpoint (or its metrics port without one)."""
        self.check_running()
        url = (f"http://127.0.0.1:{self.liveness_port}/healthz" if self.liveness_port
               else f"http://127.0.0.1:{self.metrics_port}/metrics")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the operator did not serve within {timeout:.0f}s:\n{self.output()[-3000:]}")
            time.sleep(0.25)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def reconciles(self, trigger: str = "") -> float:
        """Reconcile passes finished since this process started (one trigger, or all)."""
        return metric_total(self.metrics(), "lms_operator_reconciles_total", f'trigger="{trigger}"' if trigger else "")

    def logs(self) -> str:
        """The whole log file (every start)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def output(self) -> str:
        """What this start wrote to the log."""
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(self.log_offset)
            return f.read().decode("utf-8", "replace")

    def wait_exit(self, timeout: float) -> int:
        """The exit code; TimeoutError (after stopping it) when it still runs after timeout seconds."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise TimeoutError(f"the operator still ran after {timeout:.0f}s:\n{self.output()[-3000:]}") from None

    def kill(self) -> None:
        """SIGKILL the process group, as a crashed pod would end."""
        if self.running():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, grace: float = 30) -> None:
        """SIGTERM the process group, SIGKILL after grace seconds."""
        if self.proc is not None:
            kill_group(self.proc, grace)

    def peak_rss_mib(self) -> float | None:
        """VmHWM (peak resident set) of the live process, MiB."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
        except OSError:
            return None
        return None

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds of the live process."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return None


def main(argv: list[str] | None = None) -> int:
    """Replace this process with the operator (the sandbox's background start)."""
    p = argparse.ArgumentParser(prog="python -m lms_harness.operator", description=__doc__.splitlines()[0])
    p.add_argument("--kubeconfig", type=Path, required=True)
    scope = p.add_mutually_exclusive_group(required=True)
    scope.add_argument("--namespace", "-n", action="append", dest="namespaces", metavar="NS")
    scope.add_argument("--all-namespaces", "-A", action="store_true")
    p.add_argument("--repository-root", type=Path)
    p.add_argument("--metrics-port", type=int, default=8080)
    p.add_argument("--liveness-port", type=int, default=8081)
    p.add_argument("--resync-seconds", type=float)
    p.add_argument("--standalone", action="store_true")
    args = p.parse_args(argv)
    if not args.kubeconfig.is_file():
        print(f"lms_harness.operator: --kubeconfig {args.kubeconfig}: no such file", file=sys.stderr)
        return 2
    command, env = operator_command(args.kubeconfig.resolve(), tuple(args.namespaces or ()), args.repository_root,
                                    args.metrics_port, args.liveness_port, args.resync_seconds, args.standalone)
    os.execve(command[0], command, env)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
