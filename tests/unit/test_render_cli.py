"""`lms render` and `lms validate` as a user runs them: stable output, clear errors, exit codes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.unit.conftest import EXAMPLES, ROOT


def lms(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lms_operator.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_render_is_stable_and_complete() -> None:
    first = lms("render", str(EXAMPLES / "minilm-cpu.yaml"))
    second = lms("render", str(EXAMPLES / "minilm-cpu.yaml"))
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    kinds = [doc["kind"] for doc in yaml.safe_load_all(first.stdout)]
    assert kinds == ["Job", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"]
    assert "creationTimestamp" not in first.stdout


def test_render_with_and_without_keda() -> None:
    example = str(EXAMPLES / "minilm-gpu.yaml")  # metric queueLatency
    plain = {doc["kind"]: doc for doc in yaml.safe_load_all(lms("render", example).stdout)}
    assert "ScaledObject" not in plain
    assert "KEDA is not installed" in plain["HorizontalPodAutoscaler"]["metadata"]["annotations"][
        "lms.dev/autoscaling-fallback"]
    keda = {doc["kind"]: doc for doc in yaml.safe_load_all(lms("render", example, "--keda").stdout)}
    assert "HorizontalPodAutoscaler" not in keda
    assert keda["ScaledObject"]["spec"]["triggers"][0]["metricType"] == "Value"


def test_render_json() -> None:
    result = lms("render", str(EXAMPLES / "minilm-gpu.yaml"), "-o", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["kind"] == "List"


def test_invalid_spec_exits_non_zero_with_paths(tmp_path: Path) -> None:
    spec = yaml.safe_load((EXAMPLES / "minilm-cpu.yaml").read_text())
    spec["spec"]["compression"]["pruning"] = {"sparsity": 1.5}
    spec["spec"]["autoscaling"] = {"minReplicas": 3, "maxReplicas": 2}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = lms("render", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert f"error: {path}: spec.compression.pruning.sparsity: must be < 0.95, got 1.5" in result.stderr


def test_validate_reports_each_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: serving.lms.dev/v1alpha1\nkind: LargeModelServce\nmetadata: {name: x}\nspec: {}\n")
    result = lms("validate", str(EXAMPLES / "minilm-cpu.yaml"), str(bad))
    assert result.returncode == 2
    assert "minilm-cpu.yaml: valid" in result.stdout
    assert "kind: must be LargeModelService" in result.stderr and "spec.model: is required" in result.stderr


def test_a_file_without_a_large_model_service_is_refused(tmp_path: Path) -> None:
    pod = tmp_path / "pod.yaml"
    pod.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {}\n")
    empty = tmp_path / "empty.yaml"
    empty.write_text("---\n")
    for path, holds in ((pod, " (only Pod)"), (empty, "")):
        result = lms("validate", str(path))
        assert result.returncode == 2 and result.stdout == ""
        assert f"error: {path}: (file): holds no LargeModelService{holds}" in result.stderr


def multi_document(tmp_path: Path, second_uri: str) -> Path:
    """A GitOps file: a ConfigMap, the example and a second LargeModelService."""
    example = yaml.safe_load((EXAMPLES / "minilm-cpu.yaml").read_text())
    second = {**example, "metadata": {"name": "second", "namespace": "team-b"},
              "spec": {"model": {"uri": second_uri}}}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "b"}}
    path = tmp_path / "all.yaml"
    path.write_text(yaml.safe_dump_all([config_map, example, second]))
    return path


def test_validate_takes_several_documents_and_names_the_bad_one(tmp_path: Path) -> None:
    path = multi_document(tmp_path, "pvc://claim/../../etc")
    result = lms("validate", str(path))
    assert result.returncode == 2
    assert result.stdout == f"{path}: document 2 (minilm): valid (default/minilm)\n"
    assert result.stderr.splitlines() == [
        f"note: {path}: document 1 (settings): skipped: a ConfigMap, not a LargeModelService",
        f"error: {path}: document 3 (second): spec.model.uri: must not contain a '..' path segment (nor an encoded "
        "one such as %2e%2e): a path stays inside its bucket, claim or folder"]


def test_render_renders_each_service_of_a_file_or_nothing(tmp_path: Path) -> None:
    bad = lms("render", str(multi_document(tmp_path, "file:///tmp/../etc/passwd")))
    assert bad.returncode == 2 and bad.stdout == ""
    assert "document 3 (second): spec.model.uri: must not contain a '..' path segment" in bad.stderr
    good = lms("render", str(multi_document(tmp_path, "pvc://claim/models/second")))
    assert good.returncode == 0, good.stderr
    assert "skipped: a ConfigMap" in good.stderr
    objects = list(yaml.safe_load_all(good.stdout))
    assert {(o["kind"], o["metadata"]["namespace"]) for o in objects if o["kind"] == "Job"} == \
        {("Job", "default"), ("Job", "team-b")}
    job = next(o for o in objects if o["kind"] == "Job" and o["metadata"]["namespace"] == "team-b")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][-4:] == \
        ["--source-root", "/sources", "--model-dir", "/sources/models/second"]


def test_render_prints_the_config_pbtxt_of_each_model_it_would_serve(tmp_path: Path) -> None:
    from lms_operator.modelrepo.config import parse_config

    manifest = yaml.safe_load((EXAMPLES / "minilm-cpu.yaml").read_text())
    manifest["spec"]["serving"].update(instances=2, config={"response_cache": {"enable": True}})
    spec = tmp_path / "minilm.yaml"
    spec.write_text(yaml.safe_dump(manifest))
    done = lms("render", "--model-configs", str(spec))
    assert done.returncode == 0, done.stderr
    sections = done.stdout.split("# default/minilm: ")[1:]
    assert [s.split("\n", 1)[0] for s in sections] == [
        "minilm/config.pbtxt", "minilm-tokenizer/config.pbtxt", "minilm-text/config.pbtxt"]
    main = parse_config(sections[0].split("\n", 1)[1])
    assert main.instance_group[0].count == 2 and main.response_cache.enable and main.model_warmup
    manifest["spec"]["serving"]["template"] = "no-such-template"
    spec.write_text(yaml.safe_dump(manifest))
    refused = lms("render", "--model-configs", str(spec))
    assert refused.returncode == 2 and "no serving template named 'no-such-template'" in refused.stderr
