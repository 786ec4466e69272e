"""The committed CRD is exactly what the schema generates, and carries what users rely on."""
from __future__ import annotations

import yaml

from lms_operator.api.crd import build_crd, render_crd
from tests.unit.conftest import ROOT

CRD_FILE = ROOT / "crds" / "largemodelservices.yaml"


def test_committed_crd_matches_schema() -> None:
    assert CRD_FILE.read_text() == render_crd(), "run: .venv/bin/lms crd > crds/largemodelservices.yaml"


def _walk(schema: dict, path: str = ""):
    yield path, schema
    for key, sub in schema.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


def test_crd_shape() -> None:
    crd = yaml.safe_load(CRD_FILE.read_text())
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "largemodelservices.serving.lms.dev"
    assert spec["names"]["shortNames"] == ["lms"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"name": "Reason", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
            "priority": 1} in version["additionalPrinterColumns"]  # ScaledToZero explains Ready with 0 replicas
    assert {"Phase", "Device", "Ready", "Ratio", "Score", "Endpoint", "Age"} <= columns


def test_every_string_and_list_is_bounded() -> None:
    root = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(root):
        if path in (".apiVersion", ".kind"):
            continue
        if node.get("type") == "string":
            assert "maxLength" in node or "enum" in node, path
        if node.get("type") == "array":
            assert "maxItems" in node, path


def test_cel_rules_cover_cross_field_constraints() -> None:
    text = CRD_FILE.read_text()
    for expression in ("self.device != 'gpu' || self.resources.gpu >= 1",
                       "self.compression.quantization.mode != 'fp16' || self.serving.device == 'gpu'",
                       "self.minReplicas <= self.maxReplicas",
                       "has(self.pvc) != has(self.uri)"):
        assert expression in text


def test_uri_fields_are_checked_by_cel_rules_with_words() -> None:
    """The API server words a CEL rule's refusal with its message, a pattern's with the raw expression."""
    root = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    uris = [(path, node) for path, node in _walk(root) if path.startswith(".spec") and
            (path.endswith((".uri", "Uri")) or path.endswith(".dataset"))]
    assert {path for path, _ in uris} >= {".spec.model.uri", ".spec.repository.uri", ".spec.compression.data.evaluation.uri",
                                          ".spec.compression.data.calibration.uri",
                                          ".spec.compression.data.distillation.uri",
                                          ".spec.compression.distillation.studentUri",
                                          ".spec.compression.distillation.dataset"}
    for path, node in uris:
        assert "pattern" not in node, path
        messages = " ".join(rule["message"] for rule in node["x-kubernetes-validations"])
        assert "for example" in messages and "'..'" in messages and "control characters" in messages, path
        assert "empty path segment" in messages, path
    model_rule = root["properties"]["spec"]["properties"]["model"]["properties"]["uri"]["x-kubernetes-validations"][0]
    for scheme in ("^file:", "^hf://", "^pvc://", "^s3://"):
        assert scheme in model_rule["rule"]
