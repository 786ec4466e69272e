"""Autoscaling: a HorizontalPodAutoscaler, or a KEDA ScaledObject for Triton's own metrics.

cpu → HPA on CPU utilisation. queueLatency / inferenceRate → a KEDA ScaledObject
reading Triton's Prometheus metrics when KEDA is installed, otherwise an HPA on a
Pods metric served by a Prometheus adapter (metric names below).
"""
from __future__ import annotations

from typing import Any

from lms_operator.api.spec import LargeModelService
from lms_operator.resources import meta
from lms_operator.resources.settings import BuildSettings

PODS_METRICS = {"queueLatency": "lms_triton_queue_latency_us", "inferenceRate": "lms_triton_inferences_per_second"}


def _target(lms: LargeModelService) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": meta.server_name(lms)}


def build_hpa(lms: LargeModelService, key: str, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    auto = lms.spec.autoscaling
    if auto.metric == "cpu":
        metric = {"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": auto.target}}}
    else:
        metric = {"type": "Pods", "pods": {"metric": {"name": PODS_METRICS[auto.metric]},
                                           "target": {"type": "AverageValue", "averageValue": str(auto.target)}}}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta.metadata(lms, meta.server_name(lms), meta.COMPONENT_SERVER, key, owner),
        "spec": {
            "scaleTargetRef": _target(lms),
            "minReplicas": auto.min_replicas,
            "maxReplicas": auto.max_replicas,
            "metrics": [metric],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


def _prometheus_query(lms: LargeModelService) -> tuple[str, str]:
    """(PromQL, KEDA metricType) for Triton's metrics of this model."""
    selector = f'namespace="{lms.namespace}",model="{lms.name}"'
    if lms.spec.autoscaling.metric == "queueLatency":
        query = (f"sum(rate(nv_inference_queue_duration_us{{{selector}}}[1m])) / "
                 f"clamp_min(sum(rate(nv_inference_request_success{{{selector}}}[1m])), 1)")
        return query, "Value"
    return f"sum(rate(nv_inference_count{{{selector}}}[1m]))", "AverageValue"


def build_scaled_object(lms: LargeModelService, key: str, settings: BuildSettings,
                        owner: dict[str, Any] | None = None) -> dict[str, Any]:
    auto = lms.spec.autoscaling
    query, metric_type = _prometheus_query(lms)
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": meta.metadata(lms, meta.server_name(lms), meta.COMPONENT_SERVER, key, owner),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": meta.server_name(lms)},
            "minReplicaCount": auto.min_replicas,
            "maxReplicaCount": auto.max_replicas,
            "triggers": [{"type": "prometheus", "metricType": metric_type, "metadata": {
                "serverAddress": settings.prometheus_address, "query": query, "threshold": str(auto.target)}}],
        },
    }


def build_autoscaler(lms: LargeModelService, key: str, settings: BuildSettings,
                     owner: dict[str, Any] | None = None) -> dict[str, Any]:
    if lms.spec.autoscaling.metric != "cpu" and settings.keda:
        return build_scaled_object(lms, key, settings, owner)
    return build_hpa(lms, key, owner)
