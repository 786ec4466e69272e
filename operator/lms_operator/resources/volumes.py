"""Volumes: the model repository, a pvc:// model source, and scratch space for read-only root filesystems."""
from __future__ import annotations

from typing import Any

from lms_operator.api.spec import LargeModelService

REPOSITORY_VOLUME = "models"
SOURCE_VOLUME = "source"


def repository_volume(lms: LargeModelService) -> dict[str, Any]:
    return {"name": REPOSITORY_VOLUME, "persistentVolumeClaim": {"claimName": lms.spec.repository.pvc}}


def pvc_source(uri: str) -> tuple[str, str] | None:
    """(claim, path inside it) for a pvc://claim/path model URI, else None."""
    if not uri.startswith("pvc://"):
        return None
    claim, _, path = uri[len("pvc://"):].partition("/")
    return claim, path


def scratch_volumes(names: dict[str, str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """emptyDir volumes and their mounts, {volume name: mount path}."""
    volumes = [{"name": name, "emptyDir": {"medium": "Memory"} if path == "/dev/shm" else {}}
               for name, path in names.items()]
    mounts = [{"name": name, "mountPath": path} for name, path in names.items()]
    return volumes, mounts
