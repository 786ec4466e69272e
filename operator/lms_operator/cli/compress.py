"""`lms compress` and `lms digest` (argparse only here; the work is imported when run)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compress", help="compress a model, gate it and publish a Triton repository version",
                              description="Load, prune, distil, export, quantize, gate and publish a LargeModelService's model.")
    p.add_argument("spec", nargs="?", help="LargeModelService YAML file")
    p.add_argument("--spec-json", help="the resource as JSON {apiVersion, kind, metadata, spec} (the Job's form)")
    p.add_argument("--out", required=True,
                   help="repository: a folder (ROOT/<namespace>/<name>/<version>) or s3://bucket/prefix")
    p.add_argument("--protect", action="append", default=[], metavar="KEY",
                   help="a version retention must keep (serving or rolling out); repeatable")
    p.add_argument("--model-dir", help="read the source model from this path (mounted pvc:// sources)")
    p.add_argument("--source-root", help="where the pvc:// source claim is mounted: --model-dir must resolve "
                                         "inside it, symlinks followed (else exit 2, InvalidSpec)")
    p.add_argument("--version-key", help="the version key the operator expects; a different one here exits 2")
    p.add_argument("--templates-json", help="serving templates as JSON {name: config.pbtxt text} (the operator's; "
                                           "default: the package's model-repo-templates)")
    p.set_defaults(func=run_compress)
    a = subparsers.add_parser("assemble", help="build the model repository Triton serves from a published version",
                              description="Link a published version's files into OUT and write each config.pbtxt "
                                          "from the serving templates and the spec (the Triton pod's init container).")
    a.add_argument("spec", nargs="?", help="LargeModelService YAML file")
    a.add_argument("--spec-json", help="the resource as JSON {apiVersion, kind, metadata, spec}")
    a.add_argument("--templates-json", help="serving templates as JSON {name: config.pbtxt text} (default: the package's)")
    a.add_argument("--version-dir", required=True, help="the published version (ROOT/<namespace>/<name>/<key>)")
    a.add_argument("--out", required=True, help="folder to fill; emptied first")
    a.set_defaults(func=run_assemble)
    d = subparsers.add_parser("digest", help="print the sha256 to pin in spec.model.sha256",
                              description="Digest of a model file, or of a folder's manifest of sorted '<sha256>  <path>' lines.")
    d.add_argument("path", help="model file or folder")
    d.set_defaults(func=run_digest)


def run_digest(args: argparse.Namespace) -> int:
    from lms_operator.compression.digest import path_sha256

    path = Path(args.path)
    if not path.exists():
        print(f"lms digest: {path}: no such file or folder", file=sys.stderr)
        return 2
    print(path_sha256(path))
    return 0


def _load(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from lms_operator.api.spec import SpecError, load_spec_file, parse_spec
    from lms_operator.compression.errors import InputError, InvalidSpec

    if bool(args.spec) == bool(args.spec_json):
        raise InputError("give either a spec file or --spec-json")
    try:
        if args.spec_json:
            try:
                manifest = json.loads(args.spec_json)
            except json.JSONDecodeError as exc:
                raise InvalidSpec(f"--spec-json: not valid JSON: {exc.msg} at position {exc.pos}") from None
            return parse_spec(manifest, "--spec-json"), None
        path = Path(args.spec)
        return load_spec_file(path), path.resolve().parent
    except SpecError as exc:
        raise InvalidSpec("; ".join(str(p) for p in exc.problems) or str(exc)) from None


def run_compress(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from lms_operator.api.contract import CompressionSummary, ExitCode
    from lms_operator.compression.errors import CompressionError
    from lms_operator.compression.publish import emit_summary

    summary = CompressionSummary()
    try:
        lms, spec_dir = _load(args)
        summary = CompressionSummary(model=lms.name)
        from lms_operator.compression.source import mounted_source

        model_dir = mounted_source(Path(args.model_dir), Path(args.source_root) if args.source_root else None) \
            if args.model_dir else None
        from lms_operator.compression.remote import compress_to

        emit_summary(compress_to(lms, args.out, spec_dir, model_dir, args.version_key, args.protect, _templates(args)))
        return ExitCode.OK
    except CompressionError as exc:
        message, code = str(exc), exc.exit_code
        summary = replace(exc.summary, model=exc.summary.model or summary.model, error=message)
    except Exception as exc:  # unexpected: still one line and a summary
        message, code = f"{type(exc).__name__}: {exc}".splitlines()[0], ExitCode.FAILED
        summary = replace(summary, error=message)
    print(f"lms compress: error: {message}", file=sys.stderr)
    emit_summary(summary)
    return int(code)


def _templates(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from lms_operator.compression.errors import InputError
    from lms_operator.modelrepo.assemble import templates_from_json
    from lms_operator.modelrepo.templates import TemplateError

    try:
        return templates_from_json(args.templates_json) if args.templates_json else None
    except TemplateError as exc:
        raise InputError(str(exc)) from None


def run_assemble(args: argparse.Namespace) -> int:
    from lms_operator.compression.errors import CompressionError
    from lms_operator.modelrepo.assemble import assemble_repository, job_templates
    from lms_operator.modelrepo.templates import TemplateError

    try:
        lms, _ = _load(args)
        models = assemble_repository(Path(args.version_dir), Path(args.out), lms, job_templates(lms, _templates(args)))
    except (CompressionError, TemplateError, OSError) as exc:
        print(f"lms assemble: error: {exc}", file=sys.stderr)
        return 2
    print(f"lms assemble: {', '.join(models)} in {args.out}")
    return 0
