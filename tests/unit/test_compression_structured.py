"""Structured pruning on a tiny BERT: removed heads and FFN rows shrink the matrices; with data,
units are ranked by what they contribute and the out projections are refitted.

Heads and FFN rows whose weights are zero contribute nothing, so removing exactly those must
leave the encoder's output unchanged; this pins both the choice (lowest norm) and the surgery.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
import transformers

from lms_operator.compression.distill import layer_dropped_student
from lms_operator.compression.export import export_module
from lms_operator.compression.prune import bert_blocks, linear_inputs, out_projections, refit, spread_over_layers, structured


def tiny_bert() -> transformers.BertModel:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=16, max_position_embeddings=32)
    cfg._attn_implementation = "eager"
    return transformers.BertModel(cfg).eval()


def test_zero_heads_and_rows_are_the_ones_removed() -> None:
    model = tiny_bert()
    ids = torch.randint(0, 50, (2, 7))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        for layer in model.encoder.layer:
            sa = layer.attention.self
            for lin in (sa.query, sa.key, sa.value):
                lin.weight[8:16] = 0.0  # head 1 of 4 (head size 8)
                lin.bias[8:16] = 0.0
            layer.attention.output.dense.weight[:, 8:16] = 0.0
            layer.intermediate.dense.weight[:4] = 0.0  # 4 of 16 FFN rows
            layer.intermediate.dense.bias[:4] = 0.0
            layer.output.dense.weight[:, :4] = 0.0
        before = model(input_ids=ids, attention_mask=mask).last_hidden_state
    removed = structured(model, 0.25)
    assert removed == {"heads": 2, "ffn_rows": 8}
    layer = model.encoder.layer[0]
    assert tuple(layer.attention.self.query.weight.shape) == (24, 32)
    assert tuple(layer.attention.output.dense.weight.shape) == (32, 24)
    assert tuple(layer.intermediate.dense.weight.shape) == (12, 32)
    assert tuple(layer.output.dense.weight.shape) == (32, 12)
    with torch.no_grad():
        after = model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(before, after, atol=1e-5)


def test_layer_dropped_student_keeps_teacher_layers() -> None:
    model = tiny_bert()
    student, kept = layer_dropped_student(model, 1)
    assert kept == [1] and len(student.encoder.layer) == 1 and len(model.encoder.layer) == 2
    assert torch.equal(student.encoder.layer[0].attention.self.query.weight, model.encoder.layer[1].attention.self.query.weight)
    assert student.encoder.layer[0] is not model.encoder.layer[1]


def batch_of(ids: torch.Tensor) -> dict[str, torch.Tensor]:
    mask = torch.ones_like(ids)
    mask[0, -2:] = 0  # padding is ignored by the scores and the refit
    return {"input_ids": ids, "attention_mask": mask}


def output(model: transformers.BertModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).last_hidden_state[batch["attention_mask"].bool()]


def test_an_ffn_row_that_never_fires_goes_first_with_data_though_its_weights_are_the_largest() -> None:
    model = tiny_bert()
    with torch.no_grad():
        for layer in model.encoder.layer:
            layer.intermediate.dense.bias[5] = -30.0  # GELU(-30) = 0: row 5 never contributes
            layer.output.dense.weight[:, 5] *= 100.0
    by_weight = copy.deepcopy(model)
    structured(by_weight, 1 / 16)
    assert structured(model, 1 / 16, batch_of(torch.randint(0, 50, (4, 9)))) == {"heads": 0, "ffn_rows": 2}
    for layer, weighed in zip(model.encoder.layer, by_weight.encoder.layer):
        assert layer.intermediate.dense.bias.numel() == 15
        assert not (layer.intermediate.dense.bias == -30.0).any()
        assert (weighed.intermediate.dense.bias == -30.0).any()


def test_refit_brings_the_pruned_output_back_towards_the_unpruned_one() -> None:
    model = tiny_bert()
    batch = batch_of(torch.randint(0, 50, (8, 12)))
    want = output(model, batch)
    blocks = bert_blocks(model)
    targets = [lin(x) for lin, x in zip(out_projections(blocks), linear_inputs(model, batch, out_projections(blocks)))]
    structured(model, 0.5)
    before = (output(model, batch) - want).norm()
    refit(model, bert_blocks(model), batch, [t.detach() for t in targets])
    after = (output(model, batch) - want).norm()
    assert after < 0.8 * before, (float(before), float(after))


def test_with_data_the_share_is_taken_where_units_contribute_least() -> None:
    model = tiny_bert()
    with torch.no_grad():
        model.encoder.layer[1].output.dense.weight *= 1e-3  # layer 1's FFN rows barely contribute
    assert spread_over_layers([torch.tensor([1.0, 5.0]), torch.tensor([2.0, 3.0, 0.5])], 0.4) == [1, 1]
    structured(model, 0.25, batch_of(torch.randint(0, 50, (4, 9))))
    assert [layer.intermediate.dense.weight.shape[0] for layer in model.encoder.layer] == [16, 8]


def test_export_leaves_the_module_in_eval_mode(tmp_path: Path) -> None:
    """Pruning and layer choice run on the teacher after its export: dropout left on would make
    their measurements noise (the untrained pruned MiniLM scored 0.59 instead of 0.925)."""
    model = tiny_bert()
    ids = torch.randint(0, 50, (2, 7))
    export_module(model, "feature-extraction", tmp_path / "model.onnx",
                  {"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    assert not any(m.training for m in model.modules())


def test_a_checkpoint_is_only_resumed_by_a_student_of_the_same_shapes() -> None:
    from lms_operator.compression.pipeline import checkpoint_fingerprint

    data = {"distillation": {"sha256": "abc"}, "split": "rule"}
    a, b, c = tiny_bert(), tiny_bert(), tiny_bert()
    structured(b, 0.25)
    structured(c, 0.25)
    training = ["pruned", 800, [0, 1]]
    assert checkpoint_fingerprint(b, training, data) == checkpoint_fingerprint(c, training, data)
    assert checkpoint_fingerprint(a, training, data) != checkpoint_fingerprint(b, training, data)
    assert checkpoint_fingerprint(b, training, data) != checkpoint_fingerprint(b, training, {"distillation": {"sha256": "x"}})
