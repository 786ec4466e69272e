"""`lms serve` as users run it: compress, serve on a real local Triton, answer, stop on a signal.

Uses the bundled digits teacher (TorchScript, 64 features -> 10 logits) without quantization so
compression takes seconds; the MiniLM path is covered in test_serving.py.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from lms_operator.serving.triton import free_port

REPO = Path(__file__).resolve().parents[2]
LMS = [sys.executable, "-m", "lms_operator.cli"]
TEACHER = REPO / "examples" / "models" / "digits-teacher" / "model.pt"
READY_LINE = "Ctrl-C stops the server."
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def write_spec(path: Path, name: str = "digits") -> Path:
    doc = {"apiVersion": "serving.lms.dev/v1alpha1", "kind": "LargeModelService", "metadata": {"name": name},
           "spec": {"model": {"uri": f"file://{TEACHER}", "format": "torchscript", "task": "tabular-classification"},
                    "compression": {"quantization": {"mode": "none"}, "qualityGate": {"metric": "accuracy", "min": 0.9},
                                    "variantSearch": {"enabled": False}},
                    "serving": {"device": "cpu", "resources": {"cpu": "1"}, "maxBatchSize": 64}}}
    path.write_text(yaml.safe_dump(doc))
    return path


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if text in cmdline and state != "Z":
                found.append(int(entry.name))
    return found


class Served:
    """A running `lms serve` child and what it printed up to the ready banner."""

    def __init__(self, spec: Path, root: Path) -> None:
        self.root = root
        self.http, self.grpc, self.metrics = free_port(), free_port(), free_port()
        self.process = subprocess.Popen([*LMS, "serve", str(spec), "--repository", str(root), "--http-port", str(self.http),
                                         "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics)],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.banner: list[str] = []
        deadline = time.monotonic() + 600
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.banner.append(line.rstrip("\n"))
            if line.strip() == READY_LINE or time.monotonic() > deadline:
                break
        assert self.banner and self.banner[-1] == READY_LINE, self.stop_and_stderr()

    def stop_and_stderr(self, sig: int = signal.SIGTERM) -> str:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        _, err = self.process.communicate(timeout=60)
        return err


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("repository")


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_spec(tmp_path_factory.mktemp("spec") / "digits.yaml")


@pytest.fixture(scope="module")
def first_run(spec: Path, root: Path) -> Iterator[Served]:
    served = Served(spec, root)
    yield served
    if served.process.poll() is None:
        served.stop_and_stderr()


def test_banner_curl_request_answers(first_run: Served) -> None:
    curl = next(line for line in first_run.banner if line.strip().startswith("curl "))
    words = shlex.split(curl)
    url, body = words[2], words[words.index("-d") + 1]
    assert url == f"http://127.0.0.1:{first_run.http}/v2/models/digits/infer"
    request = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    assert answer["outputs"][0]["name"] == "logits" and answer["outputs"][0]["shape"] == [1, 10]
    assert f"  gRPC     127.0.0.1:{first_run.grpc}" in first_run.banner


def test_lms_infer_vector_gives_a_class(first_run: Served) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    correct = 0
    for index in range(10):
        vector = ",".join(str(v) for v in digits.data[index] / 16.0)
        done = subprocess.run([*LMS, "infer", f"grpc://127.0.0.1:{first_run.grpc}", "--model", "digits", "--vector", vector],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        match = re.match(r"class (\d) \(logits \[", done.stdout)
        assert match, done.stdout
        correct += int(match.group(1)) == digits.target[index]
    assert correct >= 8


def test_sigterm_stops_everything(first_run: Served) -> None:
    version_dirs = [p.parent for p in first_run.root.rglob(".complete")]
    assert len(version_dirs) == 1
    served = first_run.root / ".served" / "default" / "digits"  # the published version's files, linked
    assert (served / "digits" / "1").resolve() == version_dirs[0] / "digits" / "1"
    assert processes_mentioning(str(served))  # tritonserver runs on it
    started = time.monotonic()
    err = first_run.stop_and_stderr(signal.SIGTERM)
    assert first_run.process.returncode == 0, err
    assert time.monotonic() - started < 30
    assert "SIGTERM: stopping Triton" in err
    assert processes_mentioning(str(served)) == []
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", first_run.http))  # nothing listens on the port any more


def test_second_run_is_a_cache_hit_and_stops_on_ctrl_c(first_run: Served, spec: Path, root: Path) -> None:
    assert first_run.process.poll() is not None
    served = Served(spec, root)
    err = served.stop_and_stderr(signal.SIGINT)
    assert served.process.returncode == 0, err
    assert "cache hit" in err and "SIGINT: stopping Triton" in err
    assert len(list(root.rglob(".complete"))) == 1


def test_busy_port_fails_before_compressing(spec: Path, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        done = subprocess.run([*LMS, "serve", str(spec), "--repository", str(tmp_path / "root"), "--grpc-port", str(busy),
                               "--http-port", str(free_port()), "--metrics-port", str(free_port())],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == f"lms serve: --grpc-port: port {busy} is already in use"
    assert not (tmp_path / "root").exists()


def test_invalid_spec_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    doc = yaml.safe_load(write_spec(tmp_path / "good.yaml").read_text())
    doc["spec"]["serving"]["maxBatchSize"] = 0
    bad.write_text(yaml.safe_dump(doc))
    done = subprocess.run([*LMS, "serve", str(bad), "--repository", str(tmp_path / "root")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "maxBatchSize" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    missing = subprocess.run([*LMS, "serve", str(tmp_path / "absent.yaml")], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "absent.yaml: no such file" in missing.stderr


@pytest.mark.skipif(any(Path("/dev").glob("nvidia[0-9]*")), reason="this machine has a GPU: the refusal applies only without one")
def test_gpu_spec_without_gpu_is_refused(tmp_path: Path) -> None:
    done = subprocess.run([*LMS, "serve", str(REPO / "examples" / "minilm-gpu.yaml"), "--repository", str(tmp_path / "root")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "spec.serving.device: gpu needs an NVIDIA GPU" in done.stderr
    assert not (tmp_path / "root").exists()
