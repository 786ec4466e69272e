"""Crash consistency and API faults, against the real control plane.

* The operator is killed at every step boundary of a reconcile (LMS_FAULT_EXIT_AT, see
  lms_operator.reconcile.faults) one after another on the same resource, restarted each time,
  and must end with exactly one compression Job for the version, one Deployment, no orphans,
  and the resource Ready.
* The API server and etcd are stopped and started while the operator reconciles; the same
  operator process must recover (its watches too) without a restart.
* 429 (with Retry-After) and 500 answers are injected by lms_harness.faultproxy in front of the
  API server; the operator must back off and still converge.

The operator runs as a local process under its own ServiceAccount's RBAC (the proxy
impersonates system:serviceaccount:lms-system:lms-operator). The compression is the small
digits classifier (int8 only) so the whole module takes a few minutes.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lms_harness import faultproxy as fp
from lms_harness.operator import OperatorProcess

from .conftest import Cluster, K8s, Kubectl, _tools_bin, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
TEACHER = ROOT / "examples" / "models" / "digits-teacher" / "model.pt"
GROUP, VERSION, PLURAL = "serving.lms.dev", "v1alpha1", "largemodelservices"
CLAIM = "lms-models"
OPERATOR_USER = "system:serviceaccount:lms-system:lms-operator"
FAULT_EXIT = 86  # lms_operator.reconcile.faults.EXIT_CODE
STEPS = ("before_job_create", "after_job_create", "after_job_finished",
         "before_deployment_apply", "after_deployment_apply", "before_status_write")


def lms_manifest(name: str) -> dict[str, Any]:
    """The digits classifier, int8 only (fast), served on the CPU pool from the shared claim."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "LargeModelService", "metadata": {"name": name},
        "spec": {
            "model": {"uri": f"file://{TEACHER}", "format": "torchscript", "task": "tabular-classification"},
            "compression": {"quantization": {"mode": "dynamic", "perChannel": True},
                            "qualityGate": {"metric": "accuracy", "min": 0.9, "samples": 128}},
            "serving": {"device": "cpu", "nodePool": {"nodeSelector": {"lms.dev/pool": "cpu"}},
                        "resources": {"cpu": "1", "memory": "1Gi"}, "maxBatchSize": 16},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 1},
            "repository": {"pvc": CLAIM},
        },
    }


def start_operator(kubeconfig: Path, namespace: str, repo_root: Path, log_path: Path,
                   fault: str | None = None) -> OperatorProcess:
    """`lms operator` for one namespace as a local process (optionally with a crash point); not awaited."""
    extra_env = {"LMS_FAULT_EXIT_AT": fault} if fault else {}
    return OperatorProcess(kubeconfig, log_path, (namespace,), repo_root, standalone=True, resync_seconds=15,
                           extra_env=extra_env).start(ready_timeout=None)


@pytest.fixture(scope="module")
def prepared(cluster: Cluster, kubectl: Kubectl) -> Cluster:
    """CRDs and the operator's RBAC (ServiceAccount lms-operator in lms-system) installed."""
    for crd in sorted((ROOT / "crds").glob("*.yaml")):
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    kubectl("wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=60s")
    kubectl("create", "namespace", "lms-system", check=False)
    for manifest in sorted((ROOT / "deploy" / "rbac").glob("*.yaml")):
        kubectl("apply", "-f", str(manifest))
    return cluster


@pytest.fixture
def proxy(prepared: Cluster) -> Iterator[Any]:
    """A fault proxy (nothing armed) that forwards as the operator's ServiceAccount."""
    p = fp.FaultProxy(fp.upstream_from_kubeconfig(prepared.kubeconfig), impersonate=OPERATOR_USER)
    p.start_in_thread()
    yield p
    p.stop()


