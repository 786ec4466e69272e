"""The compression Job: runs `lms compress` for one version key, publishing into the repository."""
from __future__ import annotations

from typing import Any

from lms_operator.api.contract import DETERMINISTIC_EXIT_CODES
from lms_operator.api.spec import LargeModelService, cpu_cores
from lms_operator.modelrepo.assemble import resource_templates, templates_json
from lms_operator.resources import meta
from lms_operator.resources.meta import spec_json
from lms_operator.resources.credentials import job_env
from lms_operator.resources.pod_security import container_security_context, pod_security_context
from lms_operator.resources.server import GPU_RESOURCE, GPU_TOLERATION, _scheduling
from lms_operator.resources.settings import BuildSettings, pull_secrets
from lms_operator.resources.volumes import (REPOSITORY_VOLUME, SOURCE_VOLUME, pvc_source, repository_volume,
                                            scratch_volumes)

SCRATCH = "/var/lib/lms-scratch"
"""Writable scratch (HOME, TMPDIR) on a read-only root filesystem; not /tmp, so a model URI
under a host's /tmp keeps its meaning where the sandbox runs Jobs as local processes."""


def build_compression_job(lms: LargeModelService, key: str, settings: BuildSettings,
                          owner: dict[str, Any] | None = None, protect: tuple[str, ...] = ()) -> dict[str, Any]:
    """`protect`: versions serving or rolling out, which the Job's retention must keep."""
    out = lms.spec.repository.uri or settings.repository_mount  # an s3:// repository needs no volume
    templates = templates_json(resource_templates(settings.templates, lms))
    args = ["compress", "--spec-json", spec_json(lms), "--templates-json", templates, "--out", out, "--version-key", key]
    args += [f"--protect={version}" for version in sorted(set(protect) - {key})]
    volumes = [repository_volume(lms)] if lms.spec.repository.pvc else []
    mounts = [{"name": REPOSITORY_VOLUME, "mountPath": settings.repository_mount}] if volumes else []
    source = pvc_source(lms.spec.model.uri)
    if source is not None:
        claim, path = source
        volumes.append({"name": SOURCE_VOLUME, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": SOURCE_VOLUME, "mountPath": settings.sources_mount, "readOnly": True})
        args += ["--source-root", settings.sources_mount, "--model-dir", f"{settings.sources_mount}/{path}".rstrip("/")]
    scratch, scratch_mounts = scratch_volumes({"scratch": SCRATCH})
    labels = meta.labels(lms, meta.COMPONENT_COMPRESSION, key)
    env = [{"name": "HOME", "value": SCRATCH}, {"name": "TMPDIR", "value": SCRATCH},
           {"name": "LMS_COMPRESS_THREADS", "value": str(cpu_cores(settings.compression_cpu))}]
    if settings.max_model_bytes is not None:
        env.append({"name": "LMS_MAX_MODEL_BYTES", "value": str(settings.max_model_bytes)})
    env += job_env(lms, settings)  # by reference: the operator never reads the Secret
    container = {
        "name": "compress",
        "image": settings.image,
        "command": ["lms"],
        "args": args,
        "env": env,
        "resources": {"requests": {"cpu": settings.compression_cpu, "memory": settings.compression_memory},
                      "limits": {"cpu": settings.compression_cpu, "memory": settings.compression_memory}},
        "volumeMounts": mounts + scratch_mounts,
        "securityContext": container_security_context(),
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_scheduling: dict[str, Any] = {}
    gpus = lms.spec.compression.gpu
    if gpus:  # spec.compression.resources.gpu: on the serving GPU pool when serving is on GPUs too
        container["resources"]["limits"][GPU_RESOURCE] = gpus
        pod_scheduling = _scheduling(lms) if lms.spec.serving.device == "gpu" else {"tolerations": [GPU_TOLERATION]}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta.metadata(lms, meta.job_name(lms, key), meta.COMPONENT_COMPRESSION, key, owner),
        "spec": {
            "backoffLimit": settings.job_backoff_limit,
            # Bad input (2) and a failed quality gate (3) are deterministic: retrying only burns CPU.
            "podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": {
                "containerName": "compress", "operator": "In", "values": [int(code) for code in DETERMINISTIC_EXIT_CODES]}}]},
            "activeDeadlineSeconds": settings.job_deadline_seconds,
            "ttlSecondsAfterFinished": settings.job_ttl_seconds,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    **pull_secrets(settings),
                    "enableServiceLinks": False,
                    "securityContext": pod_security_context(),
                    "containers": [container],
                    "volumes": volumes + scratch,
                    **pod_scheduling,
                },
            },
        },
    }
