"""Is a published version still what was published? Its model.onnx against the digest in report.json.

Both sides check: the Job after publishing and on a cache hit, the operator on every pass that
finds the version (so a wiped or altered repository is rebuilt instead of trusted). The
operator remembers a verified file by its inode, size and modification time, so the file is
hashed again only when it changed.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from lms_operator.modelrepo.layout import REPORT_FILE, is_complete, model_file

CHUNK = 1 << 20


class IntegrityError(ValueError):
    """A published version is missing a file or does not match its recorded digest."""


def file_sha256(path: Path) -> str:
    """Hex sha256 of one file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def regular_files(folder: Path) -> list[Path]:
    """Regular files below `folder` (links and special files left out), sorted by relative path."""
    found = [Path(d) / n for d, _dirs, names in os.walk(folder) for n in names
             if stat.S_ISREG(os.lstat(Path(d) / n).st_mode)]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def recorded_sha256(version: Path) -> str:
    """The model digest report.json recorded when the version was published."""
    try:
        return str(json.loads((version / REPORT_FILE).read_text())["sha256"]).lower()
    except (OSError, ValueError, KeyError, TypeError):
        raise IntegrityError(f"published version {version}: {REPORT_FILE} has no sha256 to check against") from None


def verify_version(version: Path, model_name: str, expected: str | None = None) -> str:
    """sha256 of the published model.onnx, checked against `expected` or else report.json's digest."""
    model = model_file(version, model_name)
    if model.is_symlink() or not model.is_file():
        raise IntegrityError(f"published version {version}: {model.name} is missing or not a regular file")
    want = expected.lower() if expected else recorded_sha256(version)
    actual = file_sha256(model)
    if actual != want:
        raise IntegrityError(f"published version {version}: model.onnx sha256 {actual} does not match the recorded {want}")
    return actual


@dataclass
class VerifiedVersions:
    """Versions verified before, by the identity of their model file (inode, size, mtime)."""
    entries: dict[Path, tuple[int, int, int]] = field(default_factory=dict)

    def check(self, version: Path, model_name: str) -> str | None:
        """None when the version is complete and intact, else what is wrong with it."""
        if not is_complete(version):
            return f"version folder {version} is missing or incomplete"
        try:
            st = os.stat(model_file(version, model_name))
        except OSError:
            st = None
        identity = (st.st_ino, st.st_size, st.st_mtime_ns) if st is not None else None
        if identity is not None and self.entries.get(version) == identity:
            return None
        self.entries.pop(version, None)
        try:
            verify_version(version, model_name)
        except IntegrityError as exc:
            return str(exc)
        if identity is not None:
            self.entries[version] = identity
        return None
