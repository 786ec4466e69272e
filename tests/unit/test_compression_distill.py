"""Embedding distillation on a tiny BERT: progress lines, layer choice, and resuming after a kill.

The kill is a real SIGKILL of a child process between two checkpoints; the rerun must start
from the last saved step (not from zero, not from the killed step) and end with exactly the
weights of an uninterrupted run.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

from lms_operator.compression import distill

WORDS = ("the cat dog sat ran on a mat big small red blue tree house river stone walked slept under over near far "
         "quickly slowly green old new").split()
STEPS, EVERY, KILL_AT = 12, 3, 8


def tokenizer(folder: Path) -> transformers.BertTokenizer:
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return transformers.BertTokenizer(str(folder / "vocab.txt"))


def teacher() -> transformers.BertModel:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=64)
    cfg._attn_implementation = "eager"
    return transformers.BertModel(cfg).eval()


def sentences(n: int = 96) -> list[str]:
    return [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(3 + i % 6)) for i in range(n)]


def train(folder: Path, ckpt: Path | None, log: list[str], stop_after: int | None = None,
          fingerprint: str = "tiny") -> tuple[torch.nn.Module, dict]:
    torch.set_num_threads(1)
    t = teacher()
    student, kept = distill.layer_dropped_student(t, 2)
    cfg = distill.EmbedTraining(steps=STEPS, batch_size=8, checkpoint_dir=ckpt, checkpoint_every=EVERY, log_every=2,
                                fingerprint=fingerprint, stop_after=stop_after, lr=1e-3)
    record = distill.train_embedding(student, t, tokenizer(folder), sentences(), cfg, monitor=sentences(8),
                                     layer_map=kept, log=log.append)
    return student, record


CHILD = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.unit import test_compression_distill as t
def log(msg):
    print(msg, flush=True)
    if msg.startswith("distil: step {kill}/"):
        os.kill(os.getpid(), signal.SIGKILL)
t.train(Path({folder!r}), Path({ckpt!r}), type("L", (), {{"append": staticmethod(log)}})())
"""


def test_killed_training_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    code = CHILD.format(root=str(Path(__file__).resolve().parents[2]), folder=str(tmp_path), ckpt=str(ckpt), kill=KILL_AT)
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert child.returncode == -9, child.stderr[-2000:]
    assert f"distil: step {KILL_AT}/{STEPS}" in child.stdout
    saved = torch.load(ckpt / distill.CHECKPOINT_FILE, weights_only=False)
    last_saved = (KILL_AT // EVERY) * EVERY
    assert saved["step"] == last_saved

    log: list[str] = []
    resumed, record = train(tmp_path, ckpt, log)
    assert record["resumed_from"] == last_saved and record["completed"]
    assert f"distil: resuming from checkpoint at step {last_saved}/{STEPS}" in log
    assert not any(line.startswith(f"distil: step {last_saved}/") for line in log)

    fresh, fresh_record = train(tmp_path, None, [])
    assert fresh_record["resumed_from"] == 0
    for (name, a), (_, b) in zip(resumed.state_dict().items(), fresh.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_progress_lines_and_a_checkpoint_for_something_else_is_ignored(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    log: list[str] = []
    _, first = train(tmp_path, ckpt, log, stop_after=5)
    assert not first["completed"] and [p["step"] for p in first["curve"]] == [2, 4]
    assert all(0.0 < p["cosine"] <= 1.0 and p["loss"] > 0 for p in first["curve"])
    assert log[0].startswith("distil: step 2/12 loss ") and " cosine " in log[0]
    other: list[str] = []
    _, again = train(tmp_path, ckpt, other, fingerprint="another model")
    assert again["resumed_from"] == 0 and again["completed"] and not any("resuming" in m for m in other)


def test_training_lowers_the_loss_and_keeps_the_student_small(tmp_path: Path) -> None:
    t = teacher()
    keep, probe = distill.choose_layers(t, 2, {k: v for k, v in tokenizer(tmp_path)(sentences(16), padding=True,
                                                                                    return_tensors="pt").items()
                                               if k in ("input_ids", "attention_mask")})
    assert len(keep) == 2 and keep == sorted(keep) and 0.0 < probe <= 1.0
    assert len(t.encoder.layer) == 4  # the teacher is left whole
    student, kept = distill.layer_dropped_student(t, 2, keep)
    assert kept == keep and len(student.encoder.layer) == 2
    cfg = distill.EmbedTraining(steps=30, batch_size=16, log_every=10, lr=2e-3)
    record = distill.train_embedding(student, t, tokenizer(tmp_path), sentences(), cfg, monitor=sentences(16),
                                     layer_map=kept, log=lambda _: None)
    curve = record["curve"]
    assert curve[-1]["loss"] < curve[0]["loss"] and curve[-1]["cosine"] > curve[0]["cosine"] - 1e-3


def test_hidden_loss_ignores_padding() -> None:
    a = [torch.zeros(1, 3, 4), torch.ones(1, 3, 4)]
    b = [torch.zeros(1, 3, 4), torch.ones(1, 3, 4)]
    b[1][0, 2] = 100.0  # a padded position
    mask = torch.tensor([[1, 1, 0]])
    assert float(distill.hidden_loss(a, b, mask, [0])) == pytest.approx(0.0)
    b[1][0, 0] = 3.0
    assert float(distill.hidden_loss(a, b, mask, [0])) == pytest.approx(4.0 * 4 / (2 * 4))
