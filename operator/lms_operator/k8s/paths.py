"""REST paths of the kinds the operator touches (a fixed table: no discovery round-trips)."""
from __future__ import annotations

from urllib.parse import quote

from lms_operator.api import schema

PLURALS: dict[tuple[str, str], str] = {
    ("v1", "Pod"): "pods",
    ("v1", "Service"): "services",
    ("v1", "PersistentVolumeClaim"): "persistentvolumeclaims",
    ("v1", "Event"): "events",
    ("apps/v1", "Deployment"): "deployments",
    ("batch/v1", "Job"): "jobs",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobjects",
    (schema.API_VERSION, schema.KIND): schema.PLURAL,
}


def collection(api_version: str, kind: str, namespace: str) -> str:
    """/api/v1/namespaces/ns/pods or /apis/group/version/namespaces/ns/plural."""
    try:
        plural = PLURALS[(api_version, kind)]
    except KeyError:
        raise ValueError(f"unknown kind {kind} in {api_version}") from None
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{prefix}/namespaces/{quote(namespace, safe='')}/{plural}"


def item(api_version: str, kind: str, namespace: str, name: str) -> str:
    return f"{collection(api_version, kind, namespace)}/{quote(name, safe='')}"
