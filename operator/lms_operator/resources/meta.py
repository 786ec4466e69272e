"""Names, labels and metadata shared by every child object."""
from __future__ import annotations

import hashlib
import json
from typing import Any

from lms_operator.api import schema
from lms_operator.api.spec import LargeModelService

MAX_NAME = 63
MANAGED_BY = "lms-operator"
PART_OF = "lms"
VERSION_LABEL = "serving.lms.dev/version"
COMPONENT_COMPRESSION = "compression"
COMPONENT_SERVER = "server"


def child_name(base: str, suffix: str) -> str:
    """A DNS-1123 label `<base>-<suffix>`; long bases are cut and get a hash so names stay unique."""
    name = f"{base}-{suffix}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    keep = MAX_NAME - len(suffix) - len(digest) - 2
    return f"{base[:keep].rstrip('-')}-{digest}-{suffix}"


def job_name(lms: LargeModelService, key: str) -> str:
    return child_name(lms.name, f"compress-{key[:10]}")


def server_name(lms: LargeModelService) -> str:
    return child_name(lms.name, "triton")


def selector_labels(lms: LargeModelService, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/instance": lms.name, "app.kubernetes.io/component": component}


def labels(lms: LargeModelService, component: str, key: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": lms.name,
        **selector_labels(lms, component),
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": PART_OF,
        VERSION_LABEL: key,
    }


def metadata(lms: LargeModelService, name: str, component: str, key: str,
             owner: dict[str, Any] | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": lms.namespace, "labels": labels(lms, component, key)}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return meta


def owner_reference(api_version: str, kind: str, name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": uid,
            "controller": True, "blockOwnerDeletion": True}


def spec_json(lms: LargeModelService) -> str:
    """The resource as the Job and the model-config init container see it: defaulted spec, name and
    namespace, canonical JSON."""
    manifest = {"apiVersion": schema.API_VERSION, "kind": schema.KIND,
                "metadata": {"name": lms.name, "namespace": lms.namespace}, "spec": lms.raw_spec}
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"))
