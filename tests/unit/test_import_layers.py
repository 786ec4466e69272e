"""The package's floors hold: no module imports a floor above its own, the Job's code and the
operator stay apart, and the operator never imports torch (contracts in pyproject.toml)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def lint_imports(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())",
               "--no-cache", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_import_contracts_are_kept() -> None:
    done = lint_imports()
    assert done.returncode == 0, f"lint-imports found imports that break the layering:\n{done.stdout}\n{done.stderr}"
    assert "BROKEN" not in done.stdout and "KEPT" in done.stdout
