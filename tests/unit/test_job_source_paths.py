"""The Job's own check of local source paths: what admission refuses cannot reach the disk another way.

A pvc:// source is read through `--model-dir` below the claim's mount (`--source-root`); a symlink
in the claim that points out of it, or a spec that does not validate, stops the Job with exit 2
and reason InvalidSpec, which the operator reports as the Failed condition's reason.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lms_operator.api.contract import INVALID_SPEC, ExitCode
from lms_operator.compression.errors import InvalidSpec
from lms_operator.compression.source import inside, mounted_source, resolve_uri
from tests.unit.conftest import ROOT

MANIFEST = {"apiVersion": "serving.lms.dev/v1alpha1", "kind": "LargeModelService", "metadata": {"name": "m"},
            "spec": {"model": {"uri": "pvc://sources/minilm"}}}


def compress(tmp_path: Path, manifest: dict, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lms_operator.cli", "compress", "--spec-json", json.dumps(manifest),
                           "--out", str(tmp_path / "repo"), *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def summary_of(done: subprocess.CompletedProcess[str]) -> dict:
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def mount(tmp_path: Path) -> Path:
    """A claim's mount holding a model folder and a symlink that points out of the claim."""
    root = tmp_path / "sources"
    (root / "minilm").mkdir(parents=True)
    (tmp_path / "secrets").mkdir()
    (root / "escape").symlink_to(tmp_path / "secrets")
    return root


def test_a_model_dir_inside_the_mount_is_kept(mount: Path) -> None:
    assert mounted_source(mount / "minilm", mount) == mount / "minilm"
    assert mounted_source(mount / "escape", None) == mount / "escape"  # no mount given: the local CLI


@pytest.mark.parametrize("below", ["escape", "minilm/../../secrets", "../secrets"])
def test_a_model_dir_that_resolves_outside_the_mount_is_refused(mount: Path, below: str) -> None:
    with pytest.raises(InvalidSpec, match="outside the claim mounted at") as caught:
        mounted_source(mount / below, mount)
    assert caught.value.exit_code == ExitCode.BAD_INPUT and caught.value.summary.reason == INVALID_SPEC


def test_the_job_exits_2_with_invalid_spec_for_a_symlink_out_of_the_claim(tmp_path: Path, mount: Path) -> None:
    done = compress(tmp_path, MANIFEST, "--source-root", str(mount), "--model-dir", str(mount / "escape"))
    assert done.returncode == ExitCode.BAD_INPUT, done.stderr
    assert "outside the claim mounted at" in done.stderr and "Traceback" not in done.stderr
    assert summary_of(done)["reason"] == INVALID_SPEC
    assert not (tmp_path / "repo").exists()


def test_the_job_exits_2_with_invalid_spec_for_a_spec_that_does_not_validate(tmp_path: Path) -> None:
    manifest = {**MANIFEST, "spec": {"model": {"uri": "pvc://sources/../../etc"}}}
    done = compress(tmp_path, manifest, "--model-dir", "/sources/../../etc")
    assert done.returncode == ExitCode.BAD_INPUT
    assert "spec.model.uri: must not contain a '..' path segment" in done.stderr
    assert summary_of(done)["reason"] == INVALID_SPEC


def test_relative_paths_stay_in_the_spec_folder(tmp_path: Path) -> None:
    assert inside(tmp_path, "data/train.txt", "f") == tmp_path / "data/train.txt"
    assert inside(tmp_path, "a/../b.txt", "f") == tmp_path / "a/../b.txt"
    for climbing in ("../x.txt", "a/../../x.txt", "/etc/passwd"):
        with pytest.raises(InvalidSpec, match="leaves the spec's folder"):
            inside(tmp_path, climbing, "spec.compression.data.evaluation.uri")
    with pytest.raises(InvalidSpec, match="spec.model.uri"):
        resolve_uri("file:../model.pt", tmp_path, None)
