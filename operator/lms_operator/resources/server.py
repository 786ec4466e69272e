"""Triton serving objects: Deployment, Service and PodDisruptionBudget."""
from __future__ import annotations

from typing import Any

from lms_operator.api.spec import LargeModelService, Toleration
from lms_operator.api.version import serving_digest
from lms_operator.modelrepo.assemble import resource_templates, template_digests, templates_json
from lms_operator.modelrepo.layout import relative_version_path
from lms_operator.modelrepo.templates import overlay
from lms_operator.resources import meta
from lms_operator.resources.meta import spec_json
from lms_operator.resources.credentials import triton_env
from lms_operator.resources.pod_security import container_security_context, pod_security_context
from lms_operator.resources.settings import BuildSettings, pull_secrets
from lms_operator.resources.volumes import REPOSITORY_VOLUME, repository_volume, scratch_volumes
from lms_operator.storage.uri import parse_repository, triton_repository

ENDPOINT_VAR = "AWS_ENDPOINT_URL"

HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
EXIT_TIMEOUT_SECONDS = 10
"""Triton's --exit-timeout-secs: after SIGTERM it finishes in-flight requests for at most this long."""
MIN_GRACE_SECONDS = 30
RESPONSE_CACHE_BYTES = 128 << 20
"""Size of Triton's local response cache, from the pod's memory (resources.memory must leave room)."""
SERVING_VOLUME = "serving-repository"
SERVING_REPOSITORY = "/serving"
"""The model repository Triton reads on a claim: the version's files linked, configs built at pod start."""
SERVING_CONFIG_ANNOTATION = "serving.lms.dev/serving-config"
"""Digest of what shapes the served configs (templates, spec.serving.config, batch size, instances, threads)."""


def termination_grace_seconds(lms: LargeModelService) -> int:
    """The preStop pause, then Triton's exit timeout, with room to spare (never under 30 s)."""
    return max(MIN_GRACE_SECONDS, lms.spec.serving.drain_seconds + EXIT_TIMEOUT_SECONDS + 10)


def _lifecycle(lms: LargeModelService) -> dict[str, Any]:
    """A stopping pod sleeps before Triton gets SIGTERM: its endpoints are removed from the Service
    (and proxies) meanwhile, so a scale-down or rollout drops no request sent to it."""
    drain = lms.spec.serving.drain_seconds
    return {"lifecycle": {"preStop": {"sleep": {"seconds": drain}}}} if drain > 0 else {}


def triton_args(lms: LargeModelService, key: str, settings: BuildSettings) -> list[str]:
    if lms.spec.repository.uri:  # read straight from the bucket; the kubelet expands $(AWS_ENDPOINT_URL)
        repository = s3_version_repository(lms, key)
    else:  # what the model-config init container assembled over the claim's version
        repository = SERVING_REPOSITORY
    return [f"--model-repository={repository}", f"--http-port={HTTP_PORT}", f"--grpc-port={GRPC_PORT}",
            f"--metrics-port={METRICS_PORT}", "--strict-readiness=true", f"--exit-timeout-secs={EXIT_TIMEOUT_SECONDS}",
            "--log-verbose=0", *response_cache_args(lms, settings)]


def response_cache_args(lms: LargeModelService, settings: BuildSettings) -> list[str]:
    """Triton's local response cache, when the model's template or spec.serving.config enables it
    (a model's response_cache alone does nothing without the server's cache)."""
    template = resource_templates(settings.templates, lms)[lms.spec.serving.template_name].config()
    enabled = overlay(template, lms.spec.serving.config).response_cache.enable
    return [f"--cache-config=local,size={RESPONSE_CACHE_BYTES}"] if enabled else []


def model_config_container(lms: LargeModelService, key: str, settings: BuildSettings,
                           mounts: list[dict[str, Any]]) -> dict[str, Any]:
    """`lms assemble` in the operator's image: links the claim's version into SERVING_REPOSITORY and
    writes each config.pbtxt from the templates and the spec of now (modelrepo/assemble.py)."""
    templates = resource_templates(settings.templates, lms)
    version = f"{settings.repository_mount}/{relative_version_path(lms.namespace, lms.name, key)}"
    return {
        "name": "model-config",
        "image": settings.image,
        "command": ["lms"],
        "args": ["assemble", "--spec-json", spec_json(lms), "--templates-json", templates_json(templates),
                 "--version-dir", version, "--out", SERVING_REPOSITORY],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}},
        "volumeMounts": mounts,
        "securityContext": container_security_context(),
    }


def serving_config_digest(lms: LargeModelService, settings: BuildSettings) -> str:
    return serving_digest(lms, template_digests(resource_templates(settings.templates, lms)))


def serving_config_status(lms: LargeModelService, settings: BuildSettings) -> dict[str, str]:
    """status.servingConfig: the model's template (name, digest) and the served configs' digest."""
    name = lms.spec.serving.template_name
    return {"template": name, "templateDigest": settings.templates[name].digest,
            "digest": serving_config_digest(lms, settings)}


