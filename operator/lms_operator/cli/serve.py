"""`lms serve`, `lms infer` and `lms bench` (argparse only here; work imported when run)."""
from __future__ import annotations

import argparse
from pathlib import Path


def _concurrencies(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--concurrency: expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"--concurrency: values must be positive, got {text!r}")
    return values


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = subparsers.add_parser("serve", help="compress a LargeModelService spec and serve it on a local Triton")
    serve.add_argument("spec", metavar="SPEC.yaml", help="LargeModelService manifest")
    serve.add_argument("--repository", type=Path, default=None, help="repository root (default $LMS_CACHE/repository; LMS_CACHE defaults to ~/.cache/lms)")
    serve.add_argument("--http-port", type=_port, default=8000)
    serve.add_argument("--grpc-port", type=_port, default=8001)
    serve.add_argument("--metrics-port", type=_port, default=8002)
    serve.add_argument("--model-dir", type=Path, default=None, help="read the source model from this folder (pvc:// sources)")
    serve.add_argument("--ready-timeout", type=float, default=180.0, help="seconds to wait for the model to be ready")
    serve.add_argument("--log", type=Path, default=None, help="tritonserver log file (default: a temporary file)")
    serve.set_defaults(func=run_serve)

    infer = subparsers.add_parser("infer", help="send one inference request to a Triton endpoint")
    infer.add_argument("endpoint", metavar="ENDPOINT", help="host:port, http://host:port or grpc://host:port")
    infer.add_argument("--model", required=True, help="Triton model name (the resource's name)")
    infer.add_argument("--protocol", choices=("http", "grpc"), default=None, help="default: from ENDPOINT, else http")
    infer.add_argument("--text", action="append", default=[],
                       help="text to send (repeatable: one batch); goes to the server's <model>-text model")
    infer.add_argument("--tokens", action="store_true",
                       help="tokenise --text here (tokenizer from --tokenizer or --repository) and call the token-level model")
    infer.add_argument("--vector", default=None, help="comma-separated features for a classifier")
    infer.add_argument("--tokenizer", type=Path, default=None, help="folder holding tokenizer.json (implies --tokens)")
    infer.add_argument("--repository", type=Path, default=None, help="version folder (or root) to find <model>/1/tokenizer in (default: $LMS_CACHE/repository; LMS_CACHE defaults to ~/.cache/lms)")
    infer.add_argument("--max-length", type=int, default=128, help="truncate texts to this many tokens")
    infer.add_argument("--pad-to", type=int, default=None, help="pad to exactly this many tokens (default: length bucket)")
    infer.add_argument("--json", action="store_true", help="print the full output as JSON")
    infer.set_defaults(func=run_infer)

    bench = subparsers.add_parser("bench", help="gRPC load test with a concurrency sweep")
    bench.add_argument("endpoint", metavar="ENDPOINT", help="gRPC host:port (or grpc://host:port)")
    bench.add_argument("--model", required=True)
    bench.add_argument("--concurrency", type=_concurrencies, default=[1, 8, 32], help="comma-separated levels (default 1,8,32)")
    bench.add_argument("--requests", type=int, default=2000, help="request budget per level")
    bench.add_argument("--duration", type=float, default=30.0, help="time budget per level, seconds")
    bench.add_argument("--sequence-length", type=int, default=32, help="tokens per text request")
    bench.add_argument("--batch", type=int, default=1, help="items per request")
    bench.add_argument("--text", action="store_true",
                       help="load the text path (<model>-text: text of about --sequence-length tokens per item)")
    bench.add_argument("--connections", type=int, default=1,
                       help="spread the workers over this many gRPC connections (default 1)")
    bench.add_argument("--reconnect-seconds", type=float, default=None, metavar="S",
                       help="replace each connection after S seconds (old one closed once its requests answered), "
                            "so load behind a Service reaches replicas added later")
    bench.add_argument("--json", type=Path, default=None, help="write the results here")
    bench.set_defaults(func=run_bench)


def run_serve(args: argparse.Namespace) -> int:
    from lms_operator.serving.serve import serve
    from lms_operator.serving.triton import default_repository

    return serve(args.spec, args.repository or default_repository(), args.http_port, args.grpc_port, args.metrics_port,
                 model_dir=args.model_dir, ready_timeout=args.ready_timeout, log_path=args.log)


def run_infer(args: argparse.Namespace) -> int:
    from lms_operator.serving.infer import infer_command

    return infer_command(args)


def run_bench(args: argparse.Namespace) -> int:
    from lms_operator.serving.bench import bench_command

    return bench_command(args)
