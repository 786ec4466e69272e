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

from .conftest import Cluster, K8s, Kubectl, wait_for
from .operator_fixtures import CLAIM, Operator, condition, operator, operator_crds, wait_phase  # noqa: F401

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
    assert condition(status, "QualityGatePassed")["status"] == "True"
    table = kubectl("get", "lms", name, "-n", namespace).stdout
    assert "Ready" in table and str(comp["ratio"]) in table and str(comp["score"]) in table, table

    pod = wait_for(lambda: next((p for p in k8s.core.list_namespaced_pod(
        namespace, label_selector=f"app.kubernetes.io/instance={name},app.kubernetes.io/component=server").items
        if (p.metadata.annotations or {}).get("sandbox.lms.dev/http")), None), 60, "the Triton pod's local ports")
    http = pod.metadata.annotations["sandbox.lms.dev/http"]

    assert cluster.state_dir is not None
    version = cluster.pvc_dir(namespace, CLAIM) / namespace / name / status["modelVersion"]
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(version / name / "1" / "tokenizer" / "tokenizer.json"))
    tokenizer.enable_padding(length=32)
    tokenizer.enable_truncation(max_length=32)
    encoded = tokenizer.encode_batch(SENTENCES)
    ids = np.array([e.ids for e in encoded], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)

    import onnxruntime as ort
    import tritonclient.http as triton

    client = triton.InferenceServerClient(http)
    inputs = []
    for input_name, array in (("input_ids", ids), ("attention_mask", mask)):
        tensor = triton.InferInput(input_name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    served = client.infer(name, inputs, outputs=[triton.InferRequestedOutput("embedding")]).as_numpy("embedding")

    session = ort.InferenceSession(str(version / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    local = session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0]
    cosine = (served * local).sum(axis=1) / (np.linalg.norm(served, axis=1) * np.linalg.norm(local, axis=1))
    assert served.shape == local.shape == (2, 384)
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
