"""Autoscaling: a HorizontalPodAutoscaler on CPU, or a KEDA ScaledObject on Triton's own metrics.

cpu → HPA on CPU utilisation. queueLatency / inferenceRate → a KEDA ScaledObject whose
Prometheus queries read Triton's per-model metrics, selected by the pod's namespace and the
Triton model name (the resource's name: the token-level model every request, text ensemble or
not, goes through). Without KEDA no adapter serves those metrics to an HPA, so the operator
falls back to an HPA on CPU (CPU_FALLBACK_UTILIZATION) and says so, instead of rendering an HPA
that never scales. Both kinds carry the spec's scale-down stabilization; scale-up is immediate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lms_operator.api.spec import LargeModelService
from lms_operator.resources import meta
from lms_operator.resources.settings import BuildSettings

KEDA_API = "keda.sh/v1alpha1"
HPA_API = "autoscaling/v2"
HPA_KIND = "HorizontalPodAutoscaler"
SCALED_OBJECT_KIND = "ScaledObject"
CPU_FALLBACK_UTILIZATION = 80
"""Target CPU utilisation (%) of the HPA that stands in for a Triton metric while KEDA is absent."""
KEDA_MISSING = "KEDA is not installed; scaling on CPU until it is"
FALLBACK_ANNOTATION = "lms.dev/autoscaling-fallback"
SCALE_UP_PERIOD_SECONDS = 15
ACTIVITY_THRESHOLD = 1_000_000_000
"""Target of the scale-to-zero activity trigger: so large that it never asks for a second replica."""


@dataclass(frozen=True)
class AutoscalerPlan:
    """Which autoscaler a resource gets under the current cluster, and why (when not what it asked)."""
    api_version: str
    kind: str
    metric: str
    """The metric actually scaled on: the spec's, or cpu when falling back."""
    min_replicas: int
    fallback: str | None = None
    """Why the spec's metric or minReplicas is not honoured (None: it is)."""

    @property
    def scales_to_zero(self) -> bool:
        return self.kind == SCALED_OBJECT_KIND and self.min_replicas == 0


def plan_autoscaler(lms: LargeModelService, settings: BuildSettings) -> AutoscalerPlan:
    auto = lms.spec.autoscaling
    if auto.metric == "cpu":
        return AutoscalerPlan(HPA_API, HPA_KIND, "cpu", auto.min_replicas)
    if settings.keda:
        return AutoscalerPlan(KEDA_API, SCALED_OBJECT_KIND, auto.metric, auto.min_replicas)
    reason = KEDA_MISSING + (f" (metric {auto.metric} at {CPU_FALLBACK_UTILIZATION}% CPU"
                             + (", minReplicas 1 instead of 0)" if auto.min_replicas == 0 else ")"))
    return AutoscalerPlan(HPA_API, HPA_KIND, "cpu", max(1, auto.min_replicas), reason)


def stale_autoscaler(lms: LargeModelService, settings: BuildSettings) -> tuple[str, str, str] | None:
    """(apiVersion, kind, name) of the other autoscaler kind this resource may have left behind.

    Both share the server's name; KEDA's own HPA is named keda-hpa-<name> and never matches.
    No ScaledObject can exist while the API server does not serve keda.sh.
    """
    current = plan_autoscaler(lms, settings)
    if current.kind == SCALED_OBJECT_KIND:
        return HPA_API, HPA_KIND, meta.server_name(lms)
    return (KEDA_API, SCALED_OBJECT_KIND, meta.server_name(lms)) if settings.keda else None


def _behavior(lms: LargeModelService) -> dict[str, Any]:
    """Scale up at once (doubling every 15 s at most); scale down after the spec's stabilization."""
    return {
        "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
            {"type": "Percent", "value": 100, "periodSeconds": SCALE_UP_PERIOD_SECONDS}]},
        "scaleDown": {"stabilizationWindowSeconds": lms.spec.autoscaling.scale_down_stabilization_seconds},
    }


def _target(lms: LargeModelService) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": meta.server_name(lms)}


