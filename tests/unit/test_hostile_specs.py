"""Hostile specs against `lms validate`: every one refused, naming its document and field path.

All cases go into one file of many documents, as a GitOps repository holds them, with a
ConfigMap (skipped with a note) and a valid LargeModelService (valid) among them. The same
table runs against the real API server in tests/e2e/test_admission.py.
"""
from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lms_operator.api import forms, schema
from lms_operator.api.spec import SpecError, parse_spec
from tests.hostile_specs import BASE, CASES, NAME, Hostile
from tests.unit.conftest import ROOT

CONFIG_MAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "b"}}


def documents() -> list[dict[str, Any]]:
    """The cases named after themselves (unless the name is the fault), a ConfigMap, then a valid one."""
    docs = []
    for case in CASES:
        manifest = copy.deepcopy(case.manifest)
        if manifest["metadata"]["name"] == NAME:
            manifest["metadata"]["name"] = case.id
        docs.append(manifest)
    good = copy.deepcopy(BASE)
    good["metadata"]["name"] = "fine"
    return [*docs, CONFIG_MAP, good]


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    path = tmp_path_factory.mktemp("hostile") / "all.yaml"
    path.write_text(yaml.safe_dump_all(documents(), allow_unicode=False))
    done = subprocess.run([sys.executable, "-m", "lms_operator.cli", "validate", str(path)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    return path, done


def test_at_least_forty_cases_with_distinct_ids() -> None:
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)
    assert all(len(case.id) <= schema.NAME_MAX_LENGTH for case in CASES)


def test_the_file_fails_and_the_rest_is_reported(validated: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    path, done = validated
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    count = len(CASES) + 2
    assert done.stdout == f"{path}: document {count} (fine): valid (default/fine)\n"
    assert f"note: {path}: document {count - 1} (settings): skipped: a ConfigMap, not a LargeModelService" \
        in done.stderr


def test_no_message_shows_a_regular_expression(validated: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    _, done = validated
    for line in done.stderr.splitlines():
        assert not re.search(r"\^|\\S|\[a-z|\(\?|\$\)|\{1,", line), line


@pytest.mark.parametrize("index_case", list(enumerate(CASES, start=1)), ids=[case.id for case in CASES])
def test_hostile_spec_is_refused_naming_document_and_field(
        validated: tuple[Path, subprocess.CompletedProcess[str]], index_case: tuple[int, Hostile]) -> None:
    path, done = validated
    index, case = index_case
    name = case.manifest["metadata"]["name"] if case.manifest["metadata"]["name"] != NAME else case.id
    label = f"error: {path}: document {index} ({name}): "
    lines = [line[len(label):] for line in done.stderr.splitlines() if line.startswith(label)]
    assert lines, f"document {index} ({case.id}) was not refused; stderr:\n{done.stderr[:2000]}"
    at_path = [line for line in lines if line.startswith(f"{case.path}: ")]
    assert at_path, lines
    if case.words:
        assert any(case.words in line for line in at_path), at_path


@pytest.mark.parametrize("uri", [
    "hf://sentence-transformers/all-MiniLM-L6-v2", "hf://org/model@refs/pr/1", "hf://org/model@v1.0",
    "s3://bucket/prefix/", "s3://my.bucket/models/model.onnx", "s3://bucket/a%20b/model.onnx",
    "pvc://claim", "pvc://claim/models/minilm", "pvc://claim/models/...", "pvc://claim/v1..2/..hidden",
    "file:///abs/path/model.pt", "file:relative/model.pt", "file:/abs/model.pt", "file:./model.pt",
])
def test_ordinary_model_uris_stay_valid(uri: str) -> None:
    manifest = copy.deepcopy(BASE)
    manifest["spec"]["model"]["uri"] = uri
    assert parse_spec(manifest).spec.model.uri == uri


@pytest.mark.parametrize("uri", ["data/train.txt", "my data/train file.txt", "sklearn:digits",
                                 "file:///data/eval.jsonl", "s3://bucket/data/eval.txt", "eval.txt"])
def test_ordinary_data_uris_stay_valid(uri: str) -> None:
    manifest = copy.deepcopy(BASE)
    manifest["spec"]["compression"] = {"data": {"evaluation": {"uri": uri}}}
    assert parse_spec(manifest).spec.compression.data.evaluation.uri == uri


def _patterns(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        return found + [p for value in node.values() for p in _patterns(value)]
    if isinstance(node, list):
        return [p for value in node for p in _patterns(value)]
    return []


def test_every_pattern_of_the_schema_has_words_with_an_example() -> None:
    patterns = set(_patterns(schema.SPEC))
    assert patterns, "the schema has patterns"
    for pattern in patterns:
        assert pattern in forms.PATTERN_WORDS, pattern
        assert "for example" in forms.PATTERN_WORDS[pattern], pattern


def test_a_pattern_refusal_is_worded_and_quotes_the_value_escaped() -> None:
    manifest = copy.deepcopy(BASE)
    manifest["spec"]["serving"] = {"resources": {"memory": "4 gigs\n"}}
    with pytest.raises(SpecError) as caught:
        parse_spec(manifest)
    assert str(caught.value) == ("spec.serving.resources.memory: must be a Kubernetes quantity: a number with an "
                                 "optional suffix m, k, Ki, M, Mi, G, Gi, T or Ti (for example 500m, 2 or 4Gi), "
                                 "got '4 gigs\\n'")
