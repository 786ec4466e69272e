"""Closed-loop gRPC load generator (tritonclient.grpc.aio) with a concurrency sweep.

Each level runs `concurrency` workers that send the next request as soon as the previous
one answers, until the request budget or the time budget is spent (or a stop event is set).
Latencies are measured per request on the client, so they include queueing in Triton's
dynamic batcher. Workers share `connections` clients (clientpool: one gRPC connection each,
optionally replaced every `reconnect_s` so the load follows a Service's new replicas).

Library callers (benches, e2e tests) use `run_load`: one long level, every request reported as
a RequestRecord(start, latency_s, ok, error) to `on_result` and in the returned LoadRun.
"""
from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

from lms_operator.serving.client import NUMPY_TO_TRITON
from lms_operator.serving.clientpool import ClientPool, grpc_client_factory

TOKEN_RANGE = (1000, 20000)  # ordinary word-piece ids, clear of special tokens
CLS_ID, SEP_ID = 101, 102
# Common English words, one word piece each in BERT-style vocabularies: a text of n-2 of them
# is n tokens with [CLS] and [SEP], so the text path is loaded at the token path's length.
WORDS = ("the model serves text on a small fast server and every client sends one short request with words "
         "that people use each day in plain simple language while the system answers them quickly").split()


@dataclass
class LevelResult:
    """Outcome of one concurrency level."""

    concurrency: int
    requests: int
    errors: int
    wall_s: float
    throughput_rps: float
    items_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    first_error: str | None = None
    client_cpu_s: float = 0.0
    server: dict[str, Any] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list, repr=False)


class RequestRecord(NamedTuple):
    """One request: wall-clock start (time.time()), client latency, success, and the error's first line."""

    start: float
    latency_s: float
    ok: bool
    error: str | None = None


@dataclass
class LoadRun:
    """What run_load measured: the summary, every request (unless not kept), errors by message."""

    level: LevelResult
    records: list[RequestRecord]
    errors: Counter[str]
    clients_opened: int


def error_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def percentile_ms(latencies_s: Sequence[float], q: float) -> float:
    if not latencies_s:
        return float("nan")
    return float(np.percentile(np.asarray(latencies_s) * 1000.0, q))


def summarize(concurrency: int, latencies_s: Sequence[float], errors: int, wall_s: float, items_per_request: int, first_error: str | None = None) -> LevelResult:
    """Percentiles and throughput of one level (successful requests only in the latencies)."""
    ok = len(latencies_s)
    rps = ok / wall_s if wall_s > 0 else 0.0
    return LevelResult(
        latencies_s=list(latencies_s),
        concurrency=concurrency,
        requests=ok + errors,
        errors=errors,
        wall_s=round(wall_s, 4),
        throughput_rps=round(rps, 3),
        items_per_s=round(rps * items_per_request, 3),
        p50_ms=round(percentile_ms(latencies_s, 50), 3),
        p95_ms=round(percentile_ms(latencies_s, 95), 3),
        p99_ms=round(percentile_ms(latencies_s, 99), 3),
        mean_ms=round(float(np.mean(latencies_s)) * 1000.0, 3) if ok else float("nan"),
        first_error=first_error,
    )


