"""Parse the URIs a LargeModelService names: model sources and repositories.

Pure functions: a string in, a typed location out, or a UriError naming the field.
The admission rules in api/forms.py accept the same shapes, so the API server
refuses what these functions would refuse.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from lms_operator.api.forms import HF_URI_PATTERN, PVC_URI_PATTERN, S3_BUCKET, S3_REPOSITORY_PATTERN

BUCKET = S3_BUCKET


class UriError(ValueError):
    """A URI that does not parse; the message starts with the field path."""


@dataclass(frozen=True)
class S3Location:
    """An object or a prefix in a bucket; `key` has no leading slash ("" is the whole bucket)."""

    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"

    def child(self, *parts: str) -> "S3Location":
        """The location of parts joined below this prefix."""
        joined = "/".join(p.strip("/") for p in parts if p.strip("/"))
        base = self.key.rstrip("/")
        return S3Location(self.bucket, f"{base}/{joined}" if base else joined)

    @property
    def prefix(self) -> str:
        """The key as a folder prefix ("a/b/"), "" for the bucket root."""
        return self.key.rstrip("/") + "/" if self.key.strip("/") else ""


@dataclass(frozen=True)
class HfLocation:
    repo_id: str
    revision: str | None


@dataclass(frozen=True)
class PvcLocation:
    claim: str
    path: str


@dataclass(frozen=True)
class FileLocation:
    raw: str


Location = S3Location | HfLocation | PvcLocation | FileLocation


def parse_s3(uri: str, field: str) -> S3Location:
    """s3://bucket[/key]; the bucket follows S3's naming rules."""
    if not uri.startswith("s3://"):
        raise UriError(f"{field}: expected s3://bucket/prefix, got {uri!r}")
    rest = uri[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not re.fullmatch(BUCKET, bucket) or ".." in bucket:
        raise UriError(f"{field}: {bucket!r} is not a valid bucket name (3-63 of a-z, 0-9, '.', '-') in {uri!r}")
    key = unquote(key)
    if any(part == ".." for part in key.split("/")):
        raise UriError(f"{field}: '..' is not allowed in an object key: {uri!r}")
    if re.search(r"\s", key):
        raise UriError(f"{field}: whitespace in the object key of {uri!r}")
    return S3Location(bucket, key)


def parse_repository(uri: str, field: str = "spec.repository.uri") -> S3Location:
    """A repository prefix: s3://bucket/prefix with path segments Triton can address."""
    loc = parse_s3(uri, field)
    if not re.fullmatch(S3_REPOSITORY_PATTERN, uri):
        raise UriError(f"{field}: path segments may hold only letters, digits, '.', '_' and '-' "
                       f"(Triton reads the repository through that form): {uri!r}")
    return S3Location(loc.bucket, loc.key.strip("/"))


def parse_hf(uri: str, field: str) -> HfLocation:
    """hf://org/name[@revision] (a branch, tag or commit)."""
    if not re.fullmatch(HF_URI_PATTERN, uri):
        raise UriError(f"{field}: expected hf://org/name or hf://org/name@revision, got {uri!r}")
    rest = uri[len("hf://"):]
    repo_id, _, revision = rest.partition("@")
    return HfLocation(repo_id, revision or None)


def parse_pvc(uri: str, field: str) -> PvcLocation:
    """pvc://claim/path inside the claim."""
    if not re.fullmatch(PVC_URI_PATTERN, uri):
        raise UriError(f"{field}: expected pvc://claim/path with a DNS-1123 claim name, got {uri!r}")
    claim, _, path = uri[len("pvc://"):].partition("/")
    if any(part == ".." for part in path.split("/")):
        raise UriError(f"{field}: '..' is not allowed in {uri!r}")
    return PvcLocation(claim, path.strip("/"))


def parse_model_uri(uri: str, field: str = "spec.model.uri") -> Location:
    """Any model source the API accepts."""
    scheme, sep, _ = uri.partition(":")
    if not sep:
        raise UriError(f"{field}: no scheme in {uri!r} (use s3://, hf://, pvc:// or file:)")
    if scheme == "s3":
        return parse_s3(uri, field)
    if scheme == "hf":
        return parse_hf(uri, field)
    if scheme == "pvc":
        return parse_pvc(uri, field)
    if scheme == "file":
        return FileLocation(uri)
    raise UriError(f"{field}: unsupported scheme {scheme!r} in {uri!r} (use s3://, hf://, pvc:// or file:)")


def triton_repository(endpoint: str, loc: S3Location) -> str:
    """Triton's `--model-repository` for an S3-compatible server: s3://[http://]host:port/bucket/path.

    `endpoint` is AWS_ENDPOINT_URL as given (with or without its scheme, a port is required);
    in a pod it is the `$(AWS_ENDPOINT_URL)` reference the kubelet expands.
    """
    return f"s3://{endpoint.rstrip('/')}/{loc.bucket}/{loc.key.strip('/')}".rstrip("/")
