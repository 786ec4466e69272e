"""What the scale bench creates: its LargeModelServices, extra kwok nodes, and the published
version folders that make every object a cache hit (no compression runs during the bench)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lms_harness.cluster import ROOT
from lms_harness.scale.api import GROUP, VERSION, ClusterApi
from lms_harness.scale.recorder import Recorder

CACHE = Path(os.environ.get("LMS_CACHE", Path.home() / ".cache" / "lms"))
TEACHER = ROOT / "examples" / "models" / "digits-teacher" / "model.pt"
CLAIM = "lms-models"


def log(msg: str) -> None:
    """Progress on stderr."""
    print(f"scale [{time.strftime('%H:%M:%S')}]: {msg}", file=sys.stderr, flush=True)


def manifest(name: str, namespace: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """One scale object: the digits example with an absolute model URI and the shared claim.

    `spec` replaces the default spec (the API server's defaulted copy, so that version keys
    computed here match the operator's)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "LargeModelService",
        "metadata": {"name": name, "namespace": namespace, "labels": {"bench": "scale"}},
        "spec": spec or {
            "model": {"uri": f"file://{TEACHER}", "format": "torchscript", "task": "tabular-classification"},
            "compression": {"distillation": {"studentLayers": 1, "temperature": 4.0, "alpha": 0.5, "epochs": 30, "seed": 0},
                            "quantization": {"mode": "dynamic", "perChannel": True},
                            "qualityGate": {"metric": "accuracy", "min": 0.9, "samples": 256}},
            "serving": {"device": "cpu", "nodePool": {"nodeSelector": {"lms.dev/pool": "cpu"}},
                        "resources": {"cpu": "100m", "memory": "256Mi"}, "maxBatchSize": 64},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
            "repository": {"pvc": CLAIM},
        },
    }


def scale_node(i: int, pods: int) -> dict[str, Any]:
    """An extra kwok CPU-pool node (same labels as sandbox/nodes.yaml's CPU pool)."""
    name = f"lms-scale-cpu-{i}"
    cap = {"cpu": "256", "memory": "1Ti", "pods": str(pods)}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                         "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                    "kubernetes.io/arch": "amd64", "type": "kwok", "lms.dev/pool": "cpu"}},
            "spec": {"taints": []}, "status": {"allocatable": cap, "capacity": cap}}


def version_key_of(name: str, namespace: str, spec: dict[str, Any] | None = None) -> str:
    """The version key the operator computes for one scale object."""
    from lms_operator.api.spec import parse_spec
    from lms_operator.modelrepo.assemble import default_version_key

    return default_version_key(parse_spec(manifest(name, namespace, spec)))


def template_version(work: Path) -> Path:
    """One real published version of the scale spec (`lms compress`, cached between runs)."""
    from lms_operator.modelrepo.layout import is_complete, version_dir

    doc = manifest("tmpl", "scale")
    out = CACHE / "scale-template"
    folder = version_dir(out, "scale", "tmpl", version_key_of("tmpl", "scale"))
    if not is_complete(folder):
        log("publishing the template version with lms compress (once; cached in ~/.cache/lms/scale-template)")
        work.mkdir(parents=True, exist_ok=True)
        lms = str(Path(sys.executable).parent / "lms")
        done = subprocess.run([lms, "compress", "--spec-json", json.dumps(doc), "--out", str(out)],
                              capture_output=True, text=True, timeout=1200, cwd=str(work))
        if done.returncode != 0:
            raise RuntimeError(f"lms compress failed ({done.returncode}): {done.stderr[-2000:]}")
    return folder


def publish_copies(template: Path, repo_root: Path, namespace: str, names: list[str], spec: dict[str, Any]) -> None:
    """Each object's version folder: model files hard-linked, config.pbtxt renamed, marker last."""
    from lms_operator.modelrepo.layout import COMPLETE_MARKER, version_dir

    model_src = template / "tmpl"
    config = (model_src / "config.pbtxt").read_text()
    claim_root = repo_root / namespace / CLAIM
    for name in names:
        dest = version_dir(claim_root, namespace, name, version_key_of(name, namespace, spec))
        if (dest / COMPLETE_MARKER).is_file():
            continue
        (dest / name / "1").mkdir(parents=True, exist_ok=True)
        for src in (model_src / "1").iterdir():
            target = dest / name / "1" / src.name
            if not target.exists():
                os.link(src, target)
        (dest / name / "config.pbtxt").write_text(config.replace('name: "tmpl"', f'name: "{name}"'))
        if (template / "report.json").is_file() and not (dest / "report.json").exists():
            os.link(template / "report.json", dest / "report.json")
        (dest / COMPLETE_MARKER).touch()


def defaulted_spec(api: ClusterApi, namespace: str) -> dict[str, Any]:
    """The spec as the API server stores it (CRD defaults applied), from a dry-run create."""
    return api.create_lms(namespace, manifest("dry-run", namespace), dry_run=True)["spec"]  # type: ignore[no-any-return]


def create_one(api: ClusterApi, rec: Recorder, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Create one object and record when the API server answered; the created object."""
    created = api.create_lms(namespace, manifest(name, namespace, spec))
    with rec.lock:
        rec.created[name] = time.monotonic()
    return created


def create_with_children(api: ClusterApi, rec: Recorder, namespace: str, name: str, spec: dict[str, Any]) -> None:
    """Create one object, then server-side apply the four serving objects the operator would: its
    writes without its reads, status or queue (the floor run, no operator)."""
    from lms_operator.api import schema
    from lms_operator.api.spec import parse_spec
    from lms_operator.modelrepo.assemble import default_version_key
    from lms_operator.resources import meta
    from lms_operator.resources.render import serving_objects
    from lms_operator.resources.settings import BuildSettings

    created = create_one(api, rec, namespace, name, spec)
    lms = parse_spec(manifest(name, namespace, spec))
    owner = meta.owner_reference(schema.API_VERSION, schema.KIND, name, created["metadata"]["uid"])
    for obj in serving_objects(lms, default_version_key(lms), BuildSettings(), owner):
        api.apply(obj, field_manager="lms-floor")


def create_all(api: ClusterApi, rec: Recorder, namespace: str, names: list[str], workers: int,
               spec: dict[str, Any]) -> float:
    """Create every object concurrently; returns the monotonic time of the first create."""
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda name: create_one(api, rec, namespace, name, spec), names))
    return t0


def create_paced(api: ClusterApi, rec: Recorder, namespace: str, names: list[str], rate: float,
                 spec: dict[str, Any]) -> None:
    """Create objects one by one at `rate` per second (a GitOps sync or a team adding models)."""
    start = time.monotonic()
    for i, name in enumerate(names):
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        create_one(api, rec, namespace, name, spec)
