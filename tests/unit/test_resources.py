"""Builders produce valid, restricted, deterministic Kubernetes objects for both pools."""
from __future__ import annotations

import copy
import json
from typing import Any

import kubernetes_validate
import pytest

from lms_operator.api.spec import parse_spec
from lms_operator.modelrepo.assemble import default_version_key
from lms_operator.resources import meta
from lms_operator.resources.autoscaling import (CPU_FALLBACK_UTILIZATION, FALLBACK_ANNOTATION, KEDA_MISSING,
                                                build_autoscaler, plan_autoscaler, stale_autoscaler)
from lms_operator.resources.render import all_objects
from lms_operator.resources.settings import BuildSettings
from tests.unit.conftest import load_example

K8S_VERSION = "1.36.0"
SETTINGS = BuildSettings()
OWNER = meta.owner_reference("serving.lms.dev/v1alpha1", "LargeModelService", "minilm", "1234")


def objects(example: str, **overrides: Any) -> dict[str, dict[str, Any]]:
    manifest = load_example(example)
    manifest["spec"].update(overrides)
    built = all_objects(parse_spec(manifest), SETTINGS, OWNER)
    return {obj["kind"]: obj for obj in built}


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


@pytest.mark.parametrize("example", ["minilm-cpu.yaml", "minilm-gpu.yaml", "digits-distill.yaml"])
def test_objects_pass_kubernetes_schema(example: str) -> None:
    for obj in all_objects(parse_spec(load_example(example)), SETTINGS, OWNER):
        if obj["apiVersion"].startswith("keda.sh"):
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_cpu_render_kinds_and_order() -> None:
    built = all_objects(parse_spec(load_example("minilm-cpu.yaml")), SETTINGS)
    assert [o["kind"] for o in built] == ["Job", "Deployment", "Service", "HorizontalPodAutoscaler",
                                          "PodDisruptionBudget"]
    assert all("ownerReferences" not in o["metadata"] for o in built)