def synthetic_inputs(inputs_meta: Sequence[Mapping[str, Any]], batch: int, sequence_length: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Request payload for a model from its metadata: token ids / full mask for text, normals for vectors."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for meta in inputs_meta:
        name = meta["name"]
        dims = [int(d) for d in meta["shape"]][1:]  # metadata shapes carry the batch dim (-1)
        shape = [batch] + [sequence_length if d < 0 else d for d in dims]
        if meta["datatype"] == "BYTES":
            count = max(1, sequence_length - 2)
            texts = [" ".join(WORDS[(row * 7 + i) % len(WORDS)] for i in range(count)) for row in range(batch)]
            out[name] = np.array([[t.encode()] for t in texts], dtype=np.object_).reshape(shape)
        elif name == "attention_mask":
            out[name] = np.ones(shape, dtype=np.int64)
        elif name == "input_ids":
            ids = rng.integers(*TOKEN_RANGE, size=shape, dtype=np.int64)
            ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
            out[name] = ids
        elif meta["datatype"] in ("FP32", "FP16", "FP64"):
            out[name] = rng.standard_normal(shape).astype({"FP32": np.float32, "FP16": np.float16, "FP64": np.float64}[meta["datatype"]])
        else:
            out[name] = rng.integers(0, 2, size=shape).astype(np.int64 if meta["datatype"] == "INT64" else np.int32)
    return out


def infer_inputs(payload: Mapping[str, np.ndarray]) -> list[Any]:
    import tritonclient.grpc.aio as grpcclient

    tensors = []
    for name, array in payload.items():
        tensor = grpcclient.InferInput(name, list(array.shape), NUMPY_TO_TRITON[array.dtype])
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


@dataclass
class _Tally:
    """Where each request's outcome goes: latencies or error counts, plus the caller's sinks."""

    records: list[RequestRecord] | None = None
    on_result: Callable[[RequestRecord], None] | None = None
    errors_by_message: Counter[str] | None = None
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None

    def add(self, rec: RequestRecord) -> None:
        if rec.ok:
            self.latencies.append(rec.latency_s)
        else:
            self.errors += 1
            self.first_error = self.first_error or rec.error
            if self.errors_by_message is not None:
                self.errors_by_message[rec.error or ""] += 1
        if self.records is not None:
            self.records.append(rec)
        if self.on_result is not None:
            self.on_result(rec)


async def _level(pool: ClientPool, model: str, payload: Mapping[str, np.ndarray], concurrency: int,
                 max_requests: int | None, max_seconds: float | None, progress: Callable[[str], None] | None,
                 stop: threading.Event | None = None,
                 on_result: Callable[[RequestRecord], None] | None = None,
                 records: list[RequestRecord] | None = None,
                 errors_by_message: Counter[str] | None = None, error_backoff_s: float = 0.0) -> LevelResult:
    """Closed loop: each worker sends its next request when the previous answers, until a budget or `stop`.

    Every request is counted: a success in the latencies, a failure in `errors` (and by message);
    each one also goes to `on_result` and `records` when given. After a failure the worker waits
    `error_backoff_s` before its next request (a Service with no ready replica fails requests at once).
    """
    tensors = infer_inputs(payload)
    items = int(next(iter(payload.values())).shape[0])
    tally = _Tally(records, on_result, errors_by_message)
    issued = 0
    start = time.perf_counter()
    deadline = start + max_seconds if max_seconds is not None else float("inf")
    budget = max_requests if max_requests is not None else float("inf")

    def more() -> bool:
        return issued < budget and time.perf_counter() < deadline and not (stop is not None and stop.is_set())

    async def worker(index: int) -> None:
        nonlocal issued
        while more():
            issued += 1
            conn = pool.acquire(index)
            wall, t0 = time.time(), time.perf_counter()
            try:
                await conn.client.infer(model, tensors)
                rec = RequestRecord(wall, time.perf_counter() - t0, True, None)
            except Exception as exc:  # noqa: BLE001 - counted and reported, the sweep goes on
                rec = RequestRecord(wall, time.perf_counter() - t0, False, error_line(exc))
            finally:
                pool.release(conn)
            tally.add(rec)
            if not rec.ok and error_backoff_s > 0:
                await asyncio.sleep(error_backoff_s)

    async def reporter() -> None:
        total = f"/{max_requests}" if max_requests is not None else ""
        while True:
            await asyncio.sleep(0.5)
            if progress is not None:
                elapsed = time.perf_counter() - start
                rate = len(tally.latencies) / elapsed if elapsed > 0 else 0.0
                p50 = percentile_ms(tally.latencies[-2000:], 50)
                progress(f"concurrency {concurrency:>3}: {len(tally.latencies) + tally.errors}{total} requests, {rate:8.1f} req/s, p50 {p50:7.2f} ms, errors {tally.errors}")

    ticker = asyncio.create_task(reporter())
    try:
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    finally:
        ticker.cancel()
    wall = time.perf_counter() - start
    return summarize(concurrency, tally.latencies, tally.errors, wall, items, tally.first_error)


async def _model_stats(client: Any, model: str) -> tuple[int, int]:
    """(inference_count, execution_count) from Triton's statistics: their ratio is the mean batch."""
    stats = await client.get_inference_statistics(model, as_json=True)
    entry = (stats.get("model_stats") or [{}])[0]
    return int(entry.get("inference_count", 0)), int(entry.get("execution_count", 0))


async def settled_stats(client: Any, model: str, expected_inferences: int, timeout_s: float = 10.0,
                        poll_s: float = 0.05) -> tuple[int, int]:
    """Triton's statistics once they count `expected_inferences` (or at `timeout_s`, as they are).

    A backend reports a batch's statistics after it sends the batch's responses (Triton's
    Python backend from PbMetricReporter's destructor), so a client can hold its last answer
    before the server has counted it; on a busy machine the gap is long enough to miss a batch.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        stats = await _model_stats(client, model)
        if stats[0] >= expected_inferences or time.monotonic() >= deadline:
            return stats
        await asyncio.sleep(poll_s)


def counted(result: LevelResult, items: int) -> int:
    """Inferences the server counts for a level: every successful request's batch items."""
    return (result.requests - result.errors) * items


async def batched_model(client: Any, model: str) -> str:
    """The model whose batches the sweep reports: an ensemble's ONNX step, else the model itself."""
    config = (await client.get_model_config(model, as_json=True)).get("config", {})
    for step in config.get("ensemble_scheduling", {}).get("step", []):
        inner = (await client.get_model_config(step["model_name"], as_json=True)).get("config", {})
        if inner.get("platform") == "onnxruntime_onnx" or inner.get("backend") == "onnxruntime":
            return str(step["model_name"])
    return model


def spread(connections: int, reconnect_s: float | None) -> bool:
    """Whether the load may reach more than one server (then one server's statistics say little)."""
    return connections > 1 or reconnect_s is not None


async def sweep_async(url: str, model: str, concurrencies: Sequence[int], max_requests: int, max_seconds: float, sequence_length: int = 32, batch: int = 1, warmup: int = 20, progress: Callable[[str], None] | None = None, server_cpu: Callable[[], float] | None = None, connections: int = 1, reconnect_s: float | None = None) -> list[LevelResult]:
    client = grpc_client_factory(url)()
    pool = ClientPool(grpc_client_factory(url), connections, reconnect_s, shared=client)
    stats = not spread(connections, reconnect_s)  # behind a Service the stats client sees one replica
    try:
        meta = await client.get_model_metadata(model, as_json=True)
        payload = synthetic_inputs(meta["inputs"], batch, sequence_length)
        stats_model = await batched_model(client, model) if stats else model
        if not stats:
            await client.close()   # not needed again: no idle connection left on one replica
        start = await _model_stats(client, stats_model) if stats else (0, 0)
        warm = await _level(pool, model, payload, 1, warmup, 60.0, None)
        before = await settled_stats(client, stats_model, start[0] + counted(warm, batch)) if stats else (0, 0)
        results = []
        for concurrency in concurrencies:
            cpu_before = (time.process_time(), server_cpu() if server_cpu else 0.0)
            result = await _level(pool, model, payload, concurrency, max_requests, max_seconds, progress)
            cpu_after = (time.process_time(), server_cpu() if server_cpu else 0.0)
            result.client_cpu_s = round(cpu_after[0] - cpu_before[0], 3)
            if stats:
                after = await settled_stats(client, stats_model, before[0] + counted(result, batch))
                inferences, executions = after[0] - before[0], after[1] - before[1]
                result.server = {"inferences": inferences, "executions": executions, "mean_batch": round(inferences / executions, 3) if executions else 0.0}
                before = after
            if server_cpu is not None:
                result.server["cpu_s"] = round(cpu_after[1] - cpu_before[1], 3)
            results.append(result)
        return results
    finally:
        await pool.close()
        await client.close()


def sweep(url: str, model: str, concurrencies: Sequence[int], max_requests: int, max_seconds: float, sequence_length: int = 32, batch: int = 1, warmup: int = 20, show_progress: bool = True, server_cpu: Callable[[], float] | None = None, connections: int = 1, reconnect_s: float | None = None) -> list[LevelResult]:
    """Run the sweep; a live progress line goes to stderr when `show_progress`.

    `server_cpu`, when given, returns the server's CPU seconds so far; each level then records
    the CPU the server spent on it (a measure that survives a busy, shared machine).
    `connections` spreads the workers over that many gRPC connections, each replaced every
    `reconnect_s` seconds when given; with either, the server's batch statistics (which come
    from one connection's server) are not reported.
    """

    def progress(line: str) -> None:
        sys.stderr.write("\r" + line.ljust(100))
        sys.stderr.flush()

    show_progress = show_progress and sys.stderr.isatty()

    results = asyncio.run(sweep_async(url, model, concurrencies, max_requests, max_seconds, sequence_length, batch, warmup, progress if show_progress else None, server_cpu, connections, reconnect_s))
    if show_progress:
        sys.stderr.write("\n")
    return results


def as_dicts(results: Sequence[LevelResult]) -> list[dict[str, Any]]:
    """JSON-ready results, without the raw latencies."""
    out = []
    for r in results:
        d = asdict(r)
        d.pop("latencies_s")
        out.append(d)
    return out


def merge(results: Sequence[LevelResult]) -> LevelResult:
    """One level from several runs of it (interleaved rounds): pooled latencies, summed counts and time."""
    if not results:
        raise ValueError("nothing to merge")
    latencies = [x for r in results for x in r.latencies_s]
    errors = sum(r.errors for r in results)
    wall = sum(r.wall_s for r in results)
    items = round(results[0].items_per_s / results[0].throughput_rps) if results[0].throughput_rps else 1
    first = next((r.first_error for r in results if r.first_error), None)
    merged = summarize(results[0].concurrency, latencies, errors, wall, items, first)
    merged.client_cpu_s = round(sum(r.client_cpu_s for r in results), 3)
    server: dict[str, Any] = {}
    for key in ("inferences", "executions", "cpu_s"):
        if all(key in r.server for r in results):
            server[key] = round(sum(r.server[key] for r in results), 3)
    if server.get("executions"):
        server["mean_batch"] = round(server["inferences"] / server["executions"], 3)
    merged.server = server
    return merged


async def run_load_async(url: str, model: str, concurrency: int, *, duration_s: float | None = None,
                         max_requests: int | None = None, connections: int = 1, reconnect_s: float | None = None,
                         sequence_length: int = 32, batch: int = 1, stop: threading.Event | None = None,
                         on_result: Callable[[RequestRecord], None] | None = None, keep_records: bool = True,
                         progress: Callable[[str], None] | None = None, error_backoff_s: float = 0.05) -> LoadRun:
    """One closed-loop level against `url` (a gRPC host:port) until duration_s, max_requests or `stop`.

    Every request ends up as a RequestRecord: passed to `on_result` (called on the load's event
    loop thread: keep it quick and thread-safe) and kept in LoadRun.records unless keep_records
    is False. Requests in flight when `stop` is set still finish and are reported. No warm-up.
    A worker whose request failed waits `error_backoff_s` before the next one, so a Service with no
    ready replica does not turn the load into a busy loop of instant failures (each still counted).
    """
    if duration_s is None and max_requests is None and stop is None:
        raise ValueError("run_load needs duration_s, max_requests or stop, or it never ends")
    factory = grpc_client_factory(url)
    pool = ClientPool(factory, connections, reconnect_s)
    control = factory()   # the model's inputs; closed at once so no idle connection pins a replica
    try:
        meta = await control.get_model_metadata(model, as_json=True)
    finally:
        await control.close()
    payload = synthetic_inputs(meta["inputs"], batch, sequence_length)
    records: list[RequestRecord] = []
    errors: Counter[str] = Counter()
    try:
        level = await _level(pool, model, payload, concurrency, max_requests, duration_s, progress, stop, on_result,
                             records if keep_records else None, errors, error_backoff_s)
    finally:
        await pool.close()
    return LoadRun(level, records, errors, pool.opened)


def run_load(url: str, model: str, concurrency: int, **options: Any) -> LoadRun:
    """run_load_async on a fresh event loop (blocking; run it in a thread and set `stop` to end it)."""
    return asyncio.run(run_load_async(url, model, concurrency, **options))