@pytest.fixture
def operator_kubeconfig(proxy: Any, prepared: Cluster, tmp_path: Path) -> Path:
    import yaml

    path = tmp_path / "operator-kubeconfig"
    path.write_text(yaml.safe_dump(fp.client_kubeconfig(prepared.kubeconfig, proxy.url)))
    return path


@pytest.fixture
def claim(namespace: str, k8s: K8s) -> str:
    k8s.core.create_namespaced_persistent_volume_claim(namespace, {
        "metadata": {"name": CLAIM},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    return CLAIM


def repo_root(cluster: Cluster) -> Path:
    """What the operator reads as ROOT/<namespace>/<claim>/: the pod runner's PVC folders."""
    if cluster.state_dir is None:
        pytest.skip("the operator reads the repository through the pod runner's PVC folders (local cluster only)")
    root = cluster.state_dir / "pvc"
    root.mkdir(parents=True, exist_ok=True)
    return root


# -- observations -----------------------------------------------------------------------------

def get_lms(k8s: K8s, ns: str, name: str) -> dict[str, Any]:
    return k8s.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)  # type: ignore[no-any-return]


def phase(k8s: K8s, ns: str, name: str) -> str:
    return (get_lms(k8s, ns, name).get("status") or {}).get("phase") or ""


def children(k8s: K8s, ns: str) -> dict[str, list[dict[str, Any]]]:
    """Every child kind in the namespace, as API-shaped dicts (camelCase)."""
    from kubernetes import client

    lists = {"deployments": k8s.apps.list_namespaced_deployment(ns),
             "services": k8s.core.list_namespaced_service(ns),
             "horizontalpodautoscalers": client.AutoscalingV2Api(k8s.client).list_namespaced_horizontal_pod_autoscaler(ns),
             "poddisruptionbudgets": client.PolicyV1Api(k8s.client).list_namespaced_pod_disruption_budget(ns),
             "jobs": k8s.batch.list_namespaced_job(ns)}
    return {plural: k8s.client.sanitize_for_serialization(found)["items"] for plural, found in lists.items()}


def check_invariants(k8s: K8s, ns: str, name: str, at: str) -> dict[str, list[dict[str, Any]]]:
    """At most one Job and one Deployment; every child controlled by the resource (no orphans)."""
    uid = get_lms(k8s, ns, name)["metadata"]["uid"]
    kids = children(k8s, ns)
    assert len(kids["jobs"]) <= 1, f"{at}: {len(kids['jobs'])} compression Jobs"
    assert len(kids["deployments"]) <= 1, f"{at}: {len(kids['deployments'])} Deployments"
    for plural, items in kids.items():
        for item in items:
            refs = [r for r in item["metadata"].get("ownerReferences") or [] if r.get("controller")]
            assert [r["uid"] for r in refs] == [uid], f"{at}: {plural}/{item['metadata']['name']} is not owned by {name}"
    return kids


def pods_of_jobs(k8s: K8s, ns: str) -> int:
    return len(k8s.core.list_namespaced_pod(ns, label_selector="job-name").items)


# -- tests --------------------------------------------------------------------------------------

def test_crash_at_every_reconcile_step_converges(prepared: Cluster, k8s: K8s, namespace: str, claim: str,
                                                 operator_kubeconfig: Path, tmp_path: Path) -> None:
    root = repo_root(prepared)
    name = "crash"
    log = tmp_path / "operator.log"
    k8s.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, lms_manifest(name))
    for step in STEPS:
        op = start_operator(operator_kubeconfig, namespace, root, log, fault=step)
        code = op.wait_exit(timeout=420 if step == "after_job_finished" else 120)
        out = op.output()
        op.stop()
        assert code == FAULT_EXIT and f"fault point {step}" in out, \
            f"operator exited {code} without reaching {step}; log tail:\n{out[-2000:]}"
        kids = check_invariants(k8s, namespace, name, f"after a crash at {step}")
        if step == "before_job_create":
            assert kids["jobs"] == [], "a Job exists although the operator died before creating it"
        if step in ("after_job_create", "after_job_finished"):
            assert len(kids["jobs"]) == 1
        if step == "before_deployment_apply":
            assert kids["deployments"] == [], "a Deployment exists although the operator died before applying it"
        if step == "after_deployment_apply":
            assert len(kids["deployments"]) == 1
    op = start_operator(operator_kubeconfig, namespace, root, log)
    try:
        wait_for(lambda: phase(k8s, namespace, name) == "Ready", 300, f"{name} Ready after the last restart")
        kids = check_invariants(k8s, namespace, name, "at Ready")
        assert len(kids["jobs"]) == 1 and len(kids["deployments"]) == 1
        assert pods_of_jobs(k8s, namespace) == 1, "the compression ran more than once"
        key = get_lms(k8s, namespace, name)["status"]["modelVersion"]
        versions = list((root / namespace / claim / namespace / name).iterdir())
        assert [v.name for v in versions] == [key] and (versions[0] / ".complete").is_file()
        assert op.proc.poll() is None
    finally:
        op.stop()