def build_hpa(lms: LargeModelService, key: str, settings: BuildSettings | None = None,
              owner: dict[str, Any] | None = None) -> dict[str, Any]:
    plan = plan_autoscaler(lms, settings or BuildSettings())
    target = lms.spec.autoscaling.target if plan.fallback is None else CPU_FALLBACK_UTILIZATION
    metadata = meta.metadata(lms, meta.server_name(lms), meta.COMPONENT_SERVER, key, owner)
    if plan.fallback is not None:
        metadata["annotations"] = {FALLBACK_ANNOTATION: plan.fallback}
    return {
        "apiVersion": HPA_API,
        "kind": HPA_KIND,
        "metadata": metadata,
        "spec": {
            "scaleTargetRef": _target(lms),
            "minReplicas": plan.min_replicas,
            "maxReplicas": lms.spec.autoscaling.max_replicas,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}}],
            "behavior": _behavior(lms),
        },
    }


def _selector(lms: LargeModelService) -> str:
    """Triton's series of this model: Prometheus adds the pod's namespace, Triton the model name."""
    return f'namespace="{lms.namespace}",model="{lms.name}"'


def prometheus_query(lms: LargeModelService) -> tuple[str, str]:
    """(PromQL, KEDA metricType) of the spec's Triton metric.

    queueLatency: queue time per successful request over the window (µs), one value for the whole
    model (Value: the HPA compares it with the target as is). inferenceRate: inferences/s of all
    pods (AverageValue: the HPA divides by the replicas).
    """
    sel, window = _selector(lms), lms.spec.autoscaling.window
    if lms.spec.autoscaling.metric == "queueLatency":
        return (f"sum(rate(nv_inference_queue_duration_us{{{sel}}}[{window}])) / "
                f"clamp_min(sum(rate(nv_inference_request_success{{{sel}}}[{window}])), 1)"), "Value"
    return f"sum(rate(nv_inference_count{{{sel}}}[{window}]))", "AverageValue"


def activity_query(lms: LargeModelService) -> str:
    """Successful requests per second over the window: above 0 means the model is in use."""
    return f"sum(rate(nv_inference_request_success{{{_selector(lms)}}}[{lms.spec.autoscaling.window}]))"


def _trigger(name: str, query: str, metric_type: str, threshold: int, address: str) -> dict[str, Any]:
    # activationThreshold 0: active (kept above zero, woken) whenever the value is above 0; an
    # idle model reads 0. ignoreNullValues: at zero replicas Triton has no series, which reads
    # as 0 (idle), not as a scaler error.
    return {"type": "prometheus", "name": name, "metricType": metric_type, "metadata": {
        "serverAddress": address, "query": query, "threshold": str(threshold), "activationThreshold": "0",
        "ignoreNullValues": "true"}}


def build_scaled_object(lms: LargeModelService, key: str, settings: BuildSettings,
                        owner: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ScaledObject; with minReplicas 0 a second trigger keeps any model with requests active,
    so that scale to zero happens only after cooldownSeconds without a single request."""
    auto = lms.spec.autoscaling
    query, metric_type = prometheus_query(lms)
    triggers = [_trigger(auto.metric, query, metric_type, auto.target, settings.prometheus_address)]
    if auto.min_replicas == 0 and auto.metric == "queueLatency":
        triggers.append(_trigger("activity", activity_query(lms), "AverageValue", ACTIVITY_THRESHOLD,
                                 settings.prometheus_address))
    return {
        "apiVersion": KEDA_API,
        "kind": SCALED_OBJECT_KIND,
        "metadata": meta.metadata(lms, meta.server_name(lms), meta.COMPONENT_SERVER, key, owner),
        "spec": {
            "scaleTargetRef": _target(lms),
            "minReplicaCount": auto.min_replicas,
            "maxReplicaCount": auto.max_replicas,
            "pollingInterval": auto.polling_seconds,
            "cooldownPeriod": auto.cooldown_seconds,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _behavior(lms)}},
            "triggers": triggers,
        },
    }


def build_autoscaler(lms: LargeModelService, key: str, settings: BuildSettings,
                     owner: dict[str, Any] | None = None) -> dict[str, Any]:
    if plan_autoscaler(lms, settings).kind == SCALED_OBJECT_KIND:
        return build_scaled_object(lms, key, settings, owner)
    return build_hpa(lms, key, settings, owner)
