"""Version manifests: every file of a published version with its sha256 and size.

A version in object storage counts only when its manifest is there, names the version
key, and every file it lists is present with the listed size (the operator's cheap check)
and, for the Job, the listed digest. The manifest is the last object written.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lms_operator.modelrepo.integrity import file_sha256, regular_files

MANIFEST_FILE = "manifest.json"
FORMAT = "lms.dev/version-manifest/v1"
SKIPPED = (".complete",)
"""Local markers that are not part of a version in object storage (the manifest replaces them)."""


class ManifestError(ValueError):
    """A manifest that is unreadable or does not describe the expected version."""


@dataclass(frozen=True)
class FileEntry:
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    version: str
    files: tuple[FileEntry, ...]
    summary: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        doc = {"format": FORMAT, "version": self.version,
               "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in self.files],
               "summary": self.summary}
        return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def empty_folders(folder: Path) -> list[str]:
    """Empty folders below `folder` as "rel/path/" (an ensemble's version folder is one)."""
    return sorted(Path(d).relative_to(folder).as_posix() + "/" for d, dirs, names in os.walk(folder)
                  if not dirs and not names and Path(d) != folder)


def build_manifest(version: str, folder: Path, summary: dict[str, Any] | None = None) -> Manifest:
    """Hash every regular file under a local version folder (markers and the manifest excluded).

    An empty folder is listed as "path/" (size 0): object storage has no folders, so it is
    published as a zero-byte folder-marker object, which Triton lists as a folder.
    """
    entries = []
    for p in regular_files(folder):
        rel = p.relative_to(folder).as_posix()
        if rel in SKIPPED or rel == MANIFEST_FILE:
            continue
        entries.append(FileEntry(rel, file_sha256(p), p.stat().st_size))
    entries += [FileEntry(rel, EMPTY_SHA256, 0) for rel in empty_folders(folder)]
    entries.sort(key=lambda e: e.path)
    if not entries:
        raise ManifestError(f"{folder}: no files to publish")
    return Manifest(version, tuple(entries), dict(summary or {}))


def parse_manifest(data: bytes, version: str) -> Manifest:
    """The manifest of `version`; ManifestError when it is not valid or names another version."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ManifestError(f"format is not {FORMAT}")
    if doc.get("version") != version:
        raise ManifestError(f"names version {doc.get('version')!r}, expected {version!r}")
    raw = doc.get("files")
    if not isinstance(raw, list) or not raw:
        raise ManifestError("lists no files")
    files = []
    for item in raw:
        try:
            path, digest, size = str(item["path"]), str(item["sha256"]), int(item["size"])
        except (KeyError, TypeError, ValueError):
            raise ManifestError(f"bad file entry {item!r}") from None
        if path.startswith("/") or ".." in path.split("/") or len(digest) != 64:
            raise ManifestError(f"bad file entry {item!r}")
        files.append(FileEntry(path, digest.lower(), size))
    summary = doc.get("summary")
    return Manifest(version, tuple(files), summary if isinstance(summary, dict) else {})


def listing_problems(manifest: Manifest, sizes: dict[str, int]) -> list[str]:
    """What a listing ({relative path: size}) lacks against the manifest; [] when it matches."""
    problems = []
    for f in manifest.files:
        if f.path not in sizes:
            problems.append(f"{f.path} is missing")
        elif sizes[f.path] != f.size:
            problems.append(f"{f.path} has {sizes[f.path]} bytes, the manifest says {f.size}")
    return problems


def digest_problems(manifest: Manifest, digests: dict[str, str]) -> list[str]:
    """Files whose sha256 ({relative path: digest}) differs from the manifest; [] when all match."""
    return [f"{f.path}: sha256 {digests.get(f.path)} does not match the manifest's {f.sha256}"
            for f in manifest.files if digests.get(f.path) != f.sha256]
