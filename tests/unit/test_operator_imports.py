"""The operator process stays light: importing its handlers never pulls in torch."""
from __future__ import annotations

import subprocess
import sys


def test_operator_handlers_do_not_import_torch() -> None:
    code = ("import sys; import lms_operator.handlers.main, lms_operator.cli.operator, lms_operator.cli;"
            "lms_operator.cli.build_parser();"
            "print(sorted(m for m in ('torch', 'onnxruntime', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_operator_command_is_registered() -> None:
    from lms_operator.cli import build_parser

    args = build_parser().parse_args(["operator", "--namespace", "a", "--namespace", "b", "--metrics-port", "0"])
    assert args.namespaces == ["a", "b"] and not args.clusterwide and args.metrics_port == 0


def test_operator_refuses_missing_repository_root(tmp_path: object) -> None:
    done = subprocess.run([sys.executable, "-m", "lms_operator.cli", "operator", "-A", "--repository-root",
                           "/nonexistent/lms"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "--repository-root: not a directory (got '/nonexistent/lms')" in done.stderr


def test_only_watch_handlers_so_kopf_writes_nothing_into_resources() -> None:
    """Change-detecting handlers (create/update/resume/delete) make kopf patch an annotation per
    change and add finalizers; the operator is driven by watch events alone."""
    import kopf

    import lms_operator.handlers.main  # noqa: F401  (registers the handlers)
    from lms_operator.handlers.settings import configure

    registry = kopf.get_default_registry()
    assert registry._changing.get_all_handlers() == []
    assert {h.id for h in registry._watching.get_all_handlers()} >= {"lms_changed", "deployment_changed", "job_changed"}
    settings = kopf.OperatorSettings()
    configure(settings, clusterwide=False, standalone=False)
    assert settings.persistence.diffbase_storage.build(body=kopf.Body({"spec": {"model": {}}})) == {}
    assert settings.peering.name == "lms-operator" and not settings.peering.mandatory
    assert settings.watching.client_timeout > settings.watching.server_timeout