@pytest.mark.parametrize("kind", ["Job", "Deployment"])
def test_pods_are_restricted(kind: str) -> None:
    spec = pod_spec(objects("minilm-gpu.yaml")[kind])
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    for container in spec["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["readOnlyRootFilesystem"] is True
        assert "limits" in container["resources"]


def test_job_runs_compress_without_credentials() -> None:
    job = objects("minilm-cpu.yaml")["Job"]
    container = pod_spec(job)["containers"][0]
    assert container["command"] == ["lms"] and container["args"][0] == "compress"
    assert container["args"][container["args"].index("--out") + 1] == "/models"
    assert job["spec"]["backoffLimit"] == 1 and job["spec"]["activeDeadlineSeconds"] > 0
    assert pod_spec(job)["restartPolicy"] == "Never"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "1234"


def test_pvc_source_is_mounted_read_only() -> None:
    job = objects("minilm-cpu.yaml", model={"uri": "pvc://sources/minilm", "format": "huggingface"})["Job"]
    container = pod_spec(job)["containers"][0]
    assert container["args"][-2:] == ["--model-dir", "/sources/minilm"]
    volume = next(v for v in pod_spec(job)["volumes"] if v["name"] == "source")
    assert volume["persistentVolumeClaim"] == {"claimName": "sources", "readOnly": True}


def test_cpu_deployment() -> None:
    lms = parse_spec(load_example("minilm-cpu.yaml"))
    deployment = objects("minilm-cpu.yaml")["Deployment"]
    spec = pod_spec(deployment)
    container = spec["containers"][0]
    assert "--model-repository=/serving" in container["args"]
    init = spec["initContainers"][0]
    assert init["command"] == ["lms"] and init["args"][0] == "assemble"
    args = dict(zip(init["args"][1::2], init["args"][2::2]))
    assert args["--version-dir"] == f"/models/default/minilm/{default_version_key(lms)}"
    assert args["--out"] == "/serving" and set(json.loads(args["--templates-json"])) == {
        "onnx-cpu", "text-tokenizer", "text-labels", "text-ensemble"}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/models"]["readOnly"] and "/serving" in mounts, "Triton follows the links into the claim"
    assert {m["mountPath"] for m in init["volumeMounts"]} == {"/models", "/serving"}
    assert {p["containerPort"] for p in container["ports"]} == {8000, 8001, 8002}
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert spec["nodeSelector"] == {"lms.dev/pool": "cpu"} and "tolerations" not in spec
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "replicas" not in deployment["spec"], "replicas belong to the autoscaler"


def test_triton_pods_drain_before_sigterm_and_are_scrapeable() -> None:
    deployment = objects("minilm-cpu.yaml")["Deployment"]
    template = deployment["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert len(annotations.pop("serving.lms.dev/serving-config")) == 16
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": "8002", "prometheus.io/path": "/metrics"}
    container = template["spec"]["containers"][0]
    assert {"name": "metrics", "containerPort": 8002, "protocol": "TCP"} in container["ports"]
    assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": 10}}}
    grace = template["spec"]["terminationGracePeriodSeconds"]
    assert grace >= 10 + 10 and "--exit-timeout-secs=10" in container["args"]  # pause, then Triton's exit
    long = objects("minilm-cpu.yaml", serving={"drainSeconds": 60})["Deployment"]["spec"]["template"]["spec"]
    assert long["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"] == 60
    assert long["terminationGracePeriodSeconds"] > 60 + 10
    none = objects("minilm-cpu.yaml", serving={"drainSeconds": 0})["Deployment"]["spec"]["template"]["spec"]
    assert "lifecycle" not in none["containers"][0] and none["terminationGracePeriodSeconds"] == 30


def test_gpu_deployment_lands_on_gpu_pool() -> None:
    spec = pod_spec(objects("minilm-gpu.yaml")["Deployment"])
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["nodeSelector"] == {"lms.dev/pool": "gpu"}


def test_gpu_toleration_added_when_missing() -> None:
    manifest = load_example("minilm-gpu.yaml")
    manifest["spec"]["serving"]["nodePool"] = {}
    spec = pod_spec(all_objects(parse_spec(manifest), SETTINGS)[1])
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_service_ports_and_selector() -> None:
    built = objects("minilm-cpu.yaml")
    service, deployment = built["Service"], built["Deployment"]
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert set(service["spec"]["selector"].items()) <= set(deployment["spec"]["template"]["metadata"]["labels"].items())


def test_hpa_on_cpu_with_the_specs_bounds_and_behavior() -> None:
    hpa = objects("minilm-cpu.yaml")["HorizontalPodAutoscaler"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert hpa["spec"]["behavior"]["scaleDown"] == {"stabilizationWindowSeconds": 300}
    assert hpa["spec"]["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert "annotations" not in hpa["metadata"]
    short = objects("minilm-cpu.yaml", autoscaling={"maxReplicas": 3, "scaleDownStabilizationSeconds": 30})
    assert short["HorizontalPodAutoscaler"]["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 30


def test_without_keda_a_triton_metric_falls_back_to_cpu_and_says_so() -> None:
    manifest = load_example("minilm-gpu.yaml")
    manifest["spec"]["autoscaling"].update(minReplicas=0, scaleDownStabilizationSeconds=45)
    lms = parse_spec(manifest)
    plan = plan_autoscaler(lms, BuildSettings(keda=False))
    assert (plan.kind, plan.metric, plan.min_replicas) == ("HorizontalPodAutoscaler", "cpu", 1)
    assert plan.fallback is not None and plan.fallback.startswith(KEDA_MISSING)
    assert "minReplicas 1 instead of 0" in plan.fallback and not plan.scales_to_zero
    hpa = build_autoscaler(lms, "k", BuildSettings(keda=False), OWNER)
    assert hpa["kind"] == "HorizontalPodAutoscaler" and hpa["spec"]["minReplicas"] == 1
    metric = hpa["spec"]["metrics"][0]
    assert metric == {"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": CPU_FALLBACK_UTILIZATION}}}
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 45
    assert hpa["metadata"]["annotations"][FALLBACK_ANNOTATION] == plan.fallback
    kubernetes_validate.validate(hpa, K8S_VERSION, strict=True)
    # No HPA asks for a Pods metric that no adapter serves, whatever the spec says.
    for example in ("minilm-cpu.yaml", "minilm-gpu.yaml", "digits-distill.yaml"):
        for settings in (BuildSettings(keda=False), BuildSettings(keda=True)):
            built = build_autoscaler(parse_spec(load_example(example)), "k", settings)
            if built["kind"] == "HorizontalPodAutoscaler":
                assert [m["type"] for m in built["spec"]["metrics"]] == ["Resource"]


def queue_latency(**autoscaling: Any) -> Any:
    manifest = load_example("minilm-gpu.yaml")
    manifest["spec"]["autoscaling"].update(autoscaling)
    return parse_spec(manifest)


def test_keda_scaled_object_on_queue_latency() -> None:
    lms = queue_latency(scaleDownStabilizationSeconds=30, cooldownSeconds=30, pollingSeconds=5, window="30s")
    scaled = build_autoscaler(lms, "k", BuildSettings(keda=True, prometheus_address="http://prom:9090"), OWNER)
    assert scaled["kind"] == "ScaledObject" and scaled["metadata"]["name"] == "minilm-gpu-triton"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "minilm-gpu-triton"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 8)
    assert (spec["pollingInterval"], spec["cooldownPeriod"]) == (5, 30)
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 30
    assert behavior["scaleUp"] == {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
        {"type": "Percent", "value": 100, "periodSeconds": 15}]}
    [trigger] = spec["triggers"]
    sel = 'namespace="default",model="minilm-gpu"'
    assert trigger["metricType"] == "Value"
    assert trigger["metadata"] == {
        "serverAddress": "http://prom:9090",
        "query": f"sum(rate(nv_inference_queue_duration_us{{{sel}}}[30s])) / "
                 f"clamp_min(sum(rate(nv_inference_request_success{{{sel}}}[30s])), 1)",
        "threshold": "5000", "activationThreshold": "0", "ignoreNullValues": "true"}
    cpu = parse_spec(load_example("minilm-cpu.yaml"))
    assert build_autoscaler(cpu, "k", BuildSettings(keda=True))["kind"] == "HorizontalPodAutoscaler"


def test_scale_to_zero_keeps_a_model_with_requests_active() -> None:
    lms = queue_latency(minReplicas=0, window="30s")
    assert plan_autoscaler(lms, BuildSettings(keda=True)).scales_to_zero
    scaled = build_autoscaler(lms, "k", BuildSettings(keda=True))
    assert scaled["spec"]["minReplicaCount"] == 0
    latency, activity = scaled["spec"]["triggers"]
    assert activity["name"] == "activity" and activity["metricType"] == "AverageValue"
    assert activity["metadata"]["query"] == \
        'sum(rate(nv_inference_request_success{namespace="default",model="minilm-gpu"}[30s]))'
    assert activity["metadata"]["activationThreshold"] == "0"
    assert int(activity["metadata"]["threshold"]) >= 10**9  # never asks for a second replica itself
    rate = build_autoscaler(queue_latency(minReplicas=0, metric="inferenceRate", target=200), "k",
                            BuildSettings(keda=True))
    [trigger] = rate["spec"]["triggers"]
    assert trigger["metricType"] == "AverageValue" and trigger["metadata"]["threshold"] == "200"
    assert trigger["metadata"]["query"].startswith("sum(rate(nv_inference_count{")


def test_the_other_autoscaler_kind_is_the_stale_one() -> None:
    gpu, cpu = queue_latency(), parse_spec(load_example("minilm-cpu.yaml"))
    assert stale_autoscaler(gpu, BuildSettings(keda=True)) == \
        ("autoscaling/v2", "HorizontalPodAutoscaler", "minilm-gpu-triton")
    assert stale_autoscaler(gpu, BuildSettings(keda=False)) is None  # keda.sh not served: nothing to delete
    assert stale_autoscaler(cpu, BuildSettings(keda=True)) == ("keda.sh/v1alpha1", "ScaledObject", "minilm-triton")
    assert stale_autoscaler(cpu, BuildSettings(keda=False)) is None


def test_names_are_dns_labels_with_hash_when_long() -> None:
    long = meta.child_name("a" * 45, "compress-0123456789")
    assert len(long) <= 63 and long.endswith("-compress-0123456789")
    assert long != meta.child_name("a" * 44 + "b", "compress-0123456789")
    assert meta.child_name("minilm", "triton") == "minilm-triton"


def test_version_key_changes_with_compression_not_with_scaling() -> None:
    manifest = load_example("minilm-cpu.yaml")
    key = default_version_key(parse_spec(manifest))
    assert key == default_version_key(parse_spec(copy.deepcopy(manifest)))
    scaled = copy.deepcopy(manifest)
    scaled["spec"]["autoscaling"]["maxReplicas"] = 8
    assert default_version_key(parse_spec(scaled)) == key
    gate = copy.deepcopy(manifest)
    gate["spec"]["compression"]["qualityGate"]["min"] = 0.98
    assert default_version_key(parse_spec(gate)) != key


SERVING_CHANGES = [
    ("instances", lambda s: s.update(instances=2)),
    ("cpu request (threads)", lambda s: s["resources"].update(cpu="4")),
    ("maxBatchSize", lambda s: s.update(maxBatchSize=8)),
    ("dynamic batching", lambda s: s.update(dynamicBatching={"maxQueueDelayMicroseconds": 100})),
    ("override", lambda s: s.update(config={"response_cache": {"enable": True}})),
]


@pytest.mark.parametrize(("what", "change"), SERVING_CHANGES, ids=[c[0] for c in SERVING_CHANGES])
def test_a_serving_change_keeps_the_version_on_a_claim_and_rolls_the_pods(what: str, change: Any) -> None:
    manifest = load_example("minilm-cpu.yaml")
    before = {o["kind"]: o for o in all_objects(parse_spec(manifest), SETTINGS, OWNER)}
    changed = copy.deepcopy(manifest)
    change(changed["spec"]["serving"])
    after = {o["kind"]: o for o in all_objects(parse_spec(changed), SETTINGS, OWNER)}
    assert after["Job"]["metadata"]["name"] == before["Job"]["metadata"]["name"], "no new compression Job"
    digest = "serving.lms.dev/serving-config"
    template = [d["spec"]["template"] for d in (before["Deployment"], after["Deployment"])]
    assert template[0]["metadata"]["annotations"][digest] != template[1]["metadata"]["annotations"][digest]
    assert template[0]["spec"]["initContainers"] != template[1]["spec"]["initContainers"]


def test_a_serving_change_on_an_s3_repository_is_a_new_version() -> None:
    """Triton reads config.pbtxt straight from the bucket there: the config is part of the version."""
    manifest = load_example("minilm-s3.yaml")
    key = default_version_key(parse_spec(manifest))
    manifest["spec"]["serving"]["instances"] = 2
    assert default_version_key(parse_spec(manifest)) != key
    assert "initContainers" not in pod_spec(objects("minilm-s3.yaml")["Deployment"])


def test_a_changed_template_changes_the_pods_not_the_version() -> None:
    from dataclasses import replace

    from lms_operator.modelrepo.templates import Template

    lms = parse_spec(load_example("minilm-cpu.yaml"))
    warm = Template("onnx-cpu", SETTINGS.templates["onnx-cpu"].text + "response_cache { enable: true }\n")
    custom = replace(SETTINGS, templates={**SETTINGS.templates, "onnx-cpu": warm})
    before, after = all_objects(lms, SETTINGS), all_objects(lms, custom)
    assert before[0]["metadata"]["name"] == after[0]["metadata"]["name"], "the same compression Job"
    assert before[1]["spec"]["template"] != after[1]["spec"]["template"]


def test_labels_carry_version_and_component() -> None:
    for obj in objects("minilm-cpu.yaml").values():
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "lms-operator"
        assert labels["app.kubernetes.io/part-of"] == "lms"
        assert len(labels["serving.lms.dev/version"]) == 16


def test_model_size_limit_reaches_the_job() -> None:
    lms = parse_spec(load_example("minilm-cpu.yaml"))
    job = all_objects(lms, BuildSettings(max_model_bytes=1 << 30))[0]
    env = {e["name"]: e["value"] for e in pod_spec(job)["containers"][0]["env"]}
    assert env["LMS_MAX_MODEL_BYTES"] == str(1 << 30)
    assert "LMS_MAX_MODEL_BYTES" not in str(all_objects(lms, SETTINGS)[0])


def test_image_pull_secrets_reach_the_job_and_triton_pods() -> None:
    from dataclasses import replace

    manifest = load_example("minilm-cpu.yaml")
    lms = parse_spec(manifest)
    built = {o["kind"]: o for o in all_objects(lms, replace(SETTINGS, image_pull_secrets=("regcred",)), OWNER)}
    for kind in ("Job", "Deployment"):
        assert pod_spec(built[kind])["imagePullSecrets"] == [{"name": "regcred"}], kind
    assert "imagePullSecrets" not in pod_spec(objects("minilm-cpu.yaml")["Deployment"])


def test_deterministic_failures_are_not_retried() -> None:
    job = objects("minilm-cpu.yaml")["Job"]
    rule = job["spec"]["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob"
    assert rule["onExitCodes"] == {"containerName": "compress", "operator": "In", "values": [2, 3]}
