"""The Helm chart: lint, Kubernetes schemas, a security scan of every rendering, RBAC in sync.

The scan is what a security reviewer checks by hand: no privileged, root or writable-root
container, no host namespaces or hostPath, no wildcard RBAC and no Secrets access unless S3
credentials are asked for. It runs over several value sets, and is itself tested on manifests
that break each rule, so a weakened chart cannot pass unnoticed.
"""
from __future__ import annotations

import argparse
import copy
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import kubernetes_validate
import pytest
import yaml

pytestmark = pytest.mark.tools  # helm
ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "lms-operator"
K8S_VERSION = "1.36.0"
RELEASE_NS = "lms-system"
# Kinds outside the Kubernetes schemas: their own CRDs ship in the chart (kopf) or are optional.
CUSTOM_KINDS = {"ClusterKopfPeering", "KopfPeering", "ServiceMonitor", "PodMonitor"}
VALUE_SETS: dict[str, list[str]] = {
    "cluster-wide": [],
    "namespaced": ["--set", "watchNamespaces={team-a,team-b}"],
    "s3": ["--set", "s3.secret=lms-s3", "--set", "s3.operatorSecret=lms-operator-s3", "--set", "watchNamespaces={team-a}"],
    "everything": ["--set", "metrics.serviceMonitor.enabled=true", "--set", "podMonitor.enabled=true", "--set", "repository.existingClaim=lms-models",
                   "--set", "image.digest=sha256:" + "a" * 64, "--set", "peering.enabled=false",
                   "--set", "replicaCount=2", "--set", "networkPolicy.enabled=true",
                   "--set", "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.name=monitoring"],
}
CLUSTER_SCOPED = {("apiextensions.k8s.io", "customresourcedefinitions"), ("kopf.dev", "clusterkopfpeerings")}


def helm_bin() -> str:
    """helm from the tool cache `make tools` fills (or PATH)."""
    candidates = [os.environ.get("LMS_TOOLS_BIN", ""), os.environ.get("LMS_TOOLS_DIR", "") + "/current",
                  str(Path.home() / ".cache" / "lms" / "bin" / "current")]
    for folder in candidates:
        if folder and (Path(folder) / "helm").is_file():
            return str(Path(folder) / "helm")
    found = shutil.which("helm")
    if found is None:
        pytest.skip("helm is not built: run `make tools` (tools/build.sh) first")
    return found