def s3_version_repository(lms: LargeModelService, key: str) -> str:
    """Triton's s3://$(AWS_ENDPOINT_URL)/bucket/prefix/<namespace>/<name>/<key> for an s3:// repository."""
    repo = parse_repository(lms.spec.repository.uri or "")
    return triton_repository(f"$({ENDPOINT_VAR})", repo.child(lms.namespace, lms.name, key))


def _toleration(t: Toleration) -> dict[str, Any]:
    entry = {"key": t.key, "operator": t.operator, "value": t.value, "effect": t.effect,
             "tolerationSeconds": t.toleration_seconds}
    return {k: v for k, v in entry.items() if v is not None}


def _scheduling(lms: LargeModelService) -> dict[str, Any]:
    serving = lms.spec.serving
    tolerations = [_toleration(t) for t in serving.tolerations]
    if serving.device == "gpu" and GPU_TOLERATION not in tolerations:
        tolerations.append(GPU_TOLERATION)
    scheduling: dict[str, Any] = {}
    if serving.node_selector:
        scheduling["nodeSelector"] = dict(sorted(serving.node_selector.items()))
    if tolerations:
        scheduling["tolerations"] = tolerations
    return scheduling


def _resources(lms: LargeModelService) -> dict[str, Any]:
    res = lms.spec.serving.resources
    amounts: dict[str, Any] = {"cpu": res.cpu, "memory": res.memory}
    if res.gpu:
        amounts[GPU_RESOURCE] = res.gpu
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "failureThreshold": failures,
            "timeoutSeconds": 2}


def build_deployment(lms: LargeModelService, key: str, settings: BuildSettings,
                     owner: dict[str, Any] | None = None) -> dict[str, Any]:
    name = meta.server_name(lms)
    on_claim = lms.spec.repository.pvc is not None  # an s3:// repository is read over the network
    scratch, scratch_mounts = scratch_volumes({"tmp": "/tmp", "shm": "/dev/shm",
                                               **({SERVING_VOLUME: SERVING_REPOSITORY} if on_claim else {})})
    repo_mounts = [{"name": REPOSITORY_VOLUME, "mountPath": settings.repository_mount, "readOnly": True}] if on_claim else []
    repo_volumes = [{**repository_volume(lms), "persistentVolumeClaim": {
        "claimName": lms.spec.repository.pvc, "readOnly": True}}] if on_claim else []
    serving_mounts = [m for m in scratch_mounts if m["name"] == SERVING_VOLUME]
    init = [model_config_container(lms, key, settings, repo_mounts + serving_mounts)] if on_claim else []
    container: dict[str, Any] = {
        "name": "triton",
        "image": lms.spec.serving.image,
        "command": ["tritonserver"],
        "args": triton_args(lms, key, settings),
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
                  {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "resources": _resources(lms),
        "startupProbe": _probe("/v2/health/ready", 5, 120),
        "readinessProbe": _probe("/v2/health/ready", 5, 3),
        "livenessProbe": _probe("/v2/health/live", 10, 3),
        **_lifecycle(lms),
        "volumeMounts": repo_mounts + [{**m, "readOnly": True} if m["name"] == SERVING_VOLUME else m for m in scratch_mounts],
        "securityContext": container_security_context(),
    }
    if env := triton_env(lms, settings):  # credentials by reference; the operator never reads them
        container["env"] = env
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        **pull_secrets(settings),
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": termination_grace_seconds(lms),
        "securityContext": pod_security_context(),
        **({"initContainers": init} if init else {}),
        "containers": [container],
        "volumes": repo_volumes + scratch,
        **_scheduling(lms),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta.metadata(lms, name, meta.COMPONENT_SERVER, key, owner),
        "spec": {
            "selector": {"matchLabels": meta.selector_labels(lms, meta.COMPONENT_SERVER)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": lms.spec.serving.progress_deadline_seconds,
            "template": {
                "metadata": {
                    "labels": meta.labels(lms, meta.COMPONENT_SERVER, key),
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT),
                                    "prometheus.io/path": "/metrics",
                                    SERVING_CONFIG_ANNOTATION: serving_config_digest(lms, settings)},
                },
                "spec": pod_spec,
            },
        },
    }


def build_service(lms: LargeModelService, key: str, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta.metadata(lms, meta.server_name(lms), meta.COMPONENT_SERVER, key, owner),
        "spec": {
            "type": "ClusterIP",
            "selector": meta.selector_labels(lms, meta.COMPONENT_SERVER),
            "ports": [{"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                      {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP",
                       "appProtocol": "grpc"},
                      {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"}],
        },
    }


def build_pdb(lms: LargeModelService, key: str, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    """At most one Triton pod voluntarily disrupted at a time (never blocks drains of a single replica)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta.metadata(lms, meta.server_name(lms), meta.COMPONENT_SERVER, key, owner),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": meta.selector_labels(lms, meta.COMPONENT_SERVER)}},
    }


def endpoints(lms: LargeModelService) -> dict[str, str]:
    host = f"{meta.server_name(lms)}.{lms.namespace}.svc"
    return {"http": f"http://{host}:{HTTP_PORT}", "grpc": f"{host}:{GRPC_PORT}"}
