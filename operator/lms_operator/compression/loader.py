"""Load a source model (Hugging Face folder, TorchScript file or ONNX file) safely.

Weights come from safetensors when present; pickled checkpoints are read only with
`torch.load(weights_only=True)`. ONNX external data must stay inside the model's folder.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lms_operator.compression.digest import check_external_location, is_within
from lms_operator.compression.errors import InputError

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
    "merges.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model", "added_tokens.json",
)
TEXT_TASKS = ("feature-extraction", "text-classification")


@dataclass
class SourceModel:
    """A loaded source: a torch module (HF or TorchScript) or an ONNX file."""

    task: str
    format: str
    path: Path
    module: Any = None
    onnx_path: Path | None = None
    tokenizer_dir: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def tokenizer_files(folder: Path) -> list[Path]:
    """Tokenizer files present in `folder` (regular files inside it only)."""
    return [folder / n for n in TOKENIZER_FILES if (folder / n).is_file() and is_within(folder, folder / n)]


def load_hf(path: Path, task: str) -> SourceModel:
    """Hugging Face folder: config.json plus model.safetensors (or a weights-only pickle)."""
    import torch
    import transformers

    if not path.is_dir() or not (path / "config.json").is_file():
        raise InputError(f"spec.model.uri: {path} is not a Hugging Face model folder (config.json missing)")
    if task not in TEXT_TASKS:
        raise InputError(f"spec.model.task: {task!r} is not supported for format huggingface (use {', '.join(TEXT_TASKS)})")
    auto = transformers.AutoModel if task == "feature-extraction" else transformers.AutoModelForSequenceClassification
    try:
        config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
        config._attn_implementation = "eager"
        if (path / "model.safetensors").is_file():
            model = auto.from_pretrained(str(path), config=config, use_safetensors=True, local_files_only=True)
        elif (path / "pytorch_model.bin").is_file():
            model = auto.from_config(config)
            state = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
            model.load_state_dict(state, strict=False)
        else:
            raise InputError(f"spec.model.uri: no model.safetensors or pytorch_model.bin in {path}")
    except InputError:
        raise
    except Exception as exc:  # corrupt weights, wrong config: a one-line cause
        raise InputError(f"spec.model.uri: cannot load Hugging Face model from {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    model.eval()
    tok = path if tokenizer_files(path) else None
    if task == "feature-extraction" and tok is None:
        raise InputError(f"spec.model.uri: no tokenizer files in {path}")
    return SourceModel(task=task, format="huggingface", path=path, module=model, tokenizer_dir=tok,
                       meta={"hidden_size": int(config.hidden_size), "num_layers": int(config.num_hidden_layers)})


def load_torchscript(path: Path, task: str) -> SourceModel:
    """TorchScript archive (a file, or a folder holding exactly one .pt/.ts)."""
    import torch

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".pt", ".ts", ".pth") and p.is_file())
        if len(files) != 1:
            raise InputError(f"spec.model.uri: expected one TorchScript file in {path}, found {len(files)}")
        path = files[0]
    if task not in ("tabular-classification", "image-classification"):
        raise InputError(f"spec.model.task: {task!r} is not supported for format torchscript (classifiers only)")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise InputError(f"spec.model.uri: cannot load TorchScript model {path}: {type(exc).__name__}") from None
    module.eval()
    linears = [t for n, t in module.state_dict().items() if n.endswith("weight") and t.dim() == 2]
    if not linears:
        raise InputError(f"spec.model.uri: {path} has no linear layers to infer its input size from")
    return SourceModel(task=task, format="torchscript", path=path, module=module,
                       meta={"in_features": int(linears[0].shape[1]), "classes": int(linears[-1].shape[0])})


def check_onnx_external_data(model_path: Path) -> None:
    """Reject external-data locations that leave the model's folder or are missing."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(model_path), load_external_data=False)
    folder = model_path.parent
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if not uses_external_data(tensor):
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        try:
            target = check_external_location(folder, location)
        except ValueError as exc:
            raise InputError(f"spec.model.uri: {model_path.name}: tensor {tensor.name!r}: {exc}") from None
        if not target.is_file():
            raise InputError(f"spec.model.uri: {model_path.name}: external data file {location!r} is missing")


def load_onnx(path: Path, task: str) -> SourceModel:
    """ONNX file (or a folder with model.onnx), with safe external data and contract I/O names."""
    import onnx

    folder = path if path.is_dir() else path.parent
    model_path = path / "model.onnx" if path.is_dir() else path
    if not model_path.is_file():
        raise InputError(f"spec.model.uri: no model.onnx in {path}")
    if model_path.is_symlink() and not is_within(folder, model_path):
        raise InputError(f"spec.model.uri: {model_path} is a symlink out of the model folder")
    try:
        check_onnx_external_data(model_path)
        onnx.checker.check_model(str(model_path))
        graph = onnx.load(str(model_path), load_external_data=False).graph
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"spec.model.uri: {model_path} is not a valid ONNX model: {type(exc).__name__}") from None
    inputs = {i.name for i in graph.input} - {t.name for t in graph.initializer}
    outputs = [o.name for o in graph.output]
    want_in, want_out = ({"input_ids", "attention_mask"}, "embedding") if task == "feature-extraction" else ({"input"}, "logits")
    if not want_in <= inputs or want_out not in outputs:
        raise InputError(f"spec.model.uri: ONNX model must take {sorted(want_in)} and return {want_out!r} for task {task}; has inputs {sorted(inputs)}, outputs {outputs}")
    tok = folder / "tokenizer" if (folder / "tokenizer").is_dir() else (folder if tokenizer_files(folder) else None)
    if task == "feature-extraction" and tok is None:
        raise InputError(f"spec.model.uri: no tokenizer files next to {model_path}")
    return SourceModel(task=task, format="onnx", path=folder, onnx_path=model_path, tokenizer_dir=tok)


def load_source(path: Path, fmt: str, task: str) -> SourceModel:
    """Dispatch on `spec.model.format`."""
    if fmt == "huggingface":
        return load_hf(path, task)
    if fmt == "torchscript":
        return load_torchscript(path, task)
    if fmt == "onnx":
        return load_onnx(path, task)
    raise InputError(f"spec.model.format: unsupported format {fmt!r} (huggingface, torchscript, onnx)")
