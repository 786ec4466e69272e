"""Hostile LargeModelServices, each with one fault and the field path a refusal must name.

One table for both judges: `lms validate` (tests/unit/test_hostile_specs.py) and the real API
server's admission (tests/e2e/test_admission.py). A URI's form and safety checks are CEL rules,
so for those cases both judges give the same words (`words`); other faults are worded by each
judge its own way and only the field path is compared.

Percent-encoded traversal (`%2e%2e`, `..%2f`) and encoded control characters (`%00`, `%0a`) are
refused like the raw ones: the Job decodes s3:// keys and file: paths before it uses them.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

NAME = "hostile"
BASE: dict[str, Any] = {
    "apiVersion": "serving.lms.dev/v1alpha1",
    "kind": "LargeModelService",
    "metadata": {"name": NAME},
    "spec": {"model": {"uri": "hf://sentence-transformers/all-MiniLM-L6-v2"}},
}

TRAVERSAL = "must not contain a '..' path segment"
EMPTY = "must not contain an empty path segment"
CONTROL = "must not contain control characters"
MODEL_FORMS = "must be one of hf://org/name[@revision], s3://bucket/key, pvc://claim/path, file:///path (for example"
DATA_FORMS = "must be one of s3://bucket/key, file:///path, a path relative to the spec's folder, or sklearn:digits"
REPOSITORY_FORMS = "must be s3://bucket[/prefix]"
DISTILLATION = {"studentLayers": 3}


@dataclass(frozen=True)
class Hostile:
    id: str
    manifest: dict[str, Any]
    path: str
    words: str | None = None
    """What both judges say (a CEL rule's message); None where each words it its own way."""


def model(uri: str) -> dict[str, Any]:
    return spec(model={"uri": uri})


def spec(**sections: Any) -> dict[str, Any]:
    manifest = copy.deepcopy(BASE)
    manifest["spec"].update(sections)
    return manifest


def repository(uri: str) -> dict[str, Any]:
    return spec(repository={"uri": uri})


def data(role: str, uri: str) -> dict[str, Any]:
    return spec(compression={"data": {role: {"uri": uri}}})


def distillation(**fields: str) -> dict[str, Any]:
    return spec(compression={"distillation": {**DISTILLATION, **fields}})


def named(name: str) -> dict[str, Any]:
    manifest = copy.deepcopy(BASE)
    manifest["metadata"]["name"] = name
    return manifest


M, R = "spec.model.uri", "spec.repository.uri"
EVAL, CALIB, DIST = (f"spec.compression.data.{role}.uri" for role in ("evaluation", "calibration", "distillation"))
STUDENT, DATASET = "spec.compression.distillation.studentUri", "spec.compression.distillation.dataset"

CASES: list[Hostile] = [
    # traversal, raw and encoded, in each URI field
    Hostile("pvc-climbs-out-of-its-claim", model("pvc://claim/../../etc"), M, TRAVERSAL),
    Hostile("file-climbs-to-etc-passwd", model("file:///tmp/../etc/passwd"), M, TRAVERSAL),
    Hostile("relative-file-climbs-out", model("file:../outside/model.pt"), M, TRAVERSAL),
    Hostile("file-is-only-dot-dot", model("file:.."), M, TRAVERSAL),
    Hostile("pvc-ends-in-dot-dot", model("pvc://claim/models/.."), M, TRAVERSAL),
    Hostile("s3-key-climbs", model("s3://bucket/models/../../other"), M, TRAVERSAL),
    Hostile("hf-revision-climbs", model("hf://org/model@main/../../x"), M, TRAVERSAL),
    Hostile("pvc-encoded-dot-dot", model("pvc://claim/%2e%2e/%2e%2e/etc"), M, TRAVERSAL),
    Hostile("pvc-encoded-upper-case", model("pvc://claim/%2E%2E%2Fetc"), M, TRAVERSAL),
    Hostile("pvc-dot-dot-encoded-slash", model("pvc://claim/..%2fetc"), M, TRAVERSAL),
    Hostile("repository-climbs", repository("s3://bucket/repo/../other"), R, TRAVERSAL),
    Hostile("evaluation-climbs", data("evaluation", "../../etc/shadow"), EVAL, TRAVERSAL),
    Hostile("calibration-file-climbs", data("calibration", "file:///data/../etc/passwd"), CALIB, TRAVERSAL),
    Hostile("distillation-encoded-climb", data("distillation", "data/%2e%2e/%2e%2e/etc/passwd"), DIST, TRAVERSAL),
    Hostile("student-climbs-out-of-claim", distillation(studentUri="pvc://claim/../teacher"), STUDENT, TRAVERSAL),
    Hostile("dataset-climbs", distillation(dataset="../train.txt"), DATASET, TRAVERSAL),
    # empty segments
    Hostile("pvc-empty-segment", model("pvc://claim//model"), M, EMPTY),
    Hostile("s3-empty-segment", model("s3://bucket//key"), M, EMPTY),
    Hostile("file-four-slashes", model("file:////etc/passwd"), M, EMPTY),
    Hostile("repository-empty-segment", repository("s3://bucket//repo"), R, EMPTY),
    Hostile("distillation-empty-segment", data("distillation", "s3://bucket/a//b.txt"), DIST, EMPTY),
    Hostile("student-empty-segment", distillation(studentUri="s3://bucket/student//x"), STUDENT, EMPTY),
    # control characters, raw and encoded
    Hostile("nul-in-pvc-path", model("pvc://claim/model\x00.pt"), M, CONTROL),
    Hostile("newline-in-pvc-path", model("pvc://claim/model\nevil"), M, CONTROL),
    Hostile("tab-in-pvc-path", model("pvc://claim/mo\tdel"), M, CONTROL),
    Hostile("del-in-pvc-path", model("pvc://claim/model\x7f"), M, CONTROL),
    Hostile("c1-next-line-in-path", model("pvc://claim/model\u0085x"), M, CONTROL),
    Hostile("encoded-nul-in-s3-key", model("s3://bucket/key%00.onnx"), M, CONTROL),
    Hostile("encoded-newline-in-pvc-path", model("pvc://claim/a%0aevil"), M, CONTROL),
    Hostile("repository-newline", repository("s3://bucket/repo\n"), R, CONTROL),
    Hostile("evaluation-nul", data("evaluation", "data/eval\x00.txt"), EVAL, CONTROL),
    Hostile("calibration-terminal-escape", data("calibration", "data/\x1b[31mred.txt"), CALIB, CONTROL),
    Hostile("dataset-newline", distillation(dataset="train\n.txt"), DATASET, CONTROL),
    # forms: schemes and shapes that are not allowed
    Hostile("http-scheme", model("http://x/y"), M, MODEL_FORMS),
    Hostile("ftp-scheme", model("ftp://host/model.onnx"), M, MODEL_FORMS),
    Hostile("javascript-scheme", model("javascript:alert(1)"), M, MODEL_FORMS),
    Hostile("no-scheme", model("/etc/passwd"), M, MODEL_FORMS),
    Hostile("empty-uri", model(""), M, MODEL_FORMS),
    Hostile("leading-space", model(" hf://org/model"), M, MODEL_FORMS),
    Hostile("hf-without-name", model("hf://org"), M, MODEL_FORMS),
    Hostile("claim-not-dns-1123", model("pvc://Claim_1/model"), M, MODEL_FORMS),
    Hostile("bucket-upper-case", model("s3://B/key"), M, MODEL_FORMS),
    Hostile("repository-on-a-claim-uri", repository("pvc://lms-models"), R, REPOSITORY_FORMS),
    Hostile("repository-space-in-prefix", repository("s3://bucket/re po"), R, REPOSITORY_FORMS),
    Hostile("evaluation-http", data("evaluation", "http://example.com/eval.txt"), EVAL, DATA_FORMS),
    Hostile("student-hf-name-dot-dot", distillation(studentUri="hf://org/.."), STUDENT, MODEL_FORMS),
    # absurd lengths
    Hostile("model-uri-3000-characters", model("hf://org/" + "a" * 3000), M),
    Hostile("repository-uri-2000-characters", repository("s3://bucket/" + "r" * 2000), R),
    Hostile("evaluation-uri-a-megabyte", data("evaluation", "e" * (1 << 20)), EVAL),
    # the rest of the resource
    Hostile("digest-not-hex", spec(model={"uri": "hf://org/model", "sha256": "../../etc"}), "spec.model.sha256"),
    Hostile("secret-name-traversal", spec(model={"uri": "hf://org/model", "secretRef": {"name": "../admin"}}),
            "spec.model.secretRef.name"),
    Hostile("claim-name-traversal", spec(repository={"pvc": "../models"}), "spec.repository.pvc"),
    Hostile("cpu-quantity-words", spec(serving={"resources": {"cpu": "two"}}), "spec.serving.resources.cpu"),
    Hostile("name-of-70-characters", named("a" * 70), "metadata.name"),
    Hostile("name-upper-case", named("MiniLM"), "metadata.name"),
    Hostile("unknown-field", spec(model={"uri": "hf://org/model", "url": "http://x"}), "spec.model.url"),
]