def helm(*args: str, chart: Path = CHART, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([helm_bin(), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HELM_CACHE_HOME": "/tmp/lms-helm-cache",
                               "HELM_CONFIG_HOME": "/tmp/lms-helm-config", "HELM_DATA_HOME": "/tmp/lms-helm-data"})
    if check and done.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed: {done.stderr.strip()}", pytrace=False)
    return done


def render(extra: list[str], chart: Path = CHART) -> list[dict[str, Any]]:
    out = helm("template", "lms", str(chart), "-n", RELEASE_NS, "--kube-version", K8S_VERSION, *extra, chart=chart).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(VALUE_SETS[request.param])


# ---- the scan ------------------------------------------------------------------------------------

def pod_specs(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    kind = doc.get("kind")
    if kind == "Pod":
        yield doc["spec"]
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield doc["spec"]["template"]["spec"]
    elif kind == "CronJob":
        yield doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def scan_pod(spec: dict[str, Any]) -> list[str]:
    """Problems of one pod spec against Pod Security "restricted" and the chart's own rules."""
    problems: list[str] = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            problems.append(f"{field} is set")
    for vol in spec.get("volumes") or []:
        if "hostPath" in vol:
            problems.append(f"volume {vol.get('name')} is a hostPath")
    pod_sc = spec.get("securityContext") or {}
    if pod_sc.get("runAsUser") == 0:
        problems.append("pod runs as user 0")
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        name = c.get("name")
        sc = c.get("securityContext") or {}
        merged = {**pod_sc, **sc}
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if merged.get("runAsNonRoot") is not True:
            problems.append(f"{name}: runAsNonRoot is not true")
        if merged.get("runAsUser") == 0:
            problems.append(f"{name}: runs as user 0")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: root filesystem is writable")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: privilege escalation allowed")
        if (sc.get("capabilities") or {}).get("drop") != ["ALL"]:
            problems.append(f"{name}: capabilities not dropped (drop: [ALL])")
        if (sc.get("capabilities") or {}).get("add"):
            problems.append(f"{name}: adds capabilities")
        if (merged.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{name}: seccompProfile is not RuntimeDefault")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"{name}: hostPort {port['hostPort']}")
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            if not {"cpu", "memory"} <= set(res.get(part) or {}):
                problems.append(f"{name}: no cpu/memory {part}")
    return problems


def scan_rbac(doc: dict[str, Any], secrets_allowed: bool) -> list[str]:
    problems: list[str] = []
    if doc.get("kind") not in ("Role", "ClusterRole"):
        return problems
    for rule in doc.get("rules") or []:
        for field in ("apiGroups", "resources", "verbs"):
            if any("*" in value for value in rule.get(field) or []):
                problems.append(f"{doc['kind']} {doc['metadata']['name']}: wildcard in {field}")
        if rule.get("nonResourceURLs"):
            problems.append(f"{doc['kind']} {doc['metadata']['name']}: nonResourceURLs")
        if "secrets" in (rule.get("resources") or []):
            if not secrets_allowed:
                problems.append(f"{doc['kind']} {doc['metadata']['name']}: Secrets access")
            elif set(rule["verbs"]) != {"get"} or not rule.get("resourceNames"):
                problems.append(f"{doc['kind']} {doc['metadata']['name']}: Secrets access beyond get by name")
        for verb in ("escalate", "bind", "impersonate"):
            if verb in (rule.get("verbs") or []):
                problems.append(f"{doc['kind']} {doc['metadata']['name']}: verb {verb}")
    return problems


def scan(docs: list[dict[str, Any]], secrets_allowed: bool = False) -> list[str]:
    problems: list[str] = []
    for doc in docs:
        for spec in pod_specs(doc):
            problems += [f"{doc['kind']} {doc['metadata']['name']}: {p}" for p in scan_pod(spec)]
        problems += scan_rbac(doc, secrets_allowed)
        if doc.get("kind") == "RoleBinding" or doc.get("kind") == "ClusterRoleBinding":
            if doc["roleRef"]["name"] in ("cluster-admin", "admin", "edit"):
                problems.append(f"{doc['kind']} {doc['metadata']['name']}: binds {doc['roleRef']['name']}")
    return problems


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def triples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


# ---- tests ---------------------------------------------------------------------------------------

def test_chart_crds_are_the_generated_ones_byte_for_byte() -> None:
    for name in ("largemodelservices.yaml", "kopf-peering.yaml"):
        source, copy_ = ROOT / "crds" / name, CHART / "crds" / name
        assert copy_.read_bytes() == source.read_bytes(), f"{copy_} differs from {source}: cp {source} {copy_}"
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == ["kopf-peering.yaml", "largemodelservices.yaml"]


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_helm_lint_strict(values: str) -> None:
    done = helm("lint", "--strict", str(CHART), *VALUE_SETS[values])
    assert "0 chart(s) failed" in done.stdout


def test_rendering_is_valid_against_kubernetes_schemas(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            assert doc["apiVersion"] in ("kopf.dev/v1", "monitoring.coreos.com/v1"), doc["apiVersion"]
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_security_scan_of_the_rendering_is_clean(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = rendered
    assert scan(docs) == []
    assert of_kind(docs, "Deployment"), "the operator Deployment is missing"


def test_scan_catches_each_weakening() -> None:
    docs = render([])
    assert scan(docs) == []
    dep = of_kind(docs, "Deployment")[0]

    def broken(edit: Any) -> list[str]:
        d = copy.deepcopy(dep)
        edit(d["spec"]["template"]["spec"])
        return scan([d])

    c = "containers"
    assert broken(lambda s: s[c][0]["securityContext"].update(privileged=True))
    assert broken(lambda s: s[c][0]["securityContext"].update(readOnlyRootFilesystem=False))
    assert broken(lambda s: s[c][0]["securityContext"].update(allowPrivilegeEscalation=True))
    assert broken(lambda s: s[c][0]["securityContext"].update(runAsUser=0))
    assert broken(lambda s: s[c][0]["securityContext"]["capabilities"].update(drop=["NET_RAW"]))
    assert broken(lambda s: s[c][0]["securityContext"]["capabilities"].update(add=["NET_ADMIN"]))
    assert broken(lambda s: s["securityContext"].update(seccompProfile={"type": "Unconfined"})
                  or s[c][0]["securityContext"].pop("seccompProfile"))
    assert broken(lambda s: s.update(hostNetwork=True))
    assert broken(lambda s: s["volumes"].append({"name": "h", "hostPath": {"path": "/"}}))
    assert broken(lambda s: s[c][0]["resources"].pop("limits"))
    role = copy.deepcopy(of_kind(docs, "ClusterRole")[0])
    role["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]})
    assert scan([role]) and scan([role], secrets_allowed=True)
    role["rules"][-1] = {"apiGroups": ["*"], "resources": ["pods"], "verbs": ["get"]}
    assert scan([role])


def test_operator_container_is_hardened_and_probed() -> None:
    dep = of_kind(render([]), "Deployment")[0]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]  # the only writable path
    assert pod["automountServiceAccountToken"] is True
    sa = of_kind(render([]), "ServiceAccount")[0]
    assert sa["automountServiceAccountToken"] is False


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_operator_args_are_accepted_by_lms_operator(values: str, tmp_path: Path) -> None:
    from lms_operator.cli.operator import register

    docs = render(VALUE_SETS[values])
    (c,) = of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    parser = argparse.ArgumentParser(prog="lms")
    register(parser.add_subparsers())
    assert c["command"] == ["lms"]
    args = parser.parse_args(c["args"])
    wanted = {"namespaced": ("team-a", "team-b"), "s3": ("team-a",)}.get(values, ())
    assert tuple(args.namespaces or ()) == wanted
    assert args.clusterwide is (not wanted)
    assert args.metrics_port == 8080 and args.liveness_port == 8081
    # The container's flags and environment together make a valid configuration (the claim's
    # mount point exists only in the pod, so the repository root is left out here; the templates
    # folder is the chart's ConfigMap written out).
    from lms_operator.runtime.config import OperatorConfig

    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    templates = tmp_path / "model-repo-templates"
    templates.mkdir()
    for name, text in next(d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-templates"))["data"].items():
        (templates / name).write_text(text)
    assert args.templates_dir == Path("/etc/lms/model-repo-templates")
    config = OperatorConfig.from_sources({**vars(args), "repository_root": None, "templates_dir": templates}, env)
    assert config.build_settings().image == env["LMS_IMAGE"] and config.namespaces == wanted


def test_cluster_wide_rbac_is_exactly_the_operators_clusterrole() -> None:
    deploy = yaml.safe_load((ROOT / "deploy" / "rbac" / "clusterrole.yaml").read_text())
    docs = render([])
    (role,) = of_kind(docs, "ClusterRole")
    assert triples(role["rules"]) == triples(deploy["rules"])
    assert of_kind(docs, "Role") == []
    (binding,) = of_kind(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "lms-lms-operator", "namespace": RELEASE_NS}]


def test_namespaced_rbac_grants_only_in_watched_namespaces() -> None:
    deploy = triples(yaml.safe_load((ROOT / "deploy" / "rbac" / "clusterrole.yaml").read_text())["rules"])
    docs = render(VALUE_SETS["namespaced"])
    roles = of_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    (cluster_role,) = of_kind(docs, "ClusterRole")
    cluster = triples(cluster_role["rules"])
    assert {(g, r) for g, r, _ in cluster} == {("apiextensions.k8s.io", "customresourcedefinitions")}
    for role in roles:
        granted = triples(role["rules"])
        assert not {(g, r) for g, r, _ in granted} & CLUSTER_SCOPED
        assert granted | cluster == deploy - {t for t in deploy if t[1] == "clusterkopfpeerings"}
    bindings = of_kind(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert all(b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "lms-lms-operator"}
               for b in bindings)


def test_no_secrets_access_even_with_s3() -> None:
    """S3 credentials go to pods by reference; no value set gives the operator RBAC on Secrets."""
    for name, extra in VALUE_SETS.items():
        rules = [r for d in render(extra) if d["kind"] in ("Role", "ClusterRole") for r in d["rules"]]
        assert [r for r in rules if "secrets" in r["resources"]] == [], name


def test_image_pull_secrets_reach_the_operator_for_its_pods() -> None:
    pull = ["--set", "imagePullSecrets[0].name=regcred", "--set", "imagePullSecrets[1].name=mirror"]
    spec = of_kind(render(pull), "Deployment")[0]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert spec["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]
    assert env["LMS_IMAGE_PULL_SECRETS"] == "regcred,mirror"
    plain = of_kind(render([]), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert "LMS_IMAGE_PULL_SECRETS" not in {e["name"] for e in plain}


def test_s3_values_reach_the_operator_by_reference() -> None:
    dep = of_kind(render(VALUE_SETS["s3"]), "Deployment")[0]
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["LMS_S3_SECRET"]["value"] == "lms-s3"
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
        "name": "lms-operator-s3", "key": "AWS_ACCESS_KEY_ID", "optional": False}
    assert env["AWS_ENDPOINT_URL"]["valueFrom"]["secretKeyRef"]["optional"] is True
    plain = of_kind(render([]), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert not any(e["name"].startswith(("AWS_", "LMS_S3")) for e in plain)


@pytest.mark.parametrize("setting, message", [
    ("securityContext.privileged=true", "privileged"),
    ("securityContext.readOnlyRootFilesystem=false", "readOnlyRootFilesystem"),
    ("securityContext.allowPrivilegeEscalation=true", "allowPrivilegeEscalation"),
    ("podSecurityContext.runAsUser=0", "runAsUser"),
    ("securityContext.capabilities.drop={NET_RAW}", "capabilities.drop"),
    ("securityContext.capabilities.add={NET_ADMIN}", "capabilities"),
    ("watchNamespaces={Bad_NS}", "watchNamespaces"),
    ("image.digest=latest", "digest"),
])
def test_values_that_weaken_security_are_refused(setting: str, message: str) -> None:
    done = helm("template", "lms", str(CHART), "--set", setting, check=False)
    assert done.returncode != 0, f"--set {setting} was accepted"
    assert message in done.stderr, done.stderr


def test_image_digest_pins_operator_and_compression_image() -> None:
    digest = "sha256:" + "b" * 64
    (c,) = of_kind(render(["--set", f"image.digest={digest}"]), "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    assert c["image"] == f"lms-operator@{digest}"
    assert {"name": "LMS_IMAGE", "value": f"lms-operator@{digest}"} in c["env"]


def test_notes_tell_the_next_step(tmp_path: Path) -> None:
    """NOTES.txt rendered through `tpl` in a copy of the chart (helm template does not print notes)."""
    chart = tmp_path / "lms-operator"
    shutil.copytree(CHART, chart)
    shutil.copyfile(CHART / "templates" / "NOTES.txt", chart / "notes.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n'
        'data:\n  notes: {{ tpl (.Files.Get "notes.txt") . | quote }}\n')
    for extra, ns_flag in (([], ""), (["--set", "watchNamespaces={team-a}"], " -n team-a")):
        (cm,) = [d for d in render(extra, chart=chart) if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "notes"]
        notes = cm["data"]["notes"]
        assert f"kubectl apply -f examples/minilm-cpu.yaml{ns_flag}" in notes
        assert f"kubectl get lms{ns_flag}" in notes
        assert "rollout status deployment/lms-lms-operator" in notes


def test_pod_monitor_scrapes_the_triton_metrics_port_when_asked() -> None:
    assert of_kind(render([]), "PodMonitor") == []  # off by default
    (monitor,) = of_kind(render(["--set", "podMonitor.enabled=true", "--set", "podMonitor.interval=5s",
                                 "--set", "podMonitor.labels.release=prometheus"]), "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "5s"}]
    # It selects exactly the Triton pods the operator renders, by the port name they carry.
    from lms_operator.api.spec import parse_spec
    from lms_operator.resources.render import serving_objects
    from lms_operator.resources.settings import BuildSettings
    from tests.unit.conftest import load_example

    deployment = serving_objects(parse_spec(load_example("minilm-cpu.yaml")), "k", BuildSettings())[0]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert "metrics" in {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    (scoped,) = of_kind(render(["--set", "podMonitor.enabled=true", "--set", "watchNamespaces={team-a,team-b}"]),
                        "PodMonitor")
    assert scoped["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}
    refused = helm("template", "lms", str(CHART), "--set", "podMonitor.interval=often", check=False)
    assert refused.returncode != 0 and "interval" in refused.stderr


def test_the_operator_reads_the_charts_serving_templates_and_a_value_replaces_one(tmp_path: Path) -> None:
    from lms_operator.modelrepo.templates import parse_template

    def configmap(docs: list[dict[str, Any]]) -> dict[str, str]:
        return next(d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-model-repo-templates"))["data"]

    folder = ROOT / "model-repo-templates"
    shipped = configmap(render([]))
    assert shipped == {p.name: p.read_text() for p in folder.glob("*.pbtxt")}
    mine = tmp_path / "my-cpu.pbtxt"
    mine.write_text((folder / "onnx-cpu.pbtxt").read_text() + "response_cache { enable: true }\n")
    docs = render(["--set-file", f"modelRepoTemplates.onnx-cpu={mine}"])
    replaced = configmap(docs)
    assert parse_template(replaced["onnx-cpu.pbtxt"], "onnx-cpu.pbtxt").response_cache.enable
    assert {k: v for k, v in replaced.items() if k != "onnx-cpu.pbtxt"} == {
        k: v for k, v in shipped.items() if k != "onnx-cpu.pbtxt"}
    deployment = of_kind(docs, "Deployment")[0]["spec"]["template"]
    container = deployment["spec"]["containers"][0]
    assert "--templates-dir=/etc/lms/model-repo-templates" in container["args"]
    assert {"name": "model-repo-templates", "mountPath": "/etc/lms/model-repo-templates", "readOnly": True} in container["volumeMounts"]
    digest = "serving.lms.dev/model-repo-templates"
    assert deployment["metadata"]["annotations"][digest] != of_kind(render([]), "Deployment")[0]["spec"]["template"]["metadata"]["annotations"][digest]
