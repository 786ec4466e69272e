"""The compression run: source -> bases (original, pruned, distilled) -> ONNX -> quantized
variants -> quality gate -> fastest passing variant -> published version folder."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from lms_operator.api.contract import FORMAT_VERSION, CompressionSummary, Latency, Quality
from lms_operator.api.spec import LargeModelService
from lms_operator.api.version import artifact_key, version_key
from lms_operator.compression import evaluate as ev
from lms_operator.compression import search
from lms_operator.compression.digest import file_sha256
from lms_operator.compression.errors import CompressionError, GateFailed, InputError
from lms_operator.compression.loader import SourceModel, load_source, tokenizer_files
from lms_operator.compression.publish import publish_version
from lms_operator.compression.source import locate_model, resolve_model
from lms_operator.compression.supply_chain import verify_published
from lms_operator.compression.workload import (TEXT_METRICS, TIMING_BATCH, Workload, check_metric, tabular_workload,
                                                text_workload)
from lms_operator.modelrepo.layout import REPORT_FILE, is_complete, relative_version_path, version_dir
from lms_operator.modelrepo.assemble import job_templates, served_configs, template_digests
from lms_operator.modelrepo.templates import Template
from lms_operator.modelrepo.text import text_models

MAX_DEFAULT_STEPS = 2000
"""Embedding distillation without spec.compression.distillation.steps: epochs over the text, capped here."""
MONITOR_SENTENCES = 64
"""Training sentences set aside (not trained on) for the progress lines' cosine."""


def log(msg: str) -> None:
    print(f"lms compress: {msg}", file=sys.stderr, flush=True)


@dataclass
class Stopwatch:
    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        log(f"{name}...")
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 3)


