"""`lms render`, `lms validate` and `lms crd`: the cluster-free view of a LargeModelService."""
from __future__ import annotations

import argparse
import json
import os
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    render = subparsers.add_parser("render", help="print every object the operator would create")
    render.add_argument("spec", help="LargeModelService YAML file")
    render.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    render.add_argument("--image", help="compression image (default: $LMS_IMAGE or the operator's)")
    render.add_argument("--keda", action="store_true",
                        help="render as on a cluster that serves KEDA (a ScaledObject for Triton metrics; "
                             "without it the operator falls back to an HPA on CPU)")
    render.set_defaults(func=run_render)

    validate = subparsers.add_parser("validate", help="check LargeModelService files; one line per problem")
    validate.add_argument("specs", nargs="+", metavar="spec")
    validate.set_defaults(func=run_validate)

    crd = subparsers.add_parser("crd", help="print the CustomResourceDefinition")
    crd.set_defaults(func=run_crd)


def _report(error: Exception) -> None:
    from lms_operator.api.spec import SpecError

    assert isinstance(error, SpecError)
    prefix = f"{error.source}: " if error.source else ""
    for problem in error.problems:
        print(f"error: {prefix}{problem}", file=sys.stderr)


def run_render(args: argparse.Namespace) -> int:
    import dataclasses

    import yaml

    from lms_operator.api.spec import SpecError, load_spec_file
    from lms_operator.resources.render import all_objects
    from lms_operator.runtime.config import ConfigError, build_settings_from_env

    try:
        lms = load_spec_file(args.spec)
    except SpecError as error:
        _report(error)
        return 2
    try:
        settings = build_settings_from_env(os.environ)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.image:
        settings = dataclasses.replace(settings, image=args.image)
    if args.keda:
        settings = dataclasses.replace(settings, keda=True)
    objects = all_objects(lms, settings)
    if args.output == "json":
        print(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2, sort_keys=True))
    else:
        print(yaml.safe_dump_all(objects, sort_keys=True, width=120), end="")
    return 0


def run_validate(args: argparse.Namespace) -> int:
    from lms_operator.api.spec import SpecError, load_spec_file

    failed = 0
    for path in args.specs:
        try:
            lms = load_spec_file(path)
        except SpecError as error:
            _report(error)
            failed += 1
        else:
            print(f"{path}: valid ({lms.namespace}/{lms.name})")
    return 2 if failed else 0


def run_crd(args: argparse.Namespace) -> int:
    from lms_operator.api.crd import render_crd

    print(render_crd(), end="")
    return 0
