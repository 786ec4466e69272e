"""What the gate, the calibration and the benchmark feed to a model: the workload of one run.

Text tasks tokenise the evaluation, calibration and timing text with the source's tokenizer;
tabular tasks take rows of the dataset. Evaluation data is held apart from what is trained on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lms_operator.api.spec import LargeModelService
from lms_operator.compression import data as datasets
from lms_operator.compression import evaluate as ev
from lms_operator.compression.errors import InputError
from lms_operator.compression.loader import SourceModel
from lms_operator.modelrepo.templates import Template

TIMING_BATCH = 32
TEXT_METRICS = {"feature-extraction": ("cosine", "similarity"), "text-classification": ("agreement", "accuracy")}
CLASSIFIER_METRICS = ("accuracy", "agreement")


@dataclass
class Workload:
    """Everything the gate and the benchmark feed to a model."""

    eval_feeds: list[ev.Feed]
    labels: np.ndarray | None
    calib_feeds: list[ev.Feed]
    timing_feed: ev.Feed
    example: dict[str, Any]
    train_text: list[str] = field(default_factory=list)
    tabular: datasets.TabularData | None = None
    tokenizer: Any = None
    source: str = ""
    data_info: dict[str, Any] = field(default_factory=dict)
    eval_sha256: str | None = None
    checkpoints: Path | None = None
    train_device: str = "cpu"
    templates: dict[str, Template] = field(default_factory=dict)
    """The serving templates the published configs are built from (name -> template)."""


def check_metric(task: str, metric: str) -> None:
    allowed = TEXT_METRICS.get(task, CLASSIFIER_METRICS)
    if metric not in allowed:
        raise InputError(f"spec.compression.qualityGate.metric: {metric!r} does not apply to task {task} (use {', '.join(allowed)})")


def text_workload(src: SourceModel, lms: LargeModelService, base_dir: Path) -> Workload:
    """Tokenized held-out, calibration and timing feeds from the text corpus."""
    import torch
    import transformers

    comp = lms.spec.compression
    seq = lms.spec.serving.sequence_length
    text = datasets.text_data(comp.data, base_dir, comp.quality_gate.samples)
    tok = transformers.AutoTokenizer.from_pretrained(str(src.tokenizer_dir), local_files_only=True)

    def feeds(sentences: list[str], batch: int, pad: Any = True) -> list[ev.Feed]:
        out = []
        for i in range(0, len(sentences), batch):
            enc = tok(sentences[i:i + batch], padding=pad, truncation=True, max_length=seq, return_tensors="np")
            out.append({"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)})
        return out

    held = text.heldout
    labels = text_labels(src, text.heldout_labels) if comp.quality_gate.metric == "accuracy" else None
    timing_sents = (text.train * (TIMING_BATCH // max(1, len(text.train)) + 1))[:TIMING_BATCH]
    timing = feeds(timing_sents, TIMING_BATCH, "max_length")[0]
    ex = feeds(text.train[:2], 2)[0]
    calibration = text.calibration[: comp.quantization.calibration_samples]
    text.info["calibration"]["used"] = len(calibration)  # quantization.calibrationSamples of them calibrate
    return Workload(eval_feeds=feeds(held, 32), labels=labels,
                    calib_feeds=feeds(calibration, 8),
                    timing_feed=timing, example={k: torch.from_numpy(v) for k, v in ex.items()},
                    train_text=text.train, tokenizer=tok, source=text.source, data_info=text.info,
                    eval_sha256=text.info["evaluation"].get("sha256"))


def text_labels(src: SourceModel, raw: list[Any] | None) -> np.ndarray:
    """Evaluation labels as class indices: integers, or names from the model's label2id."""
    where = "spec.compression.data.evaluation.labelField"
    if raw is None:
        raise InputError("spec.compression.qualityGate.metric: accuracy needs labelled evaluation data "
                         "(data.evaluation with format jsonl and labelField); use agreement otherwise")
    names = {str(k): int(v) for k, v in (getattr(getattr(src.module, "config", None), "label2id", None) or {}).items()}
    out = []
    for i, label in enumerate(raw, start=1):
        if isinstance(label, int) and not isinstance(label, bool):
            out.append(label)
        elif isinstance(label, str) and label in names:
            out.append(names[label])
        else:
            raise datasets.DataError(f"{where}: sample {i}: label {label!r} is neither a class index nor one of "
                                     f"{', '.join(sorted(names)) or 'the model labels'}")
    return np.asarray(out, dtype=np.int64)


def tabular_workload(src: SourceModel, lms: LargeModelService, base_dir: Path) -> Workload:
    """Held-out rows with labels, calibration and timing batches."""
    import torch

    comp = lms.spec.compression
    dist = comp.distillation
    tab = datasets.tabular_data(comp.data.distillation.uri if comp.data.distillation else None, src.path, base_dir)
    n_in = src.meta.get("in_features")
    if n_in is not None and tab.x_test.shape[1] != n_in:
        raise InputError(f"spec.compression.distillation.dataset: {tab.source} has {tab.x_test.shape[1]} features, the model takes {n_in}")
    n = comp.quality_gate.samples
    x, y = tab.x_test[:n], tab.y_test[:n]
    cal = tab.x_train[: comp.quantization.calibration_samples]
    reps = TIMING_BATCH // len(tab.x_test) + 1
    timing = np.concatenate([tab.x_test] * reps)[:TIMING_BATCH]
    return Workload(eval_feeds=[{"input": x[i:i + 64]} for i in range(0, len(x), 64)], labels=y,
                    calib_feeds=[{"input": cal[i:i + 16]} for i in range(0, len(cal), 16)],
                    timing_feed={"input": timing}, example={"input": torch.from_numpy(tab.x_train[:2])},
                    tabular=tab, source=tab.source)
