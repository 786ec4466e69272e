"""The MiniLM CPU example from `kubectl apply` to an answer from Triton, through the operator.

The compression Job and the Triton pod run for real (pod runner); the
embedding Triton returns must match in-process ONNX Runtime on the published
model (cosine >= 0.999), and `lms infer --text` must get the same embedding from the
text model the version publishes (the server tokenises).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from .conftest import Cluster, K8s, Kubectl
from .operator_fixtures import (CLAIM, Operator, condition, operator, operator_crds,  # noqa: F401
                                served_vs_local_cosine, server_http, wait_phase)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "minilm-cpu.yaml"
SENTENCES = ["Kubernetes operators reconcile desired state.", "A cat sat on the mat."]


def test_minilm_cpu_example_serves_embeddings_matching_onnxruntime(
        cluster: Cluster, k8s: K8s, kubectl: Kubectl, namespace: str, operator: Operator) -> None:
    name = yaml.safe_load(EXAMPLE.read_text())["metadata"]["name"]
    kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))
    status = wait_phase(k8s, namespace, name, {"Ready", "Failed"}, 900, operator)
    assert status["phase"] == "Ready", status.get("message")
    comp = status["compression"]
    assert comp["passed"] is True and comp["score"] >= 0.99 and comp["ratio"] > 2
    # the search's summary survives the CRD's structural schema (an unknown field would be pruned)
    assert comp["objective"] == "latency" and f"*{comp['variant']} " in comp["variants"], comp
    assert comp["speedupMedian"] > 0, comp
    assert condition(status, "QualityGatePassed")["status"] == "True"
    table = kubectl("get", "lms", name, "-n", namespace).stdout
    assert "Ready" in table and str(comp["ratio"]) in table and str(comp["score"]) in table, table

    http = server_http(k8s, namespace, name)
    assert cluster.state_dir is not None
    version = cluster.pvc_dir(namespace, CLAIM) / namespace / name / status["modelVersion"]
    cosine, local = served_vs_local_cosine(http, name, version / name / "1" / "model.onnx",
                                    version / name / "1" / "tokenizer" / "tokenizer.json", SENTENCES)
    assert float(cosine.min()) >= 0.999, cosine

    # text in: the deployed Triton tokenises with the tokenizer published in the version folder
    done = subprocess.run([sys.executable, "-m", "lms_operator.cli", "infer", http, "--model", name,
                           "--text", SENTENCES[0], "--text", SENTENCES[1], "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    from_text = np.asarray(answer["embedding"], dtype=np.float32)
    assert from_text.shape == (2, 384) and answer["truncated"] == [[False], [False]]
    # int8 activations are scaled per batch tensor: a shorter padding moves the embedding slightly
    cosine = (from_text * local).sum(axis=1) / (np.linalg.norm(from_text, axis=1) * np.linalg.norm(local, axis=1))
    assert float(cosine.min()) >= 0.99, cosine
