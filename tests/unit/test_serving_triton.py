"""The local Triton command: the Deployment's flags run unchanged against local backends."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from lms_operator.serving import triton

DEPLOYMENT_FLAGS = [
    "--model-repository=/models/default/minilm/0123456789abcdef",
    "--http-port=8000",
    "--grpc-port=8001",
    "--metrics-port=8002",
    "--strict-readiness=true",
    "--exit-timeout-secs=10",
    "--log-verbose=0",
]


def test_local_command_keeps_deployment_flags_and_adds_backends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMS_CACHE", str(tmp_path))
    argv, env = triton.local_command(["tritonserver", *DEPLOYMENT_FLAGS])
    assert Path(argv[0]).name == "tritonserver" and Path(argv[0]).is_file()
    assert argv[1:-1] == DEPLOYMENT_FLAGS
    backends = Path(argv[-1].split("=", 1)[1])
    assert argv[-1].startswith("--backend-directory=")
    assert (backends / "onnxruntime" / "model.py").read_bytes() == triton.BACKEND_SOURCE.read_bytes()
    assert (backends / "python" / "triton_python_backend_stub").is_file()
    assert (backends / "python" / "libtriton_python.so").is_file()
    assert not (backends / "onnxruntime" / "libtriton_onnxruntime.so").exists()
    assert str(triton.libs_dir()) in env["LD_LIBRARY_PATH"].split(":")
    assert any(Path(p, "numpy").is_dir() for p in env["PYTHONPATH"].split(":"))


def test_backend_directory_flag_is_replaced_not_duplicated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMS_CACHE", str(tmp_path))
    argv, _ = triton.local_command([*DEPLOYMENT_FLAGS, "--backend-directory", "/opt/tritonserver/backends"])
    assert [a for a in argv if "backend-directory" in a] == [argv[-1]]
    assert "/opt/tritonserver/backends" not in argv


def test_backends_are_built_once_per_content(tmp_path: Path) -> None:
    first = triton.prepare_backends(tmp_path)
    marker = first / "onnxruntime" / "model.py"
    mtime = marker.stat().st_mtime_ns
    assert triton.prepare_backends(tmp_path) == first
    assert marker.stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == [first.name]


def test_ports_read_both_flag_spellings_and_default() -> None:
    assert triton.ports(["--http-port=9000", "--grpc-port", "9001"]) == {"--http-port": 9000, "--grpc-port": 9001, "--metrics-port": 8002}
    with pytest.raises(triton.ServerError, match="--grpc-port"):
        triton.ports(["--grpc-port=abc"])


def test_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        args = triton.server_args(tmp_path, busy, triton.free_port(), triton.free_port())
        with pytest.raises(triton.ServerError, match=f"--http-port: port {busy} is already in use"):
            triton.TritonProcess(args).start()


def test_missing_repository_is_a_clear_error(tmp_path: Path) -> None:
    args = triton.server_args(tmp_path / "absent", triton.free_port(), triton.free_port(), triton.free_port())
    with pytest.raises(triton.ServerError, match="--model-repository: .*absent is not a directory"):
        triton.TritonProcess(args).start()


def test_missing_pytriton_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(triton.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(triton.ServerError, match="nvidia-pytriton is not installed"):
        triton.tritonserver_binary()
