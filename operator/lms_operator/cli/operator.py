"""`lms operator`: run the kopf operator for some namespaces or the whole cluster."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("operator", help="Run the LargeModelService operator (kopf).",
                                   description="Watch LargeModelService resources: compress, publish and serve them.")
    scope = parser.add_mutually_exclusive_group(required=True)
    scope.add_argument("--namespace", "-n", action="append", dest="namespaces", metavar="NS",
                       help="Namespace to watch (repeatable).")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="Watch every namespace.")
    parser.add_argument("--repository-root", type=Path, default=os.environ.get("LMS_REPOSITORY_ROOT") or None,
                        help="Folder where repository claims are readable as DIR/<namespace>/<claim>/ "
                             "(cache hits without a Job; env LMS_REPOSITORY_ROOT).")
    parser.add_argument("--metrics-port", type=int, default=8080, help="Prometheus /metrics port (0 disables).")
    parser.add_argument("--liveness-port", type=int, default=8081, help="Liveness /healthz port (0 disables).")
    parser.add_argument("--resync-seconds", type=float, default=60.0, help="Period of the level-based sweep.")
    parser.add_argument("--standalone", action="store_true", help="Ignore peering (single replica).")
    parser.set_defaults(func=run_operator)


def run_operator(args: argparse.Namespace) -> int:
    import logging

    if args.repository_root is not None and not Path(args.repository_root).is_dir():
        print(f"lms operator: --repository-root {args.repository_root}: not a directory", file=sys.stderr)
        return 2
    if args.resync_seconds <= 0:
        print("lms operator: --resync-seconds must be positive", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Per-event "Handler succeeded" lines and health-probe access logs drown the useful ones.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

    import kopf

    from lms_operator.handlers import main as _handlers  # noqa: F401  (registers the handlers)
    from lms_operator.handlers import metrics
    from lms_operator.handlers.options import OPTIONS

    OPTIONS.clusterwide = bool(args.all_namespaces)
    OPTIONS.namespaces = tuple(args.namespaces or ())
    OPTIONS.standalone = bool(args.standalone)
    OPTIONS.repository_root = Path(args.repository_root).resolve() if args.repository_root else None
    OPTIONS.resync_seconds = float(args.resync_seconds)
    metrics.serve(args.metrics_port)
    liveness = f"http://0.0.0.0:{args.liveness_port}/healthz" if args.liveness_port else None
    kopf.run(clusterwide=OPTIONS.clusterwide, namespaces=list(OPTIONS.namespaces), liveness_endpoint=liveness,
             standalone=True if args.standalone else None)
    return 0
