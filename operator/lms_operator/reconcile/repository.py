"""The repository claim and published versions (read-only: the operator never creates storage)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lms_operator.api import status as st
from lms_operator.api.contract import CompressionSummary
from lms_operator.api.spec import LargeModelService
from lms_operator.modelrepo.layout import REPORT_FILE, version_dir


def claim_condition(claim: str, pvc: dict[str, Any] | None) -> st.Condition:
    """RepositoryReady from the claim object (None = not found)."""
    if pvc is None:
        return st.Condition(st.REPOSITORY_READY, False, st.CLAIM_NOT_FOUND,
                            f"PersistentVolumeClaim {claim} not found; create it (the operator does not create storage)")
    phase = (pvc.get("status") or {}).get("phase")
    if phase == "Lost":
        return st.Condition(st.REPOSITORY_READY, False, st.CLAIM_NOT_BOUND, f"PersistentVolumeClaim {claim} is Lost")
    return st.Condition(st.REPOSITORY_READY, True, st.CLAIM_BOUND,
                        f"PersistentVolumeClaim {claim} is {phase or 'present'}")


def version_folder(root: Path | None, lms: LargeModelService, key: str) -> Path | None:
    """Where the operator can read the version: ROOT/<namespace>/<claim>/<namespace>/<name>/<key>;
    None when it has no repository access (no --repository-root, or not a claim)."""
    claim = lms.spec.repository.pvc
    if root is None or not claim:
        return None
    return version_dir(Path(root) / lms.namespace / claim, lms.namespace, lms.name, key)


def read_report(folder: Path) -> CompressionSummary | None:
    """The summary at the top of a published version's report.json; None when unreadable."""
    try:
        report = json.loads((folder / REPORT_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict):
        return None
    return CompressionSummary.from_dict(report["summary"] if isinstance(report.get("summary"), dict) else report)
