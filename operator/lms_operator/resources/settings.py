"""Cluster-side settings the builders need besides the spec.

Filled from the operator's validated configuration (runtime/config.py), which documents each one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from lms_operator.modelrepo.templates import Template, load_templates


@dataclass(frozen=True)
class BuildSettings:
    image: str = "lms-operator:0.1.0"
    """Image of the compression Job: the operator's own image, which carries `lms compress`."""
    repository_mount: str = "/models"
    sources_mount: str = "/sources"
    job_deadline_seconds: int = 3600
    job_backoff_limit: int = 1
    job_ttl_seconds: int = 86400
    compression_cpu: str = "2"
    compression_memory: str = "6Gi"
    max_model_bytes: int | None = None
    """Largest source model the Job will read (LMS_MAX_MODEL_BYTES in the Job); None keeps the tool's default."""
    keda: bool = False
    """Use a KEDA ScaledObject for Triton metrics (set when the KEDA CRDs exist)."""
    prometheus_address: str = "http://prometheus-operated.monitoring.svc:9090"
    default_s3_secret: str | None = None
    """Secret (AWS_* keys) for s3:// sources and repositories that name none (the chart's s3.secret)."""
    image_pull_secrets: tuple[str, ...] = ()
    """Secrets (in each resource's namespace) the Job and Triton pods pull their images with."""
    templates: Mapping[str, Template] = field(default_factory=load_templates)
    """Serving templates by name: the package's, replaced or joined by --templates-dir's."""


def pull_secrets(settings: BuildSettings) -> dict[str, list[dict[str, str]]]:
    """The pod spec's imagePullSecrets, or nothing when none are configured."""
    return {"imagePullSecrets": [{"name": name} for name in settings.image_pull_secrets]} \
        if settings.image_pull_secrets else {}
