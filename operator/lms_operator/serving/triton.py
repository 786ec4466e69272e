"""Run the pip-installed Triton (nvidia-pytriton) locally on an onnxruntime_onnx repository.

The wheel ships tritonserver with only the Python backend. A backend folder holding
`python/` (the Python backend plus the stub for this interpreter) and `onnxruntime/model.py`
(our shim) lets it load the same repository the Triton image serves natively. The folder is
built once per shim content in a cache outside the repository.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

BACKEND_SOURCE = Path(__file__).with_name("backend") / "model.py"
PORT_FLAGS = ("--http-port", "--grpc-port", "--metrics-port")
DEFAULT_PORTS = {"--http-port": 8000, "--grpc-port": 8001, "--metrics-port": 8002}


class ServerError(RuntimeError):
    """Triton could not be started, did not become ready, or is missing."""


def cache_root() -> Path:
    return Path(os.environ.get("LMS_CACHE", Path.home() / ".cache" / "lms"))


def default_repository() -> Path:
    """Where `lms serve` publishes and `lms infer` looks for a tokenizer when none is given."""
    return cache_root() / "repository"


def pytriton_root() -> Path:
    """Folder of the installed pytriton package (found without importing it)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError("nvidia-pytriton is not installed: pip install 'lms-operator[serve]' (nvidia-pytriton==0.7.0)")
    return Path(list(spec.submodule_search_locations)[0])


def tritonserver_binary() -> Path:
    binary = pytriton_root() / "tritonserver" / "bin" / "tritonserver"
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise ServerError(f"tritonserver binary not found at {binary}")
    return binary


def libs_dir() -> Path:
    return pytriton_root().parent / "nvidia_pytriton.libs"


def stub_binary() -> Path:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = pytriton_root() / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(f"no Triton Python backend stub for Python {version} at {stub}")
    return stub


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def prepare_backends(root: Path | None = None) -> Path:
    """The `--backend-directory` folder (python/ + onnxruntime/model.py), built once per content."""
    python_backend = pytriton_root() / "tritonserver" / "backends" / "python"
    sources = sorted(python_backend.iterdir()) + [stub_binary(), BACKEND_SOURCE]
    target = (root or cache_root() / "triton-backends") / _digest(sources)
    if (target / "onnxruntime" / "model.py").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        shutil.copytree(python_backend, staging / "python", dirs_exist_ok=True)
        shutil.copy2(stub_binary(), staging / "python" / "triton_python_backend_stub")
        (staging / "onnxruntime").mkdir()
        shutil.copy2(BACKEND_SOURCE, staging / "onnxruntime" / "model.py")
        try:
            staging.rename(target)
        except OSError:  # built meanwhile by another process
            if not (target / "onnxruntime" / "model.py").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _flag_value(args: list[str], flag: str) -> str | None:
    for index, arg in enumerate(args):
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
        if arg == flag and index + 1 < len(args):
            return args[index + 1]
    return None


def _without_flag(args: list[str], flag: str) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == flag:
            skip = True
            continue
        if arg.startswith(flag + "="):
            continue
        out.append(arg)
    return out


def ports(triton_args: list[str]) -> dict[str, int]:
    """Ports the server will bind, keyed by flag (Triton's defaults where not given)."""
    out = {}
    for flag in PORT_FLAGS:
        value = _flag_value(triton_args, flag)
        try:
            out[flag] = int(value) if value is not None else DEFAULT_PORTS[flag]
        except ValueError:
            raise ServerError(f"{flag}: not a port number: {value!r}") from None
    return out


def local_command(triton_args: list[str]) -> tuple[list[str], dict[str, str]]:
    """argv and environment to run tritonserver locally with the given Triton flags.

    Accepts the exact flags of the Triton Deployment; `--backend-directory` is set to the
    local backends (replacing any given one), and `--cache-directory` to the wheel's caches.
    """
    if not triton_args or triton_args[0].endswith("tritonserver"):
        triton_args = triton_args[1:]
    backends = prepare_backends()
    argv = [str(tritonserver_binary()), *_without_flag(list(triton_args), "--backend-directory"), f"--backend-directory={backends}"]
    if any(arg.startswith("--cache-config") for arg in argv):  # the wheel's own response cache library
        argv = [*_without_flag(argv, "--cache-directory"), f"--cache-directory={pytriton_root() / 'tritonserver' / 'caches'}"]
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(libs_dir()), env.get("LD_LIBRARY_PATH", "")) if p)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    site = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in (*site, env.get("PYTHONPATH", "")) if p))
    env.setdefault("OMP_NUM_THREADS", "1")
    return argv, env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check_ports_free(triton_args: list[str]) -> None:
    for flag, port in ports(triton_args).items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is not "in use"
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                raise ServerError(f"{flag}: port {port} is already in use") from None


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class TritonProcess:
    """A local tritonserver in its own process group; start, wait until ready, stop."""

    triton_args: list[str]
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _log_file: IO[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def http_port(self) -> int:
        return ports(self.triton_args)["--http-port"]

    @property
    def grpc_port(self) -> int:
        return ports(self.triton_args)["--grpc-port"]

    @property
    def metrics_port(self) -> int:
        return ports(self.triton_args)["--metrics-port"]

    def start(self) -> "TritonProcess":
        repository = _flag_value(self.triton_args, "--model-repository")
        if repository is None:
            raise ServerError("--model-repository is required")
        if not repository.startswith("s3://") and not Path(repository).is_dir():
            raise ServerError(f"--model-repository: {repository} is not a directory")
        check_ports_free(self.triton_args)
        argv, env = local_command(self.triton_args)
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(argv, env=env, stdout=self._log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, model: str | None = None, timeout: float = 120.0) -> None:
        """Block until the server (and `model`, if given) is ready; ServerError on exit or timeout."""
        if self.process is None:
            raise ServerError("server not started")
        base = f"http://127.0.0.1:{self.http_port}"
        url = f"{base}/v2/models/{model}/ready" if model else f"{base}/v2/health/ready"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise ServerError(f"tritonserver exited with code {code} before it was ready:\n{self.log_tail()}")
            if _http_ok(url) and _http_ok(f"{base}/v2/health/ready"):
                return
            time.sleep(0.25)
        raise ServerError(f"tritonserver not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM the process group, SIGKILL whatever is left after `timeout`; returns the exit code."""
        process, self.process = self.process, None
        code = None
        if process is not None:
            pgid = process.pid
            _signal_group(pgid, signal.SIGTERM)
            try:
                code = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(pgid, signal.SIGKILL)
                code = process.wait()
            deadline = time.monotonic() + 5
            while _group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _group_alive(pgid):
                _signal_group(pgid, signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code

    def cpu_seconds(self) -> float:
        """User+system CPU seconds of every live process in the server's group (server and stubs)."""
        if self.process is None:
            return 0.0
        return group_cpu_seconds(self.process.pid)

    def __enter__(self) -> "TritonProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def group_cpu_seconds(pgid: int) -> float:
    """Sum of utime+stime over /proc entries whose process group is `pgid` (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def server_args(repository: Path, http_port: int, grpc_port: int, metrics_port: int) -> list[str]:
    """The Triton flags the Deployment uses, with local ports."""
    return [
        f"--model-repository={repository}",
        f"--http-port={http_port}",
        f"--grpc-port={grpc_port}",
        f"--metrics-port={metrics_port}",
        "--strict-readiness=true",
        "--exit-timeout-secs=10",
        "--log-verbose=0",
    ]
