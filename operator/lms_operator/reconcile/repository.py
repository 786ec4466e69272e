"""The repository claim and published versions (read-only: the operator never creates storage)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lms_operator.api import status as st
from lms_operator.modelrepo.layout import REPORT_FILE, is_complete, version_dir


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


def published_version(root: Path | None, namespace: str, claim: str, name: str, key: str) -> Path | None:
    """The complete version folder under ROOT/<namespace>/<claim>/, or None."""
    if root is None:
        return None
    folder = version_dir(Path(root) / namespace / claim, namespace, name, key)
    return folder if is_complete(folder) else None


def read_report(folder: Path) -> dict[str, Any] | None:
    """report.json of a published version; None when missing or unreadable (still a complete version)."""
    try:
        report = json.loads((folder / REPORT_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict):
        return None
    summary = report.get("summary")
    return summary if isinstance(summary, dict) else report
