"""Start and stop the sandbox's real S3 server (versitygw, through sandbox/s3.sh) from Python.

The e2e session and the storage integration tests use it; `make sandbox` calls the script itself.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "sandbox" / "s3.sh"


class S3Error(RuntimeError):
    """The S3 server did not start."""


def read_env(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an s3.env file."""
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def start_s3(folder: Path, bin_dir: str, buckets: tuple[str, ...] = ("lms",)) -> dict[str, str]:
    """versitygw over folder/s3/ with the buckets; returns its AWS_* (also in folder/s3.env)."""
    done = subprocess.run([str(SCRIPT), "up", str(folder), *buckets], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "LMS_TOOLS_BIN": bin_dir, "LMS_PYTHON": sys.executable})
    if done.returncode != 0:
        raise S3Error(f"sandbox/s3.sh up failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return read_env(Path(done.stdout.strip().splitlines()[-1]))


def stop_s3(folder: Path) -> None:
    """Stop the server started over `folder` (its data stays until the folder is removed)."""
    subprocess.run([str(SCRIPT), "down", str(folder)], capture_output=True, text=True, timeout=60,
                   env={**os.environ, "LMS_PYTHON": sys.executable})
