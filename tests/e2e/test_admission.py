"""Hostile LargeModelServices against the real API server's admission, as `kubectl` sends them.

The same table as tests/unit/test_hostile_specs.py (`lms validate`): each spec is created with a
server-side dry run and must be refused with its field path; where the refusal is one of the
CRD's CEL rules (a URI's form, '..', empty segments, control characters) the server's words are
the ones `lms validate` prints.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.hostile_specs import BASE, CASES, Hostile

from .conftest import Kubectl

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "largemodelservices.yaml"
NAMESPACE = "default"  # a dry run stores nothing, so no namespace of its own is needed


@pytest.fixture(scope="module")
def crd(kubectl: Kubectl) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kubectl("wait", "--for=condition=Established", "crd/largemodelservices.serving.lms.dev", "--timeout=60s")


def dry_run_create(kubectl: Kubectl, manifest: dict[str, Any]) -> Any:
    """`kubectl create --dry-run=server`: admission runs in full, nothing is stored."""
    return kubectl("create", "--dry-run=server", "-n", NAMESPACE, "-o", "name", "-f", "-",
                   input=json.dumps(manifest), check=False)


def test_an_ordinary_spec_is_admitted(crd: None, kubectl: Kubectl) -> None:
    """The control: the base every hostile case changes in one place passes admission."""
    for uri in ("hf://sentence-transformers/all-MiniLM-L6-v2", "pvc://claim/models/minilm", "file:///abs/model.pt",
                "s3://bucket/prefix/", "pvc://claim/v1..2/..hidden"):
        manifest = copy.deepcopy(BASE)
        manifest["spec"]["model"]["uri"] = uri
        manifest["spec"]["compression"] = {"data": {"evaluation": {"uri": "my data/eval.txt"}}}
        done = dry_run_create(kubectl, manifest)
        assert done.returncode == 0, f"{uri}: {done.stderr}"


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_admission_refuses_hostile_spec_naming_the_field(crd: None, kubectl: Kubectl, case: Hostile) -> None:
    done = dry_run_create(kubectl, case.manifest)
    assert done.returncode != 0, f"{case.id} was admitted: {done.stdout}"
    assert case.path in done.stderr, done.stderr[:2000]
    if case.words:
        assert case.words in done.stderr, done.stderr[:2000]