def _control_plane(cluster: Cluster, action: str) -> None:
    bin_dir = _tools_bin()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "KWOK_WORKDIR": os.environ.get("KWOK_WORKDIR", str(Path.home() / ".cache" / "lms" / "kwok"))}
    done = subprocess.run([str(Path(bin_dir) / "kwokctl"), action, "cluster", "--name", str(cluster.name)],
                          env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"kwokctl {action} cluster failed: {done.stderr[-2000:]}"


def _api_up(k8s: K8s) -> bool:
    k8s.core.list_namespace(limit=1, _request_timeout=5)
    return True


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real published version (`lms compress` of the digits spec, named tmpl), made once."""
    from lms_operator.api.spec import parse_spec
    from lms_operator.modelrepo.assemble import default_version_key
    from lms_operator.modelrepo.layout import is_complete, version_dir

    out = tmp_path_factory.mktemp("template")
    doc = {**lms_manifest("tmpl"), "metadata": {"name": "tmpl", "namespace": "tmpl"}}
    done = subprocess.run([str(Path(sys.executable).parent / "lms"), "compress", "--spec-json", json.dumps(doc),
                           "--out", str(out / "repo")], capture_output=True, text=True, timeout=600, cwd=out)
    assert done.returncode == 0, f"lms compress failed: {done.stderr[-2000:]}"
    folder = version_dir(out / "repo", "tmpl", "tmpl", default_version_key(parse_spec(doc)))
    assert is_complete(folder)
    return folder


def publish_local(k8s: K8s, template: Path, root: Path, ns: str, name: str) -> None:
    """Publish the version `name` will ask for (a cache hit for the operator): the template's files,
    the model folder and config renamed, the completion marker last. The key comes from the spec
    as the API server stores it (a dry-run create applies the CRD's defaults)."""
    from lms_operator.api.spec import parse_spec
    from lms_operator.modelrepo.assemble import default_version_key
    from lms_operator.modelrepo.layout import COMPLETE_MARKER, version_dir

    stored = k8s.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, lms_manifest(name), dry_run="All")
    key = default_version_key(parse_spec({**lms_manifest(name), "metadata": {"name": name, "namespace": ns},
                                  "spec": stored["spec"]}))
    dest = version_dir(root / ns / CLAIM, ns, name, key)
    shutil.copytree(template / "tmpl", dest / name)
    config = dest / name / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "tmpl"', f'name: "{name}"'))
    shutil.copy2(template / "report.json", dest / "report.json")
    (dest / COMPLETE_MARKER).touch()


def test_operator_recovers_from_api_server_restart(prepared: Cluster, k8s: K8s, namespace: str, claim: str,
                                                   proxy: Any, operator_kubeconfig: Path, template: Path,
                                                   tmp_path: Path) -> None:
    if not prepared.local:
        pytest.skip("stopping the API server and etcd needs the local control plane")
    root = repo_root(prepared)
    for name in ("before", "after"):
        publish_local(k8s, template, root, namespace, name)
    # Two failed Deployment applies keep the first resource's reconcile in its retry loop, so the
    # outage hits the operator mid-reconcile (and before any Triton pod is starting).
    held = proxy.inject(500, count=2, method="PATCH", path=f"^/apis/apps/v1/namespaces/{namespace}/deployments/before-triton")
    op = start_operator(operator_kubeconfig, namespace, root, tmp_path / "operator.log")
    try:
        wait_for(op.ready, 60, "the operator to start")
        k8s.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, lms_manifest("before"))
        wait_for(lambda: held.injected >= 1, 60, "the operator's first Deployment apply")
        _control_plane(prepared, "stop")   # etcd, kube-apiserver and the controllers, mid-reconcile
        time.sleep(10)
        assert op.proc.poll() is None, "the operator died while the API server was away"
        _control_plane(prepared, "start")
        wait_for(lambda: _api_up(k8s), 120, "the API server back")
        wait_for(lambda: phase(k8s, namespace, "before") == "Ready", 300, "the resource created before the outage Ready")
        # the watch must have come back by itself: a resource created now is handled too
        k8s.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, lms_manifest("after"))
        wait_for(lambda: phase(k8s, namespace, "after") == "Ready", 300, "the resource created after the outage Ready")
        kids = children(k8s, namespace)
        assert sorted(d["metadata"]["name"] for d in kids["deployments"]) == ["after-triton", "before-triton"]
        assert kids["jobs"] == [], "a published version needs no Job"
        assert op.proc.poll() is None, "the operator had to restart"
    finally:
        op.stop()