def build_student(src: SourceModel, lms: LargeModelService, work: Workload, spec_dir: Path | None) -> tuple[Any, dict[str, Any]]:
    """Train the student (layer-dropped teacher, smaller MLP, or the given student model)."""
    from lms_operator.compression import distill

    d = lms.spec.compression.distillation
    assert d is not None
    info: dict[str, Any] = {"teacher_params": distill.param_count(src.module), "data": work.source, "epochs": d.epochs, "seed": d.seed}
    keep: list[int] | None = None
    distill.seed_all(d.seed)
    if d.student_uri:
        student_path = locate_model(d.student_uri, None, spec_dir, None)
        student = load_source(student_path, src.format, src.task).module
        info["student"] = d.student_uri
    elif src.task == "feature-extraction" or src.task == "text-classification":
        base = src.module if src.task == "feature-extraction" else src.module.base_model
        try:
            if src.task == "feature-extraction":
                keep, probe_cosine = distill.choose_layers(base, d.student_layers, probe_batch(work))
                info["probe_cosine_untrained"] = round(probe_cosine, 4)
            student, kept = distill.layer_dropped_student(base, d.student_layers, keep)
        except ValueError as exc:
            raise InputError(f"spec.compression.distillation.studentLayers: {exc}") from None
        if src.task == "text-classification":
            whole = copy.deepcopy(src.module)
            setattr(whole, whole.base_model_prefix, student)
            student = whole
        info["layers_kept"] = kept
    else:
        sizes = distill.mlp_student_sizes(distill.teacher_mlp_sizes(src.module), d.student_layers)
        student = distill.build_mlp(sizes)
        info["student_sizes"] = sizes
    if src.task == "feature-extraction":
        steps = d.steps or min(MAX_DEFAULT_STEPS, d.epochs * -(-len(work.train_text) // 32))
        record = train_embedding(student, src, work, "distilled", steps, info["layers_kept"], d.temperature, d.alpha, d.seed)
        info["training"] = {k: v for k, v in record.items() if k != "loss"}
        losses = record["loss"]
    elif src.task == "text-classification":
        raise InputError("spec.compression.distillation: text-classification distillation needs labelled text, which the corpus lacks")
    else:
        assert work.tabular is not None
        losses = distill.train_classifier(student, src.module, work.tabular.x_train, work.tabular.y_train, d.temperature, d.alpha, d.epochs, d.seed)
    info["student_params"] = distill.param_count(student)
    info["loss"] = [round(x, 5) for x in losses]
    return student, info


def probe_batch(work: Workload, n: int = 64) -> dict[str, Any]:
    """A batch of training sentences: the student's layers are chosen and pruned units ranked on it."""
    enc = work.tokenizer(work.train_text[:n], padding=True, truncation=True, max_length=64, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def checkpoint_fingerprint(student: Any, training: list[Any], data_info: dict[str, Any]) -> str:
    """What a checkpoint must match to be resumed: the training settings, the data's digests and
    the student's shapes (a pruned student's shapes depend on what its ranking measured, so a
    rerun can differ from the killed run)."""
    shapes = hashlib.sha256(repr([(n, tuple(t.shape)) for n, t in student.state_dict().items()]).encode()).hexdigest()
    data = {k: v.get("sha256") for k, v in data_info.items() if isinstance(v, dict)}
    return json.dumps([*training, shapes, data], sort_keys=True)


def train_embedding(student: Any, src: SourceModel, work: Workload, role: str, steps: int, layer_map: list[int],
                    temperature: float, alpha: float, seed: int) -> dict[str, Any]:
    """Distil `student` from the source model on the training text, checkpointing under work.checkpoints/role.

    A few training sentences are set aside as the progress lines' monitor; evaluation text is
    never among the training text (compression.data).
    """
    from lms_operator.compression import distill

    text = list(work.train_text)
    monitor: list[str] = []
    if len(text) > 2 * MONITOR_SENTENCES:
        text, monitor = text[:-MONITOR_SENTENCES], text[-MONITOR_SENTENCES:]
    fingerprint = checkpoint_fingerprint(student, [role, steps, layer_map, temperature, alpha, seed],
                                         work.data_info)
    folder = work.checkpoints / role if work.checkpoints is not None else None
    cfg = distill.EmbedTraining(steps=steps, temperature=temperature, alpha=alpha, seed=seed, checkpoint_dir=folder,
                                fingerprint=fingerprint, device=work.train_device,
                                log_every=max(1, min(50, steps // 10)), checkpoint_every=max(1, min(100, steps // 5)))
    log(f"{role}: {steps} steps on {len(text)} sentences ({work.source}) on {work.train_device}")
    return distill.train_embedding(student, src.module, work.tokenizer, text, cfg, monitor=monitor, layer_map=layer_map,
                                   log=log)


UNSTRUCTURED_NOTE = ("{method} pruning zeroed {pct:.0f}% of the Linear weights, which stay stored densely: the file "
                     "compresses better but ONNX Runtime runs the same dense kernels, so latency does not improve "
                     "(use pruning.structured for speed)")


def apply_pruning(module: Any, lms: LargeModelService, src: SourceModel | None = None,
                  work: Workload | None = None) -> tuple[Any, dict[str, Any]]:
    """Prune a copy of `module` as the spec asks; structured pruning of an embedding model is
    followed by recovery distillation from the teacher (pruning.recoverySteps)."""
    from lms_operator.compression import prune

    p = lms.spec.compression.pruning
    assert p is not None
    m = copy.deepcopy(module)
    if p.structured:
        batch = probe_batch(work, prune.CALIBRATION_SENTENCES) if work is not None and work.tokenizer is not None else None
        try:
            removed = prune.structured(m, p.sparsity, batch)
        except ValueError as exc:
            raise InputError(f"spec.compression.pruning.structured: {exc}") from None
        ranked = (f"contribution on {batch['input_ids'].shape[0]} training sentences, out projections refitted"
                  if batch is not None else "weight norms")
        info: dict[str, Any] = {"structured": True, "amount": p.sparsity, "ranked_by": ranked, **removed}
        if src is not None and work is not None and src.task == "feature-extraction" and p.recovery_steps > 0:
            layers = list(range(len(m.encoder.layer)))
            record = train_embedding(m, src, work, "pruned", p.recovery_steps, layers, 2.0, 0.5, 0)
            info["recovery"] = {k: v for k, v in record.items() if k != "loss"}
        elif p.recovery_steps > 0:
            info["recovery"] = f"none: recovery distillation is for feature-extraction models, not {src.task if src else 'this task'}"
        return m, info
    if p.method == "threshold":
        reached = prune.threshold(m, float(p.threshold or 0.0))
    else:
        reached = prune.magnitude(m, p.sparsity)
    return m, {"structured": False, "method": p.method, "sparsity": round(reached, 4),
               "note": UNSTRUCTURED_NOTE.format(method=p.method, pct=100 * reached)}


WIDE_SPREAD = 1.25
"""Best-of-N and median speed-ups further apart than this factor: the timing is not to be trusted."""


def variant_note(chosen: search.Candidate, details: dict[str, Any], baseline_ms: float) -> str | None:
    """What the user must be told plainly about the chosen variant: unstructured pruning gains no
    speed, and a speed-up whose best-of-N and median disagree was measured on a busy node."""
    notes = []
    pruning = (details.get("pruning") or {}).get("note")
    if pruning and "pruned" in chosen.base:
        notes.append(pruning)
    best = baseline_ms / chosen.latency_ms if chosen.latency_ms > 0 else None
    median = chosen.extra.get("speedup_median")
    if best and median and max(best, median) / min(best, median) > WIDE_SPREAD:
        notes.append(f"timing spread is wide (speed-up {best:.2f}x best-of-rounds, {median:.2f}x median): "
                     "the node was busy, trust the median")
    return "; ".join(notes) or None


def quantize_variant(base_fp32: Path, base_pre: Path, quant: str, out: Path, work: Workload) -> tuple[Path, dict[str, Any]]:
    """The quantized model and what the report should say about it (static int8: the nodes left fp32)."""
    from lms_operator.compression import quantize as q

    if quant == "fp32":
        return base_pre, {}
    if quant.startswith("int8-"):
        return q.quantize_dynamic_int8(base_pre, out, per_channel=quant.endswith("per-channel")), {}
    if quant.startswith("qdq-"):
        path, plan = q.quantize_static_qdq(base_pre, out, per_channel=quant.endswith("per-channel"), feeds=work.calib_feeds)
        return path, {"static": plan.to_dict()}
    if quant == "fp16":
        return q.convert_fp16(base_fp32, out), {}
    raise CompressionError(f"unknown quantization variant {quant}")


def io_specs(task: str, baseline_out: np.ndarray, n_in: int | None) -> tuple[list[Any], list[Any]]:
    from lms_operator.modelrepo.config import TensorSpec

    width = int(baseline_out.shape[1])
    if task in ("feature-extraction", "text-classification"):
        ins = [TensorSpec("input_ids", "TYPE_INT64", [-1]), TensorSpec("attention_mask", "TYPE_INT64", [-1])]
    else:
        ins = [TensorSpec("input", "TYPE_FP32", [int(n_in or -1)])]
    name = "embedding" if task == "feature-extraction" else "logits"
    return ins, [TensorSpec(name, "TYPE_FP32", [width])]


def cache_hit_summary(final: Path, key: str, rel: str, model_name: str) -> CompressionSummary:
    """The published version's summary, after re-checking its model.onnx against the recorded digest."""
    verify_published(final, model_name)
    report = json.loads((final / REPORT_FILE).read_text())
    return replace(CompressionSummary.from_dict(report), version=key, path=rel, cache_hit=True,
                   format_version=FORMAT_VERSION)


def check_requested_key(lms: LargeModelService, requested: str | None, templates: Mapping[str, Template]) -> str:
    """This run's version key; refuses a key the operator computed differently (another format)."""
    key = version_key(lms, template_digests(templates))
    if requested is not None and requested != key:
        raise InputError(f"version key mismatch: the operator asked for {requested}, this compression image computes "
                         f"{key} (compression format {FORMAT_VERSION}); run the operator's own image for the Job",
                         CompressionSummary(version=key, requested_version=requested, model=lms.name,
                                            format_version=FORMAT_VERSION))
    return key


def compress(lms: LargeModelService, root: Path, spec_dir: Path | None, model_dir: Path | None,
             requested_key: str | None = None, templates: Mapping[str, Template] | None = None) -> CompressionSummary:
    """Run the whole pipeline; returns the summary. Raises InputError / GateFailed / CompressionError."""
    templates = job_templates(lms, templates)
    key = check_requested_key(lms, requested_key, templates)
    final = version_dir(root, lms.namespace, lms.name, key)
    rel = relative_version_path(lms.namespace, lms.name, key)
    if is_complete(final):
        try:
            summary = cache_hit_summary(final, key, rel, lms.name)
            log(f"version {key} already published: cache hit")
            return summary
        except CompressionError as exc:  # altered or half-deleted: never served as is, rebuilt
            log(f"{exc}: rebuilding version {key}")
            discard_version(final)
    comp = lms.spec.compression
    m = lms.spec.model
    check_metric(m.task, comp.quality_gate.metric)
    device = lms.spec.serving.device
    threads = ev.thread_limit()
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    sw = Stopwatch()
    base_dir = spec_dir or Path.cwd()
    if m.task not in TEXT_METRICS and (comp.data.evaluation or comp.data.calibration):
        raise InputError("spec.compression.data: evaluation and calibration entries are for text models; "
                         f"a {m.task} model takes data.distillation (sklearn:digits or an .npz with X and y)")
    with sw.stage("load"):
        resolved = resolve_model(m.uri, m.sha256, spec_dir, model_dir)
        src = load_source(resolved.path, m.format, m.task)
        src.meta["revision"] = resolved.revision  # the hf:// commit, recorded in the summary
        if src.module is None and (comp.pruning or comp.distillation):
            raise InputError("spec.compression: pruning and distillation need a torch model (format huggingface or torchscript)")
        work = text_workload(src, lms, base_dir) if m.task in TEXT_METRICS else tabular_workload(src, lms, base_dir)
    work.checkpoints = checkpoint_dir(root, lms, key)
    work.templates = templates
    work.train_device = training_device(comp.gpu)
    tmp = Path(tempfile.mkdtemp(prefix="lms-compress-"))
    try:
        summary = _compress_in(lms, src, work, tmp, sw, key, final, rel, device, root, spec_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    discard_checkpoints(work.checkpoints)
    return summary


def discard_checkpoints(folder: Path) -> None:
    """Published: nothing left to resume. Empty parent folders go too."""
    shutil.rmtree(folder, ignore_errors=True)
    for parent in list(folder.parents)[:3]:
        try:
            parent.rmdir()
        except OSError:
            break


def checkpoint_dir(root: Path, lms: LargeModelService, key: str) -> Path:
    """Where training checkpoints live while a version is built: $LMS_CHECKPOINT_DIR, else beside
    the versions in the repository root (a claim survives the Job's pod, so a rerun resumes). For
    an s3:// repository the root is pod scratch, so resuming needs LMS_CHECKPOINT_DIR on a volume."""
    base = Path(os.environ["LMS_CHECKPOINT_DIR"]) if os.environ.get("LMS_CHECKPOINT_DIR") else root / ".lms-checkpoints"
    return base / lms.namespace / lms.name / key


def training_device(gpus: int) -> str:
    """cuda when the Job asked for a GPU and torch sees one, else cpu."""
    if gpus > 0:
        import torch

        if torch.cuda.is_available():
            return "cuda"
        log("spec.compression.resources.gpu is set but torch sees no CUDA device: training on the CPU")
    return "cpu"


def discard_version(final: Path) -> None:
    """Move a damaged version out of the way (renamed first, so no reader sees it half-deleted)."""
    trash = final.with_name(f".discarded-{final.name}-{int(time.time())}")
    os.rename(final, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _compress_in(lms: LargeModelService, src: SourceModel, work: Workload, tmp: Path, sw: Stopwatch, key: str, final: Path,
                 rel: str, device: str, root: Path, spec_dir: Path | None) -> CompressionSummary:
    """Bases -> quantized candidates -> gate and timing -> the fastest passing one, published."""
    from lms_operator.compression.export import onnx_bytes

    gate = lms.spec.compression.quality_gate
    base_fp32, wanted, details = build_bases(lms, src, work, tmp, sw, spec_dir)
    with sw.stage("reference"):
        base_sess = ev.session(base_fp32["original"], device)
        reference = ev.run_feeds(base_sess, work.eval_feeds)
    candidates = build_candidates(lms, base_fp32, wanted, work, sw, src.module)
    baseline_ms, timing_rounds = score_candidates(candidates, base_sess, reference, work, gate, device, sw)
    from lms_operator.compression.fusion import decide

    details["fusion"] = decide(candidates) or "not applied (not a text transformer, or fp16)"
    original_bytes = onnx_bytes(base_fp32["original"])
    objective = lms.spec.compression.objective
    chosen = search.select(candidates, objective)
    base = CompressionSummary(version=key, model=lms.name, path=rel, original_bytes=original_bytes,
                              format_version=FORMAT_VERSION, source_revision=src.meta.get("revision"),
                              objective=objective, threads=ev.thread_limit() or os.cpu_count(), artifact=artifact_key(lms),
                              variants=search.summary_line(candidates, original_bytes, baseline_ms, chosen))
    if chosen is None:
        best = search.best_failed(candidates)
        msg = (f"quality gate failed: best {gate.metric} {best.score:.4f} ({best.variant}) < {gate.min}" if best
               else "quality gate failed: no variant could be built or evaluated")
        raise GateFailed(msg, replace(
            base, variant=best.variant if best else None,
            compressed_bytes=best.compressed_bytes if best else None,
            size_ratio=round(original_bytes / best.compressed_bytes, 3) if best and best.compressed_bytes else None,
            latency_ms=Latency(round(baseline_ms, 3), round(best.latency_ms, 3) if best else None),
            speedup=round(baseline_ms / best.latency_ms, 3) if best else None,
            quality=Quality(gate.metric, None if best is None else round(best.score, 5), gate.min, False,
                            samples=int(reference.shape[0]), data_sha256=work.eval_sha256),
            note=variant_note(best, details, baseline_ms) if best else None))
    teacher_score = ev.score(gate.metric, reference, reference, work.labels)
    summary = replace(
        base, variant=chosen.variant, compressed_bytes=chosen.compressed_bytes,
        size_ratio=round(original_bytes / chosen.compressed_bytes, 3),
        latency_ms=Latency(round(baseline_ms, 3), round(chosen.latency_ms, 3)),
        speedup=round(baseline_ms / chosen.latency_ms, 3), speedup_median=chosen.extra.get("speedup_median"),
        quality=Quality(gate.metric, round(chosen.score, 5), gate.min, True, round(teacher_score, 5),
                        int(reference.shape[0]), work.eval_sha256),
        sha256=file_sha256(Path(chosen.path)), note=variant_note(chosen, details, baseline_ms))
    report = {**summary.to_dict(), "task": src.task, "source": lms.spec.model.uri,
              "candidates": [c.row(original_bytes, baseline_ms) for c in candidates], "timings": sw.timings,
              "benchmark": benchmark_conditions(work, device, lms.spec.serving.device, timing_rounds),
              "data": work.data_info or work.source, **details,
              "serving": {"templates": template_digests(work.templates), "template": lms.spec.serving.template_name}}
    if work.tabular is not None:
        report["input_scaling"] = "features as in the dataset (digits: pixel / 16)"
    with sw.stage("publish"):
        publish_chosen(lms, src, work, Path(chosen.path), reference, report, root, final)
    verify_published(final, lms.name, summary.sha256)
    log(f"published {chosen.variant} to {final} ({summary.size_ratio}x smaller, {summary.speedup}x faster, "
        f"{gate.metric} {chosen.score:.4f})")
    return summary


def build_bases(lms: LargeModelService, src: SourceModel, work: Workload, tmp: Path, sw: Stopwatch,
                spec_dir: Path | None) -> tuple[dict[str, Path], list[str], dict[str, Any]]:
    """(fp32 ONNX model by base, the bases the variants start from, what made them). The original is
    always there: it is the baseline every variant is scored and timed against."""
    from lms_operator.compression.export import export_module

    comp = lms.spec.compression
    details: dict[str, Any] = {}
    base_fp32: dict[str, Path] = {}
    with sw.stage("export"):
        base_fp32["original"] = src.onnx_path if src.onnx_path is not None else \
            export_module(src.module, src.task, tmp / "original" / "model.onnx", work.example)
    wanted = search.bases(comp.pruning is not None, comp.distillation is not None, comp.variant_search)
    modules: dict[str, Any] = {}
    if any("distilled" in b for b in wanted):
        with sw.stage("distill"):
            modules["distilled"], details["distillation"] = build_student(src, lms, work, spec_dir)
    for b in wanted:
        if "pruned" in b:
            with sw.stage("prune"):
                start = modules["distilled"] if b.startswith("distilled") else src.module
                modules[b], details["pruning"] = apply_pruning(start, lms, src, work)
    with sw.stage("export"):
        for b in wanted:
            if b != "original":
                base_fp32[b] = export_module(modules[b], src.task, tmp / b.replace("+", "-") / "model.onnx", work.example)
    return base_fp32, wanted, details


def _first_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]


def build_candidates(lms: LargeModelService, base_fp32: dict[str, Path], wanted: list[str], work: Workload,
                     sw: Stopwatch, module: Any = None) -> list[search.Candidate]:
    """Every base times every quantization the spec asks for, for a text transformer each also
    fused (fusion.decide keeps the faster twin); one that cannot be built is kept with its error."""
    from tqdm import tqdm

    from lms_operator.compression import fusion
    from lms_operator.compression import quantize as q
    from lms_operator.compression.export import onnx_bytes

    comp = lms.spec.compression
    quants = search.quant_variants(comp.quantization.mode, comp.quantization.per_channel, comp.variant_search)
    fuse = lms.spec.model.task in fusion.TEXT_TASKS and "fp16" not in quants
    combos = [(b, qv, f) for b in wanted for qv in quants for f in ((False, True) if fuse else (False,))]
    candidates: list[search.Candidate] = []
    with sw.stage("quantize"):
        pre: dict[str, Path] = {}
        fused: dict[str, tuple[Path, dict[str, int]] | Exception] = {}
        for b, qv, f in tqdm(combos, desc="variants", unit="variant", file=sys.stderr):
            name = (qv if b == "original" else f"{b}+{qv}") + (fusion.FUSED if f else "")
            cand = search.Candidate(variant=name, base=b, quantization=qv)
            try:
                if f:
                    if b not in fused:
                        try:
                            fused[b] = fusion.fuse_transformer(base_fp32[b], base_fp32[b].with_name("fused.onnx"),
                                                               *fusion.attention_shape(module, b))
                        except Exception as exc:
                            fused[b] = exc
                    got = fused[b]
                    if isinstance(got, Exception):
                        raise got
                    src_fp32, counts = got
                    cand.extra["fused_ops"] = counts
                    out, info = quantize_variant(src_fp32, src_fp32, qv, base_fp32[b].with_name(f"{qv}-fused.onnx"), work)
                else:
                    if b not in pre:
                        pre[b] = q.preprocess(base_fp32[b], base_fp32[b].with_name("pre.onnx"))
                    out, info = quantize_variant(base_fp32[b], pre[b], qv, base_fp32[b].with_name(f"{qv}.onnx"), work)
                cand.extra.update(info)
                cand.path = str(out)
                cand.compressed_bytes = onnx_bytes(out)
            except Exception as exc:  # a variant that cannot be built is reported, not fatal
                cand.error = _first_line(exc)
            candidates.append(cand)
    return candidates


def score_candidates(candidates: list[search.Candidate], base_sess: Any, reference: np.ndarray, work: Workload,
                     gate: Any, device: str, sw: Stopwatch) -> tuple[float, int]:
    """The gate's score of every candidate, then all of them timed together with the baseline;
    (baseline latency in ms, timing rounds)."""
    sessions = []
    with sw.stage("evaluate"):
        for cand in candidates:
            if cand.error:
                continue
            try:
                s = ev.session(Path(cand.path), device)
                cand.score = ev.score(gate.metric, ev.run_feeds(s, work.eval_feeds), reference, work.labels)
                cand.passed = cand.score >= gate.min
                sessions.append((cand, s))
            except Exception as exc:
                cand.error = _first_line(exc)
    with sw.stage("benchmark"):
        lat, median, timing_rounds = ev.time_sessions([base_sess] + [s for _, s in sessions], work.timing_feed)
        for (cand, _), ms, med in zip(sessions, lat[1:], median[1:]):
            cand.latency_ms = ms
            cand.extra["speedup_median"] = round(median[0] / med, 3)
    return lat[0], timing_rounds


def benchmark_conditions(work: Workload, device: str, device_class: str, timing_rounds: int) -> dict[str, Any]:
    """How the latencies in the report were measured."""
    providers = ev.providers(device)
    out: dict[str, Any] = {"batch": TIMING_BATCH, "feed": {k: list(v.shape) for k, v in work.timing_feed.items()},
                           "providers": providers, "device_class": device_class,
                           "statistic": f"best and median of {timing_rounds} interleaved runs after 2 warm-ups",
                           "threads": ev.thread_limit() or f"library default ({os.cpu_count()} CPUs)"}
    if device == "gpu" and "CUDAExecutionProvider" not in providers:
        out["note"] = "no CUDA execution provider here: latencies were measured on the CPU"
    return out


def publish_chosen(lms: LargeModelService, src: SourceModel, work: Workload, model: Path, reference: np.ndarray,
                   report: dict[str, Any], root: Path, final: Path) -> None:
    """The chosen model with its config, tokenizer, text models and report, published atomically."""
    from lms_operator.modelrepo.config import render_config

    n_in = src.meta.get("in_features") or (work.tabular.x_test.shape[1] if work.tabular else None)
    ins, outs = io_specs(src.task, reference, n_in)
    main, *_ = served_configs(lms.name, src.task, ins, outs, lms.spec.serving, work.templates, text=False)
    toks = tokenizer_files(src.tokenizer_dir) if src.tokenizer_dir else []
    parsed = {name: template.config() for name, template in work.templates.items()}
    publish_version(root, final, lms.name, model, toks, render_config(main), report,
                    text_models(lms.name, src.task, outs[0], lms.spec.serving, toks, src.path, parsed))
