"""Export torch models to ONNX with the serving contract's inputs and outputs.

Feature extraction: (input_ids, attention_mask) int64 -> `embedding`, mean-pooled over the
mask and L2-normalised inside the graph. Classifiers: `input` fp32 -> `logits`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

OPSET = 17
PROTOBUF_LIMIT = 2 * 1024**3 - 1024**2


def mean_pool_normalise(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of token vectors where mask is 1, then L2 normalisation (sentence-transformers style)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * m).sum(dim=1)
    counts = m.sum(dim=1).clamp(min=1e-9)
    return nn.functional.normalize(summed / counts, p=2.0, dim=1, eps=1e-12)


class EmbeddingHead(nn.Module):
    """Transformer encoder + pooling, the graph Triton serves for feature extraction."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=torch.zeros_like(input_ids))
        return mean_pool_normalise(out.last_hidden_state, attention_mask)


class LogitsHead(nn.Module):
    """Classifier wrapper returning plain logits (HF outputs carry them in `.logits`)."""

    def __init__(self, model: nn.Module, text: bool) -> None:
        super().__init__()
        self.model = model
        self.text = text

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        if self.text:
            input_ids, attention_mask = args
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        out = self.model(args[0])
        return out.logits if hasattr(out, "logits") else out


def parameter_bytes(module: nn.Module) -> int:
    """Bytes held by parameters and buffers (decides whether external data is needed)."""
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def export_module(module: nn.Module, task: str, out_path: Path, example: dict[str, Any]) -> Path:
    """Export `module` for `task` to `out_path` (opset 17, dynamic batch and sequence axes)."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    module.eval()
    if task == "feature-extraction":
        wrapper: nn.Module = EmbeddingHead(module)
        args = (example["input_ids"], example["attention_mask"])
        names_in, name_out = ["input_ids", "attention_mask"], "embedding"
        axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}, "embedding": {0: "batch"}}
    elif task == "text-classification":
        wrapper = LogitsHead(module, text=True)
        args = (example["input_ids"], example["attention_mask"])
        names_in, name_out = ["input_ids", "attention_mask"], "logits"
        axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}}
    else:
        # a TorchScript module cannot sit inside a traced wrapper; its output is already the logits
        wrapper = module if isinstance(module, torch.jit.ScriptModule) else LogitsHead(module, text=False)
        args = (example["input"],)
        names_in, name_out = ["input"], "logits"
        axes = {"input": {0: "batch"}, "logits": {0: "batch"}}
    large = parameter_bytes(module) > PROTOBUF_LIMIT
    # torch.onnx.export puts the wrapper back in the mode it found it in; a new nn.Module starts in
    # training mode, which would leave `module` with dropout on for whatever runs on it next
    wrapper.eval()
    with torch.no_grad():
        torch.onnx.export(wrapper, args, str(out_path), dynamo=False, opset_version=OPSET,
                          input_names=names_in, output_names=[name_out], dynamic_axes=axes,
                          do_constant_folding=True)
    if large:
        save_onnx(onnx.load(str(out_path)), out_path)
    return out_path


def save_onnx(model: onnx.ModelProto, out_path: Path) -> Path:
    """Save a model; above the 2 GB protobuf limit its tensors go to `model.onnx.data` next to it."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if model.ByteSize() > PROTOBUF_LIMIT or any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        data = out_path.name + ".data"
        onnx.save_model(model, str(out_path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data, size_threshold=1024)
    else:
        onnx.save_model(model, str(out_path))
    return out_path


def onnx_bytes(path: Path) -> int:
    """Size of an ONNX model including its external data files."""
    total = path.stat().st_size
    data = path.with_name(path.name + ".data")
    if data.is_file():
        total += data.stat().st_size
    return total
