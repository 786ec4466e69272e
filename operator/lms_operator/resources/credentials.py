"""Storage credentials for the Job and Triton, always by reference (secretKeyRef).

The operator never reads a Secret: it only names one in the pod spec, and the kubelet
resolves it. A model source's keys reach the Job with the LMS_SOURCE_ prefix, so source and
repository can live in different buckets under different keys.
"""
from __future__ import annotations

from typing import Any

from lms_operator.api.spec import LargeModelService
from lms_operator.resources.settings import BuildSettings

S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ENDPOINT_URL")
HF_KEYS = ("HF_TOKEN", "HF_ENDPOINT")
SOURCE_PREFIX = "LMS_SOURCE_"
"""Must match lms_operator.storage.s3.SOURCE_ENV_PREFIX (the Job's reader)."""
TRITON_REQUIRED = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")
"""Triton addresses an S3-compatible server as s3://host:port/...: the endpoint must be there."""


def secret_env(secret: str, keys: tuple[str, ...], prefix: str = "",
               required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """One env entry per key, each a secretKeyRef; keys not required are optional."""
    return [{"name": prefix + key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key,
                                                                  "optional": key not in required}}}
            for key in keys]


def repository_secret(lms: LargeModelService, settings: BuildSettings) -> str | None:
    """The Secret for an s3:// repository: the resource's own, else the operator's default."""
    if lms.spec.repository.uri is None:
        return None
    return lms.spec.repository.secret_ref or settings.default_s3_secret


def job_env(lms: LargeModelService, settings: BuildSettings) -> list[dict[str, Any]]:
    """Credentials for the compression Job: the repository's as AWS_*, the source's prefixed."""
    env: list[dict[str, Any]] = []
    repo_secret = repository_secret(lms, settings)
    if repo_secret:
        env += secret_env(repo_secret, S3_KEYS)
    uri = lms.spec.model.uri
    source_secret = lms.spec.model.secret_ref
    if uri.startswith("s3://"):
        source_secret = source_secret or settings.default_s3_secret
        if source_secret:
            env += secret_env(source_secret, S3_KEYS, SOURCE_PREFIX)
    elif uri.startswith("hf://") and source_secret:
        env += secret_env(source_secret, HF_KEYS)
    return env


def triton_env(lms: LargeModelService, settings: BuildSettings) -> list[dict[str, Any]]:
    """Credentials Triton needs to read an s3:// repository ([] for a claim)."""
    secret = repository_secret(lms, settings)
    if not secret:
        return []
    return secret_env(secret, S3_KEYS, required=TRITON_REQUIRED)
