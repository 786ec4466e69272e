"""scripts/test (`make test`): the steps, their order around the tools build, and the exit status.

The script runs in a copy of itself with a stand-in pytest and tools/build.sh that record what
they were asked and exit as told, so every way a step can fail is checked in seconds.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAKE_PYTEST = """#!/usr/bin/env bash
# The venv's python: records its arguments; exits with the status named after the step's tier in $RC_<tier>.
echo "python $* @$(date +%s.%N)" >> "$RECORD"
case "$*" in
  *tests/e2e*) exit "${RC_E2E:-0}" ;;
  *"-m tools"*) exit "${RC_TOOLS_TESTS:-0}" ;;
  *) exit "${RC_FAST:-0}" ;;
esac
"""
FAKE_BUILD = """#!/usr/bin/env bash
echo $$ > "$RECORD.build-pid"
sleep "${BUILD_SECONDS:-0}" &
echo $! > "$RECORD.sleep-pid"
wait
echo "build done @$(date +%s.%N)" >> "$RECORD"
echo /tools/current
exit "${RC_BUILD:-0}"
"""


def start(tmp_path: Path, **rcs: str) -> subprocess.Popen[str]:
    """scripts/test started in a copy of the repository layout with the stand-ins."""
    for folder in ("scripts", "tools", ".venv/bin"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "scripts" / "test", tmp_path / "scripts" / "test")
    for path, text in ((".venv/bin/python", FAKE_PYTEST), ("tools/build.sh", FAKE_BUILD)):
        (tmp_path / path).write_text(text)
        (tmp_path / path).chmod(0o755)
    env = {**os.environ, "RECORD": str(tmp_path / "record"), "LMS_TEST_LOGS": str(tmp_path / "logs"), **rcs}
    return subprocess.Popen([str(tmp_path / "scripts" / "test")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)


def recorded(tmp_path: Path) -> list[str]:
    record = tmp_path / "record"
    return record.read_text().splitlines() if record.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"


def run(tmp_path: Path, **rcs: str) -> tuple[int, list[str], str]:
    """scripts/test to its end; (exit status, recorded calls, output)."""
    proc = start(tmp_path, **rcs)
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, recorded(tmp_path), out


def test_steps_run_in_order_with_the_build_beside_the_fast_tiers(tmp_path: Path) -> None:
    rc, calls, out = run(tmp_path, BUILD_SECONDS="1")
    assert rc == 0, out
    assert [c.split(" @")[0] for c in calls] == [
        "python -m pytest -p no:cacheprovider --strict-markers -ra -n 2 --dist loadfile -m not tools tests/unit tests/integration",
        "build done",
        "python -m pytest -p no:cacheprovider --strict-markers -ra -n 2 --dist loadfile -m tools tests/unit tests/integration",
        "python -m pytest -p no:cacheprovider --strict-markers -ra tests/e2e",
    ]
    fast_started, build_done = (float(c.split(" @")[1]) for c in calls[:2])
    assert fast_started < build_done       # the fast tiers did not wait for the build
    assert "every step passed" in out
    assert (tmp_path / "logs" / "tools.log").read_text().strip() == "/tools/current"


@pytest.mark.parametrize("failing, status", [("RC_FAST", "1"), ("RC_FAST", "5"), ("RC_TOOLS_TESTS", "5"),
                                             ("RC_E2E", "1"), ("RC_E2E", "5")])
def test_any_failing_step_fails_the_run_and_the_later_steps_still_run(tmp_path: Path, failing: str, status: str) -> None:
    rc, calls, out = run(tmp_path, **{failing: status})
    assert rc == 1, out
    assert f"(exit status {status})" in out
    assert sum(c.startswith("python") for c in calls) == 3


def test_a_failed_build_fails_the_run_without_the_tiers_that_need_it(tmp_path: Path) -> None:
    rc, calls, out = run(tmp_path, RC_BUILD="2")
    assert rc == 1, out
    assert "tools/build.sh (exit status 2" in out
    assert [c.split(" @")[0] for c in calls if c.startswith("python")] == [
        "python -m pytest -p no:cacheprovider --strict-markers -ra -n 2 --dist loadfile -m not tools tests/unit tests/integration"]


def test_an_interrupted_run_stops_the_build(tmp_path: Path) -> None:
    proc = start(tmp_path, BUILD_SECONDS="30")
    assert proc.stdout is not None
    for line in proc.stdout:
        if "waiting for tools/build.sh" in line:
            break
    sleeping = tmp_path / "record.sleep-pid"
    deadline = time.monotonic() + 20
    while not (sleeping.exists() and sleeping.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)    # the build has started its child
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 130
    pids = [int((tmp_path / f"record.{name}-pid").read_text()) for name in ("build", "sleep")]
    time.sleep(0.5)
    assert not [pid for pid in pids if alive(pid)], "the build (or its child) outlived the run"
    assert not any(c.startswith("build done") for c in recorded(tmp_path))


def test_makefile_and_ci_run_the_script() -> None:
    assert "scripts/test" in (ROOT / "Makefile").read_text().split("\ntest: venv\n", 1)[1].splitlines()[0]
    assert (ROOT / ".ci" / "run").read_text().rstrip().endswith("make test")


def test_every_test_file_that_uses_the_tools_marks_them() -> None:
    """A test that reaches for a binary `make tools` builds runs after the build: unmarked, it would
    skip on a fresh machine or wait on the build's lock inside the parallel step."""
    uses_tools = ("tools_bin()", '"bin" / "current"')
    unmarked = [path.relative_to(ROOT).as_posix()
                for tier in ("unit", "integration") for path in sorted((ROOT / "tests" / tier).glob("test_*.py"))
                if any(u in path.read_text() for u in uses_tools) and "pytest.mark.tools" not in path.read_text()
                and path.name != Path(__file__).name]
    assert unmarked == []
