"""Supply-chain checks that complement source.py, loader.py and publish.py.

- Symlinks: a model folder's digest and size count regular files only, so a symlink could pull
  unpinned, unlimited content into the load. Every link must resolve to an existing file inside
  the model folder (for a Hugging Face cache snapshot: inside that model's cache folder, where
  the hub keeps its blobs); anything else is refused before digest or load.
- Published versions: the digest of model.onnx is checked again on the repository after
  publishing and on every cache hit, against the digest recorded in report.json, so a version
  altered on the volume is never reported (or served) under the old digest.
- Schemes: the same allow-list the CRD enforces at admission, for callers outside the API server.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from urllib.parse import urlparse

from lms_operator.compression.digest import is_within
from lms_operator.compression.errors import CompressionError, InputError
from lms_operator.modelrepo.integrity import IntegrityError, verify_version

ALLOWED_SCHEMES = ("file", "hf", "pvc", "s3")


def check_scheme(uri: str) -> None:
    """Refuse model URIs outside the allow-list (file, hf, pvc, s3)."""
    scheme = urlparse(uri).scheme
    if scheme not in ALLOWED_SCHEMES:
        raise InputError(f"spec.model.uri: scheme {scheme or '(none)'!r} is not allowed "
                         f"(allowed: {', '.join(s + '://' for s in ALLOWED_SCHEMES)})")


def link_root(path: Path) -> Path:
    """Where links from `path` may point: the model folder, or for a hub cache snapshot
    (.../models--org--name/snapshots/<revision>) the model's cache folder."""
    folder = path if path.is_dir() else path.parent
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return folder.parent.parent
    return folder


def check_links(path: Path, root: Path | None = None) -> None:
    """Refuse symlinks (the model itself, or any entry below it) that dangle or leave `root`."""
    allowed = root if root is not None else link_root(path)
    entries = [path]
    if path.is_dir() and not path.is_symlink():
        for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
            entries += [Path(dirpath) / n for n in sorted(dirnames) + sorted(filenames)]
    for entry in entries:
        mode = os.lstat(entry).st_mode
        if stat.S_ISLNK(mode):
            target = os.readlink(entry)
            if not entry.exists():
                raise InputError(f"spec.model.uri: {entry} is a dangling symlink (to {target})")
            if not is_within(allowed, entry):
                raise InputError(f"spec.model.uri: {entry} is a symlink out of the model folder (to {target})")
            if not entry.resolve().is_file():
                raise InputError(f"spec.model.uri: {entry} is a symlink to a folder; only files may be linked")
        elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise InputError(f"spec.model.uri: {entry} is not a regular file (device, pipe or socket)")


def linked_bytes(path: Path) -> int:
    """Bytes of every file below `path`, links followed (what a load can actually read)."""
    if not path.is_dir():
        return path.stat().st_size
    total = 0
    for dirpath, _dirs, filenames in os.walk(path, followlinks=False):
        for name in filenames:
            total += (Path(dirpath) / name).stat().st_size
    return total


def check_source_tree(path: Path, max_bytes: int) -> None:
    """Links first (so sizes and digests see only pinned content), then the size limit with links followed."""
    check_links(path)
    size = linked_bytes(path)
    if size > max_bytes:
        raise InputError(f"spec.model.uri: model is {size} bytes, above the limit of {max_bytes} (LMS_MAX_MODEL_BYTES)")


def verify_published(version: Path, model_name: str, expected: str | None = None) -> str:
    """sha256 of the published model.onnx, checked against `expected` or else report.json's digest."""
    try:
        return verify_version(version, model_name, expected)
    except IntegrityError as exc:
        raise CompressionError(str(exc)) from None
