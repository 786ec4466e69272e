"""The operator's configuration: flags and environment together, each bad value refused by name."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lms_operator.cli import build_parser
from lms_operator.resources.settings import BuildSettings
from lms_operator.runtime.config import (SETTINGS, ConfigError, OperatorConfig, build_settings_from_env,
                                         settings_table)


def config(argv: list[str], env: dict[str, str] | None = None) -> OperatorConfig:
    args = build_parser().parse_args(["operator", *argv])
    return OperatorConfig.from_sources(vars(args), env or {})


def test_defaults_match_the_build_settings() -> None:
    got = config(["-A"])
    assert got.clusterwide and got.namespaces == () and not got.standalone
    assert (got.resync_seconds, got.metrics_port, got.liveness_port, got.repository_root) == (60.0, 8080, 8081, None)
    assert got.keda_check_seconds == 30.0
    assert got.build_settings() == BuildSettings()
    assert got.build_settings(keda=True).keda


def test_flags_and_environment_together(tmp_path: Path) -> None:
    env = {"LMS_IMAGE": "registry.example/lms:1.2", "LMS_COMPRESSION_CPU": "500m", "LMS_COMPRESSION_MEMORY": "8Gi",
           "LMS_MAX_MODEL_BYTES": "1048576", "LMS_PROMETHEUS_ADDRESS": "http://prom.monitoring:9090",
           "LMS_REPOSITORY_ROOT": str(tmp_path), "LMS_RESYNC_SECONDS": "30", "LMS_METRICS_PORT": "9100"}
    got = config(["-n", "a", "--namespace", "b", "--standalone", "--metrics-port", "0", "--resync-seconds", "2.5"], env)
    assert got.namespaces == ("a", "b") and not got.clusterwide and got.standalone
    assert got.metrics_port == 0 and got.resync_seconds == 2.5  # a flag wins over its variable
    assert got.repository_root == tmp_path.resolve()
    assert got.build_settings() == BuildSettings(image="registry.example/lms:1.2", compression_cpu="500m",
                                                 compression_memory="8Gi", max_model_bytes=1048576,
                                                 prometheus_address="http://prom.monitoring:9090")


def test_keda_check_period_from_flag_or_environment() -> None:
    assert config(["-A"], {"LMS_KEDA_CHECK_SECONDS": "5"}).keda_check_seconds == 5.0
    assert config(["-A", "--keda-check-seconds", "2"], {"LMS_KEDA_CHECK_SECONDS": "5"}).keda_check_seconds == 2.0


def test_image_pull_secrets_are_a_comma_separated_list() -> None:
    got = config(["-A"], {"LMS_IMAGE_PULL_SECRETS": "regcred, mirror ,"})
    assert got.build_settings().image_pull_secrets == ("regcred", "mirror")


def test_an_empty_variable_counts_as_unset() -> None:
    assert config(["-A"], {"LMS_MAX_MODEL_BYTES": "", "LMS_REPOSITORY_ROOT": " "}).max_model_bytes is None


@pytest.mark.parametrize(("env", "message"), [
    ({"LMS_MAX_MODEL_BYTES": "abc"}, "LMS_MAX_MODEL_BYTES: not an integer (got 'abc')"),
    ({"LMS_MAX_MODEL_BYTES": "-5"}, "LMS_MAX_MODEL_BYTES: must be positive (got -5)"),
    ({"LMS_RESYNC_SECONDS": "-1"}, "LMS_RESYNC_SECONDS: must be positive (got -1.0)"),
    ({"LMS_RESYNC_SECONDS": "soon"}, "LMS_RESYNC_SECONDS: not a number (got 'soon')"),
    ({"LMS_RESYNC_SECONDS": "nan"}, "LMS_RESYNC_SECONDS: must be positive (got nan)"),
    ({"LMS_KEDA_CHECK_SECONDS": "0"}, "LMS_KEDA_CHECK_SECONDS: must be positive (got 0.0)"),
    ({"LMS_KEDA_CHECK_SECONDS": "often"}, "LMS_KEDA_CHECK_SECONDS: not a number (got 'often')"),
    ({"LMS_METRICS_PORT": "70000"}, "LMS_METRICS_PORT: not a port number (0-65535; 0 disables) (got 70000)"),
    ({"LMS_LIVENESS_PORT": "http"}, "LMS_LIVENESS_PORT: not an integer (got 'http')"),
    ({"LMS_COMPRESSION_CPU": "two"}, "LMS_COMPRESSION_CPU: not a Kubernetes quantity"),
    ({"LMS_COMPRESSION_MEMORY": "6 GB"}, "LMS_COMPRESSION_MEMORY: not a Kubernetes quantity"),
    ({"LMS_PROMETHEUS_ADDRESS": "prometheus:9090"}, "LMS_PROMETHEUS_ADDRESS: not an http(s) URL"),
    ({"LMS_IMAGE": "lms operator"}, "LMS_IMAGE: not an image reference"),
    ({"LMS_S3_SECRET": "S3 Keys"}, "LMS_S3_SECRET: not a Secret name"),
    ({"LMS_IMAGE_PULL_SECRETS": "regcred,Bad_Name"}, "LMS_IMAGE_PULL_SECRETS: not a Secret name"),
    ({"LMS_REPOSITORY_ROOT": "/nonexistent/lms"}, "LMS_REPOSITORY_ROOT: not a directory (got '/nonexistent/lms')"),
])
def test_a_bad_variable_is_refused_by_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        config(["-A"], env)
    assert message in str(error.value)


@pytest.mark.parametrize(("argv", "message"), [
    (["--resync-seconds", "-1"], "--resync-seconds: must be positive (got -1.0)"),
    (["--resync-seconds", "0"], "--resync-seconds: must be positive (got 0.0)"),
    (["--liveness-port", "-2"], "--liveness-port: not a port number"),
    (["--repository-root", "/nonexistent/lms"], "--repository-root: not a directory (got '/nonexistent/lms')"),
])
def test_a_bad_flag_is_refused_by_name(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        config(["-A", *argv], {"LMS_RESYNC_SECONDS": "5"})
    assert message in str(error.value)


def test_exactly_one_scope() -> None:
    with pytest.raises(ConfigError, match="exactly one of --namespace"):
        config([])
    with pytest.raises(ConfigError, match="exactly one of --namespace"):
        config(["-A", "-n", "a"])


def test_a_config_built_directly_is_checked_too() -> None:
    with pytest.raises(ConfigError, match="--resync-seconds: must be positive"):
        OperatorConfig(clusterwide=True, resync_seconds=-1)
    with pytest.raises(AttributeError):
        OperatorConfig(clusterwide=True).resync_seconds = 5  # type: ignore[misc]


def test_render_reads_the_same_variables_with_the_same_checks() -> None:
    assert build_settings_from_env({"LMS_IMAGE": "x:1"}).image == "x:1"
    with pytest.raises(ConfigError, match="LMS_MAX_MODEL_BYTES: not an integer"):
        build_settings_from_env({"LMS_MAX_MODEL_BYTES": "12GB"})


def test_every_setting_is_a_field_and_in_the_table() -> None:
    fields = set(OperatorConfig.__dataclass_fields__)
    assert {s.field for s in SETTINGS} == fields
    table = settings_table()
    for setting in SETTINGS:
        assert f"| {setting.field} |" in table and (setting.env is None or setting.env in table)


def _lms(*argv: str, env: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "lms_operator.cli", *argv], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def test_lms_operator_exits_2_on_a_bad_variable() -> None:
    done = _lms("operator", "-A", "--metrics-port", "0", env={"LMS_MAX_MODEL_BYTES": "abc"})
    assert done.returncode == 2
    assert "lms operator: LMS_MAX_MODEL_BYTES: not an integer (got 'abc')" in done.stderr


def test_lms_operator_help_shows_the_settings_table() -> None:
    done = _lms("operator", "--help")
    assert done.returncode == 0 and "| field | flag | env var | default | meaning |" in done.stdout
    assert "LMS_MAX_MODEL_BYTES" in done.stdout


def test_lms_operator_exits_2_on_a_bad_flag() -> None:
    done = _lms("operator", "-A", "--metrics-port", "x")
    assert done.returncode == 2 and "argument --metrics-port: not an integer (got 'x')" in done.stderr


def test_the_chart_passes_only_settings_the_operator_knows() -> None:
    """Every LMS_* variable and every flag the chart's Deployment gives `lms operator` is in SETTINGS."""
    import re

    template = (Path(__file__).resolve().parents[2] / "charts" / "lms-operator" / "templates" / "deployment.yaml").read_text()
    envs = set(re.findall(r"- name: (LMS_[A-Z0-9_]+)", template))
    flags = set(re.findall(r"^\s*- (--[a-z-]+)", template, re.MULTILINE))
    assert envs and flags
    assert envs <= {s.env for s in SETTINGS}
    assert flags <= {flag for s in SETTINGS for flag in s.flags}
