"""Which published versions to delete: all but the newest `keep`, never a protected one.

The Job applies this after publishing (it holds the repository's write access; the
operator holds none), with the versions serving or rolling out passed in as protected.
"""
from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from lms_operator.modelrepo.layout import COMPLETE_MARKER

DEFAULT_KEEP = 3


def choose_deletions(published: dict[str, float], keep: int, protected: Iterable[str]) -> list[str]:
    """Keys to delete from {key: publish time}: older than the newest `keep`, and not protected.

    Ties in time are broken by key so the choice is deterministic.
    """
    if keep < 1:
        raise ValueError("keep must be at least 1")
    keep_set = set(protected)
    newest_first = sorted(published, key=lambda k: (published[k], k), reverse=True)
    return sorted(k for k in newest_first[keep:] if k not in keep_set)


def local_versions(folder: Path) -> dict[str, float]:
    """Complete versions under ROOT/<namespace>/<name>/, with the time of their `.complete` marker."""
    found: dict[str, float] = {}
    if not folder.is_dir():
        return found
    for child in folder.iterdir():
        marker = child / COMPLETE_MARKER
        if child.is_dir() and not child.name.startswith(".") and marker.is_file():
            found[child.name] = marker.stat().st_mtime
    return found


def delete_local(version: Path) -> None:
    """Remove the marker first, so a half-deleted folder is never taken for a version."""
    (version / COMPLETE_MARKER).unlink(missing_ok=True)
    shutil.rmtree(version, ignore_errors=True)
