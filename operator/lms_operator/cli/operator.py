"""`lms operator`: run the kopf operator for some namespaces or the whole cluster."""
from __future__ import annotations

import argparse
import os
import sys


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from lms_operator.runtime.config import add_arguments, settings_table

    parser = subparsers.add_parser(
        "operator", help="Run the LargeModelService operator (kopf).",
        description="Watch LargeModelService resources: compress, publish and serve them.",
        epilog="Settings (a flag wins over its environment variable; an empty variable counts as unset):\n\n"
               + settings_table(), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(func=run_operator)


def run_operator(args: argparse.Namespace) -> int:
    import logging

    from lms_operator.runtime.config import ConfigError, OperatorConfig

    try:
        config = OperatorConfig.from_sources(vars(args), os.environ)
    except ConfigError as error:
        print(f"lms operator: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Per-event "Handler succeeded" lines and health-probe access logs drown the useful ones.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

    import kopf

    from lms_operator.handlers import main as _handlers  # noqa: F401  (registers the handlers)
    from lms_operator.runtime import metrics

    metrics.serve(config.metrics_port)
    liveness = f"http://0.0.0.0:{config.liveness_port}/healthz" if config.liveness_port else None
    kopf.run(clusterwide=config.clusterwide, namespaces=list(config.namespaces), liveness_endpoint=liveness,
             standalone=True if config.standalone else None, memo=kopf.Memo(config=config))
    return 0