def test_backs_off_on_429_and_500_then_converges(prepared: Cluster, k8s: K8s, namespace: str, claim: str,
                                                 proxy: Any, operator_kubeconfig: Path, template: Path,
                                                 tmp_path: Path) -> None:
    root = repo_root(prepared)
    name = "flaky"
    publish_local(k8s, template, root, namespace, name)
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"
    deploy = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}-triton"
    service = f"/api/v1/namespaces/{namespace}/services/{name}-triton"
    rules = [proxy.inject(429, count=3, retry_after=2, method="PATCH", path=f"^{deploy}\\?"),   # server-side apply
             proxy.inject(500, count=2, method="PATCH", path=f"^{service}\\?"),                # a failing apply
             proxy.inject(429, count=2, retry_after=1, method="PATCH", path=f"^{base}/status")]  # status write
    op = start_operator(operator_kubeconfig, namespace, root, tmp_path / "operator.log")
    try:
        started = time.monotonic()
        k8s.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, lms_manifest(name))
        wait_for(lambda: phase(k8s, namespace, name) == "Ready", 300, f"{name} Ready despite 429/500 answers")
        assert [r.remaining for r in rules] == [0, 0, 0], "the operator never met some injected errors"
        history = proxy.requests_since(started)
        for t, method, target, status, injected in history:
            if not injected:
                continue
            path = target.split("?", 1)[0]
            later = [h for h in history if h[0] > t and h[1] == method and h[2].split("?", 1)[0] == path]
            assert later, f"{method} {path} was never retried after {status}"
            gap = later[0][0] - t
            floor = 1.9 if status == 429 and "deployments" in path else 0.9 if status == 429 else 0.2
            assert gap >= floor, f"{method} {path} retried {gap:.2f}s after a {status} (expected >= {floor}s)"
        same = [h for h in history if h[2].split("?", 1)[0] in (deploy, service, base, base + "/status")]
        assert len(same) < 80, f"{len(same)} requests to the faulted paths: no back-off"
        kids = check_invariants(k8s, namespace, name, "after the injected errors")
        assert len(kids["deployments"]) == 1 and kids["jobs"] == []
        assert op.proc.poll() is None
    finally:
        op.stop()
