"""The operator's configuration: one frozen, validated value, built once at start-up.

Every setting is described once, in SETTINGS: its field, its command-line flag, its environment
variable, its default and its meaning. `lms operator` registers its flags from that table and
prints it in its help; `OperatorConfig.from_sources` reads the flags and the environment through
it. A flag given on the command line wins over its environment variable, which wins over the
default; an empty environment variable counts as unset. A bad value is refused with the flag or
variable it came from (`LMS_MAX_MODEL_BYTES: not an integer (got 'abc')`).
"""
from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lms_operator.api.schema import QUANTITY_PATTERN
from lms_operator.modelrepo.templates import TemplateError, load_templates
from lms_operator.resources.settings import BuildSettings


class ConfigError(ValueError):
    """A setting's value is refused; the message names the flag or environment variable."""


# Parsers turn a flag's or variable's text into the value (ValueError: what is wrong with it);
# checks return what is wrong with a parsed value, or None.

def _integer(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError("not an integer") from None


def _seconds(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError("not a number") from None
    return value


def _path(text: str) -> Path:
    return Path(text)


def _port(value: Any) -> str | None:
    return None if 0 <= value <= 65535 else "not a port number (0-65535; 0 disables)"


def _positive(value: Any) -> str | None:
    if value is None:
        return None
    return None if math.isfinite(value) and value > 0 else "must be positive"


def _quantity(value: str) -> str | None:
    return None if re.fullmatch(QUANTITY_PATTERN, value) else "not a Kubernetes quantity (e.g. 2, 500m, 6Gi)"


def _http_url(value: str) -> str | None:
    return None if re.fullmatch(r"https?://\S+", value) else "not an http(s) URL"


def _image(value: str) -> str | None:
    return None if value and not any(ch.isspace() for ch in value) else "not an image reference"


def _directory(value: Path | None) -> str | None:
    return None if value is None or value.is_dir() else "not a directory"


def _templates(value: Path | None) -> str | None:
    if problem := _directory(value):
        return problem
    try:
        load_templates(value)
    except (TemplateError, OSError) as error:
        return f"a serving template is not valid: {error}"
    return None


def _secret_name(value: str | None) -> str | None:
    ok = value is None or (len(value) <= 253 and re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", value))
    return None if ok else "not a Secret name (lower-case DNS subdomain)"


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _secret_names(value: tuple[str, ...]) -> str | None:
    return next((problem for problem in map(_secret_name, value) if problem), None)


def _namespaces(value: tuple[str, ...]) -> str | None:
    return None if all(value) else "an empty namespace name"


@dataclass(frozen=True)
class Setting:
    """One row of the settings table."""
    field: str
    flags: tuple[str, ...]
    """Command-line flags (empty: environment only)."""
    env: str | None
    """Environment variable (None: flag only)."""
    default: Any
    meaning: str
    parse: Callable[[str], Any] = str
    check: Callable[[Any], str | None] = lambda value: None
    kind: str = "value"
    """value: one argument; switch: a flag without argument; list: a repeatable flag."""

    @property
    def source(self) -> str:
        """How the table names the setting to a reader: its flag, or its variable."""
        return self.flags[0] if self.flags else str(self.env)


_BUILD = BuildSettings()

SETTINGS: tuple[Setting, ...] = (
    Setting("namespaces", ("--namespace", "-n"), None, (),
            "Namespace to watch (repeatable). Exactly one of --namespace and --all-namespaces.",
            check=_namespaces, kind="list"),
    Setting("clusterwide", ("--all-namespaces", "-A"), None, False, "Watch every namespace.", kind="switch"),
    Setting("standalone", ("--standalone",), None, False, "Ignore peering (single replica).", kind="switch"),
    Setting("repository_root", ("--repository-root",), "LMS_REPOSITORY_ROOT", None,
            "Folder where repository claims are readable as DIR/<namespace>/<claim>/ (cache hits without a Job).",
            parse=_path, check=_directory),
    Setting("resync_seconds", ("--resync-seconds",), "LMS_RESYNC_SECONDS", 60.0,
            "Period of the level-based resync sweep over every known resource.", parse=_seconds, check=_positive),
    Setting("keda_check_seconds", ("--keda-check-seconds",), "LMS_KEDA_CHECK_SECONDS", 30.0,
            "How often API discovery is asked whether KEDA (keda.sh/v1alpha1) is served (also at each resync); "
            "when the answer changes, every resource switches between ScaledObject and HPA without a restart.",
            parse=_seconds, check=_positive),
    Setting("metrics_port", ("--metrics-port",), "LMS_METRICS_PORT", 8080,
            "Prometheus /metrics port (0 disables).", parse=_integer, check=_port),
    Setting("liveness_port", ("--liveness-port",), "LMS_LIVENESS_PORT", 8081,
            "Liveness /healthz port (0 disables).", parse=_integer, check=_port),
    Setting("image", (), "LMS_IMAGE", _BUILD.image,
            "Image of the compression Job (the operator's own image, which carries `lms compress`).", check=_image),
    Setting("prometheus_address", (), "LMS_PROMETHEUS_ADDRESS", _BUILD.prometheus_address,
            "Prometheus that KEDA queries for Triton metrics.", check=_http_url),
    Setting("compression_cpu", (), "LMS_COMPRESSION_CPU", _BUILD.compression_cpu,
            "CPU request and limit of the compression Job.", check=_quantity),
    Setting("compression_memory", (), "LMS_COMPRESSION_MEMORY", _BUILD.compression_memory,
            "Memory request and limit of the compression Job.", check=_quantity),
    Setting("max_model_bytes", (), "LMS_MAX_MODEL_BYTES", _BUILD.max_model_bytes,
            "Largest source model the Job reads, in bytes (unset: the Job's own default, 20 GiB).",
            parse=_integer, check=_positive),
    Setting("default_s3_secret", (), "LMS_S3_SECRET", _BUILD.default_s3_secret,
            "Secret (AWS_* keys) that Jobs and Triton pods use, by reference, for s3:// sources and repositories "
            "of resources naming none (the operator never reads it).", check=_secret_name),
    Setting("templates_dir", ("--templates-dir",), "LMS_TEMPLATES_DIR", None,
            "Folder of serving templates (NAME.pbtxt, the chart's modelRepoTemplates ConfigMap); each replaces the "
            "package's template of that name or adds one. Every template is parsed at start-up.",
            parse=_path, check=_templates),
    Setting("image_pull_secrets", (), "LMS_IMAGE_PULL_SECRETS", _BUILD.image_pull_secrets,
            "Comma-separated Secrets the compression Job and Triton pods pull images with (each must exist in the "
            "resource's namespace; the chart passes its imagePullSecrets).", parse=_names, check=_secret_names),
)
BY_FIELD = {setting.field: setting for setting in SETTINGS}
BUILD_FIELDS = ("image", "prometheus_address", "compression_cpu", "compression_memory", "max_model_bytes",
                "default_s3_secret", "image_pull_secrets")


def _refuse(setting: Setting, source: str, problem: str, value: Any) -> ConfigError:
    shown = str(value) if isinstance(value, Path) else value
    return ConfigError(f"{source}: {problem} (got {shown!r})")


def resolve(setting: Setting, flags: Mapping[str, Any], environ: Mapping[str, str]) -> Any:
    """The setting's value: its flag when given, else its environment variable, else its default."""
    given = flags.get(setting.field)
    if setting.kind == "list":
        value, source = tuple(given or ()), setting.source
    elif setting.kind == "switch":
        value, source = bool(given), setting.source
    elif given is not None:
        value, source = given, setting.source
    elif setting.env and environ.get(setting.env, "").strip():
        text, source = environ[setting.env], setting.env
        try:
            value = setting.parse(text)
        except ValueError as error:
            raise _refuse(setting, source, str(error), text) from None
    else:
        return setting.default
    problem = setting.check(value)
    if problem:
        raise _refuse(setting, source, problem, value)
    return value


@dataclass(frozen=True)
class OperatorConfig:
    """Everything the operator process is told at start-up (see SETTINGS for each field)."""
    clusterwide: bool = False
    namespaces: tuple[str, ...] = ()
    standalone: bool = False
    repository_root: Path | None = None
    resync_seconds: float = 60.0
    keda_check_seconds: float = 30.0
    metrics_port: int = 8080
    liveness_port: int = 8081
    image: str = _BUILD.image
    prometheus_address: str = _BUILD.prometheus_address
    compression_cpu: str = _BUILD.compression_cpu
    compression_memory: str = _BUILD.compression_memory
    max_model_bytes: int | None = _BUILD.max_model_bytes
    default_s3_secret: str | None = _BUILD.default_s3_secret
    image_pull_secrets: tuple[str, ...] = _BUILD.image_pull_secrets
    templates_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.clusterwide == bool(self.namespaces):
            raise ConfigError("exactly one of --namespace (repeatable) and --all-namespaces is required")
        for setting in SETTINGS:
            value = getattr(self, setting.field)
            problem = setting.check(value)
            if problem:
                raise _refuse(setting, setting.source, problem, value)

    @classmethod
    def from_sources(cls, flags: Mapping[str, Any], environ: Mapping[str, str]) -> "OperatorConfig":
        """The configuration from parsed flags (argparse's namespace as a dict) and the environment."""
        values = {setting.field: resolve(setting, flags, environ) for setting in SETTINGS}
        if values["repository_root"] is not None:
            values["repository_root"] = values["repository_root"].resolve()
        return cls(**values)

    def build_settings(self, *, keda: bool = False) -> BuildSettings:
        """What the builders need besides the spec; `keda` when the API server serves keda.sh."""
        return BuildSettings(keda=keda, templates=load_templates(self.templates_dir),
                             **{name: getattr(self, name) for name in BUILD_FIELDS})


def build_settings_from_env(environ: Mapping[str, str]) -> BuildSettings:
    """The builders' settings from the environment alone (`lms render`), validated as the operator's."""
    return BuildSettings(templates=load_templates(resolve(BY_FIELD["templates_dir"], {}, environ)),
                         **{name: resolve(BY_FIELD[name], {}, environ) for name in BUILD_FIELDS})


def _argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{error} (got {text!r})") from None
    convert.__name__ = parse.__name__.lstrip("_")
    return convert


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register every setting that has a flag; the values are checked by OperatorConfig.from_sources."""
    for setting in SETTINGS:
        if not setting.flags:
            continue
        env = f"env {setting.env}; " if setting.env else ""
        default = "unset" if setting.default is None else setting.default
        help_text = f"{setting.meaning} [{env}default {default}]" if setting.kind == "value" else setting.meaning
        if setting.kind == "switch":
            parser.add_argument(*setting.flags, dest=setting.field, action="store_true", help=help_text)
        elif setting.kind == "list":
            parser.add_argument(*setting.flags, dest=setting.field, action="append", metavar="NS", help=help_text)
        else:
            parser.add_argument(*setting.flags, dest=setting.field, default=None, type=_argument_type(setting.parse),
                                metavar=setting.flags[0].lstrip("-").split("-")[-1].upper(), help=help_text)


def settings_table() -> str:
    """The settings as a Markdown table (field, flag, env var, default, meaning)."""
    rows = ["| field | flag | env var | default | meaning |", "|---|---|---|---|---|"]
    for s in SETTINGS:
        flags = ", ".join(f"`{flag}`" for flag in s.flags) or "—"
        env = f"`{s.env}`" if s.env else "—"
        rows.append(f"| {s.field} | {flags} | {env} | {s.default!r} | {s.meaning} |")
    return "\n".join(rows)
