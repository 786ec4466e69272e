"""Content digests for model files and folders, and path-safety checks.

A folder's digest is the sha256 of a manifest: one line "<sha256>  <relative path>\\n" per
regular file, sorted by path, so users can pin a whole Hugging Face folder with one value
(`lms digest PATH`).
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """Hex sha256 of one file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def regular_files(folder: Path) -> list[Path]:
    """Regular files under `folder` (symlinks and special files excluded), sorted by relative path."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames.sort()
        for name in filenames:
            p = Path(dirpath) / name
            if stat.S_ISREG(os.lstat(p).st_mode):
                found.append(p)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def manifest_text(entries: list[tuple[str, str]]) -> str:
    """Manifest for (relative posix path, sha256) pairs: sorted "<sha256>  <path>" lines."""
    return "".join(f"{digest}  {rel}\n" for rel, digest in sorted(entries))


def folder_sha256(folder: Path) -> str:
    """Digest of a folder: sha256 of its manifest text."""
    entries = [(p.relative_to(folder).as_posix(), file_sha256(p)) for p in regular_files(folder)]
    return hashlib.sha256(manifest_text(entries).encode()).hexdigest()


def path_sha256(path: Path) -> str:
    """Digest of a file or a folder, as `spec.model.sha256` expects."""
    return folder_sha256(path) if path.is_dir() else file_sha256(path)


def is_within(root: Path, candidate: Path) -> bool:
    """True when `candidate`, with symlinks resolved, lies inside `root` (also resolved)."""
    root_r = root.resolve()
    cand_r = candidate.resolve()
    return cand_r == root_r or root_r in cand_r.parents


def check_external_location(model_dir: Path, location: str) -> Path:
    """Resolve an ONNX external-data `location`; raise ValueError when it leaves `model_dir`."""
    if not location or Path(location).is_absolute():
        raise ValueError(f"external data location {location!r} must be a relative path inside the model folder")
    target = model_dir / location
    if not is_within(model_dir, target):
        raise ValueError(f"external data location {location!r} leaves the model folder")
    return target
