"""What the MiniLM compression benchmarks share: the teacher, its tokenizer, the corpus split and
fp32 torch embeddings, so distill.py, prune.py and compress.py score on the same held-out text."""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MODEL_URI = "hf://sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class Setup:
    """The teacher and the text every MiniLM bench trains and scores on."""

    src: Any
    tokenizer: Any
    corpus: Any
    train: list[str]
    evaluation: list[str]
    """Held-out lines (one in five by content hash) scored by the bench; never trained on."""
    monitor: list[str]
    """Further held-out lines for the training progress cosine."""

    def data_info(self) -> dict[str, Any]:
        from lms_operator.compression import data

        return {"corpus": self.corpus.source, "sha256": self.corpus.sha256, "train": len(self.train),
                "evaluation": len(self.evaluation), "monitor": len(self.monitor), "split": data.SPLIT_RULE}


def minilm_setup(threads: int, n_eval: int = 512, n_monitor: int = 128) -> Setup:
    """The MiniLM teacher, tokenizer and the built-in corpus split into train / evaluation / monitor."""
    import torch
    import transformers

    from lms_operator.compression import data
    from lms_operator.compression.loader import load_source
    from lms_operator.compression.source import locate_model

    torch.set_num_threads(threads)
    src = load_source(locate_model(MODEL_URI, None, None, None), "huggingface", "feature-extraction")
    tok = transformers.AutoTokenizer.from_pretrained(str(src.tokenizer_dir), local_files_only=True)
    corpus = data.default_corpus()
    train = [t for t in corpus.texts if not data.is_heldout(t)]
    held = [t for t in corpus.texts if data.is_heldout(t)]
    return Setup(src, tok, corpus, train, held[:n_eval], held[n_eval:n_eval + n_monitor])


def train_batch(setup: Setup, n: int) -> dict[str, Any]:
    """The first `n` training sentences as one batch, as the pipeline's probe_batch makes it: the
    student's layers are chosen and pruned units ranked on it."""
    enc = setup.tokenizer(setup.train[:n], padding=True, truncation=True, max_length=64, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def embed_all(model: Any, tok: Any, texts: list[str], max_length: int = 128) -> Any:
    """fp32 torch sentence embeddings (mean-pooled, normalised as the exported model)."""
    import numpy as np
    import torch

    from lms_operator.compression.distill import _embed

    out = []
    with torch.no_grad():
        for i in range(0, len(texts), 64):
            enc = tok(texts[i:i + 64], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            out.append(_embed(model, {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}).numpy())
    return np.concatenate(out)


def torch_scores(ref: Any, out: Any) -> dict[str, float]:
    """Cosine to the teacher and similarity (Spearman of pairwise cosines), 4 decimals."""
    from lms_operator.compression import evaluate as ev

    return {"cosine": round(ev.mean_cosine(ref, out), 4), "similarity": round(ev.similarity(ref, out), 4)}


CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
"""The instruction sets int8 speed and correctness depend on (without VNNI, u8 x s8 products saturate)."""


def cpu_model_and_flags() -> dict[str, Any]:
    """The CPU's model name and which of CPU_FLAGS it has (Linux /proc/cpuinfo)."""
    model, flags = platform.processor(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return {"cpu_model": model, "cpu_flags": [flag for flag in CPU_FLAGS if flag in flags]}


def machine(threads: int | str) -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "threads": threads, "platform": platform.platform(),
            "processor": platform.processor(), **cpu_model_and_flags(), "load_before": os.getloadavg()}
