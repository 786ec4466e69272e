"""Content digests for model files and folders, and path-safety checks.

A folder's digest is the sha256 of a manifest: one line "<sha256>  <relative path>\\n" per
regular file, sorted by path, so users can pin a whole Hugging Face folder with one value
(`lms digest PATH`). An ONNX file with external data is digested the same way over the file
and its data files.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from lms_operator.modelrepo.integrity import file_sha256, regular_files  # noqa: F401  (used here and by callers)


def manifest_text(entries: list[tuple[str, str]]) -> str:
    """Manifest for (relative posix path, sha256) pairs: sorted "<sha256>  <path>" lines."""
    return "".join(f"{digest}  {rel}\n" for rel, digest in sorted(entries))


def folder_sha256(folder: Path) -> str:
    """Digest of a folder: sha256 of its manifest text."""
    entries = [(p.relative_to(folder).as_posix(), file_sha256(p)) for p in regular_files(folder)]
    return hashlib.sha256(manifest_text(entries).encode()).hexdigest()


def onnx_external_locations(path: Path) -> list[str]:
    """External-data file names an ONNX model refers to (sorted; [] for a self-contained model).

    Raises ValueError for a location that leaves the model's folder.
    """
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    found = set()
    for tensor in _get_all_tensors(model):
        if uses_external_data(tensor):
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            check_external_location(path.parent, location)
            found.add(location)
    return sorted(found)


def path_sha256(path: Path) -> str:
    """Digest of a file or a folder, as `spec.model.sha256` expects.

    A folder: its manifest. An ONNX file with external data: the manifest of the file and its
    data files (so the pin covers every byte the model loads). Any other file: its sha256.
    """
    if path.is_dir():
        return folder_sha256(path)
    if path.suffix == ".onnx":
        data = onnx_external_locations(path)
        if data:
            entries = [(path.name, file_sha256(path))] + [(loc, file_sha256(path.parent / loc)) for loc in data]
            return hashlib.sha256(manifest_text(entries).encode()).hexdigest()
    return file_sha256(path)


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
