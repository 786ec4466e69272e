"""`lms bench`: concurrency sweep against a Triton gRPC endpoint, a table and optional JSON."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from lms_operator.serving.loadgen import LevelResult, as_dicts, spread, sweep

HEADER = f"{'conc':>5} {'requests':>9} {'errors':>7} {'req/s':>9} {'items/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'batch':>6}"


def table(results: Sequence[LevelResult]) -> str:
    rows = [HEADER]
    for r in results:
        rows.append(f"{r.concurrency:>5} {r.requests:>9} {r.errors:>7} {r.throughput_rps:>9.1f} {r.items_per_s:>9.1f} "
                    f"{r.p50_ms:>8.2f} {r.p95_ms:>8.2f} {r.p99_ms:>8.2f} {r.server.get('mean_batch', 0):>6.2f}")
    return "\n".join(rows)


def bench_command(args: argparse.Namespace) -> int:
    from lms_operator.serving.client import split_endpoint

    try:
        protocol, url = split_endpoint(args.endpoint, "grpc")
    except ValueError as exc:
        print(f"lms bench: {exc}", file=sys.stderr)
        return 2
    connections = getattr(args, "connections", 1)
    reconnect = getattr(args, "reconnect_seconds", None)
    checks = [("--requests", args.requests), ("--duration", args.duration), ("--sequence-length", args.sequence_length),
              ("--batch", args.batch), ("--connections", connections)]
    if reconnect is not None:
        checks.append(("--reconnect-seconds", reconnect))
    for flag, value in checks:
        if value <= 0:
            print(f"lms bench: {flag} must be positive, got {value}", file=sys.stderr)
            return 2
    model = args.model
    if getattr(args, "text", False):
        from lms_operator.serving.infer import text_model

        model = text_model(args.model)
    try:
        results = sweep(url, model, args.concurrency, args.requests, args.duration, args.sequence_length, args.batch,
                        connections=connections, reconnect_s=reconnect)
    except Exception as exc:  # noqa: BLE001 - connection / unknown model: one clear line
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"lms bench: {args.endpoint}: {message}", file=sys.stderr)
        return 1
    print(table(results))
    if spread(connections, reconnect):
        print(f"batch: not measured ({connections} connection(s){', reconnecting' if reconnect else ''}: "
              "the load may reach several servers)", file=sys.stderr)
    for r in results:
        if r.first_error:
            print(f"concurrency {r.concurrency}: {r.errors} errors, first: {r.first_error}", file=sys.stderr)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"endpoint": args.endpoint, "model": model, "sequence_length": args.sequence_length, "batch": args.batch,
                   "connections": connections, "reconnect_seconds": reconnect, "levels": as_dicts(results)}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 1 if any(r.errors for r in results) else 0
