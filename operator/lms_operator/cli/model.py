"""`lms render`, `lms validate` and `lms crd`: the cluster-free view of a LargeModelService."""
from __future__ import annotations

import argparse
import json
import os
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    render = subparsers.add_parser("render", help="print every object the operator would create",
                                   description="Render each LargeModelService of a YAML file (other kinds beside "
                                               "them are skipped with a note); nothing is printed if one is invalid.")
    render.add_argument("spec", help="YAML file of one or more documents")
    render.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    render.add_argument("--image", help="compression image (default: $LMS_IMAGE or the operator's)")
    render.add_argument("--keda", action="store_true",
                        help="render as on a cluster that serves KEDA (a ScaledObject for Triton metrics; "
                             "without it the operator falls back to an HPA on CPU)")
    render.add_argument("--model-configs", action="store_true",
                        help="print the config.pbtxt of each model each resource would serve (serving templates, "
                             "spec.serving.config and the spec merged; -1 where only the exported model knows a "
                             "dimension) instead of the objects")
    render.set_defaults(func=run_render)

    validate = subparsers.add_parser("validate", help="check LargeModelService files; one line per problem",
                                     description="Check each LargeModelService of each file (other kinds are "
                                                 "skipped with a note); in a file of several documents a problem "
                                                 "names its document (1 is the first) and its name.")
    validate.add_argument("specs", nargs="+", metavar="spec", help="YAML file of one or more documents")
    validate.set_defaults(func=run_validate)

    crd = subparsers.add_parser("crd", help="print the CustomResourceDefinition")
    crd.set_defaults(func=run_crd)


def _report(error: Exception) -> None:
    from lms_operator.api.spec import SpecError

    assert isinstance(error, SpecError)
    prefix = f"{error.source}: " if error.source else ""
    for problem in error.problems:
        print(f"error: {prefix}{problem}", file=sys.stderr)


def _checked(path: str):  # type: ignore[no-untyped-def]
    """The file's verdict, its problems and skip notes already on stderr."""
    from lms_operator.api.documents import check_file

    verdict = check_file(path)
    for document in verdict.skipped:
        print(f"note: {document.skip_note}", file=sys.stderr)
    for error in verdict.errors:
        _report(error)
    return verdict


def run_render(args: argparse.Namespace) -> int:
    import dataclasses

    import yaml

    from lms_operator.resources.render import all_objects
    from lms_operator.runtime.config import ConfigError, build_settings_from_env

    verdict = _checked(args.spec)
    if not verdict.ok:
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
    if args.model_configs:
        return _print_model_configs([lms for _, lms in verdict.services], settings)
    objects = [obj for _, lms in verdict.services for obj in all_objects(lms, settings)]
    if args.output == "json":
        print(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2, sort_keys=True))
    else:
        print(yaml.safe_dump_all(objects, sort_keys=True, width=120), end="")
    return 0


def _print_model_configs(services: list, settings) -> int:  # type: ignore[no-untyped-def, type-arg]
    from lms_operator.modelrepo.assemble import preview_configs
    from lms_operator.modelrepo.config import render_config
    from lms_operator.modelrepo.templates import TemplateError

    for lms in services:
        try:
            configs = preview_configs(lms, settings.templates)
        except TemplateError as error:
            print(f"error: {lms.namespace}/{lms.name}: {error}", file=sys.stderr)
            return 2
        for config in configs:
            print(f"# {lms.namespace}/{lms.name}: {config.name}/config.pbtxt\n{render_config(config)}")
    return 0


def run_validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.specs:
        verdict = _checked(path)
        failed += not verdict.ok
        for document, lms in verdict.services:
            print(f"{document.source}: valid ({lms.namespace}/{lms.name})")
    return 2 if failed else 0


def run_crd(args: argparse.Namespace) -> int:
    from lms_operator.api.crd import render_crd

    print(render_crd(), end="")
    return 0
