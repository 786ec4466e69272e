"""A thin S3 client over boto3: credentials from the environment, errors that name bucket and key.

Credentials reach the Job and Triton by reference (secretKeyRef) as AWS_* variables; a model
source's own Secret arrives with the SOURCE_ENV_PREFIX, so a source bucket and a repository
bucket can use different keys in one Job. boto3 is imported only when a client is made.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from lms_operator.storage.errors import ModelNotFound, StorageAccessDenied, StorageError, StorageUnavailable
from lms_operator.storage.uri import S3Location

SOURCE_ENV_PREFIX = "LMS_SOURCE_"
CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_REGION")
DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "Forbidden", "AllAccessDisabled",
          "XAdminUserNotFound"}  # the last: versitygw for an unknown access key
MISSING = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}
CHUNK = 1 << 20


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: float


def client(env_prefix: str = "", environ: dict[str, str] | None = None) -> Any:
    """An S3 client from `{env_prefix}AWS_*` variables; without keys there, boto3's own chain
    (instance profile, web identity, shared config)."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise StorageError("s3:// needs the boto3 package (pip install boto3)") from None
    env = os.environ if environ is None else environ
    get = {k: env.get(env_prefix + k) or None for k in CREDENTIAL_KEYS}
    endpoint = get["AWS_ENDPOINT_URL"] or (env.get("AWS_ENDPOINT_URL") if not env_prefix else None)
    config = Config(retries={"max_attempts": 4, "mode": "standard"}, connect_timeout=10, read_timeout=120,
                    s3={"addressing_style": "path" if endpoint else "auto"},
                    request_checksum_calculation="when_required", response_checksum_validation="when_required",
                    # a prefixed (source) client must not fall back to the repository's AWS_ENDPOINT_URL
                    ignore_configured_endpoint_urls=bool(env_prefix))
    kwargs: dict[str, Any] = {"config": config, "endpoint_url": endpoint,
                              "region_name": get["AWS_REGION"] or env.get("AWS_REGION") or "us-east-1"}
    if get["AWS_ACCESS_KEY_ID"]:
        kwargs.update(aws_access_key_id=get["AWS_ACCESS_KEY_ID"], aws_secret_access_key=get["AWS_SECRET_ACCESS_KEY"],
                      aws_session_token=get["AWS_SESSION_TOKEN"])
    return boto3.session.Session().client("s3", **kwargs)


def source_client() -> Any:
    """The client for a model source: its own Secret's keys when the Job got them, else the default."""
    if os.environ.get(SOURCE_ENV_PREFIX + "AWS_ACCESS_KEY_ID"):
        return client(SOURCE_ENV_PREFIX)
    return client()


def translate(exc: BaseException, bucket: str, key: str, missing_ok: bool = False) -> Exception | None:
    """A storage error naming bucket and key for a botocore exception (None when missing_ok and 404)."""
    from botocore.exceptions import BotoCoreError, ClientError

    where = f"s3://{bucket}/{key}"
    if isinstance(exc, ClientError):
        err = exc.response.get("Error") or {}
        code = str(err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in DENIED:
            return StorageAccessDenied(f"access denied to {where} (bucket {bucket!r}, key {key!r}): {code}; "
                                       "check the Secret's AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        if code in MISSING:
            return None if missing_ok else ModelNotFound(f"{where} not found ({code})")
        return StorageUnavailable(f"{where}: {code} {err.get('Message', '')}".strip())
    if isinstance(exc, BotoCoreError):
        return StorageUnavailable(f"{where}: {exc}")
    return None


def _call(fn: Any, bucket: str, key: str, missing_ok: bool = False, **kwargs: Any) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        mapped = translate(exc, bucket, key, missing_ok)
        if mapped is None:
            return None
        raise mapped from None


def list_objects(cli: Any, loc: S3Location) -> list[ObjectInfo]:
    """Every object below a prefix (or the one object at a key), paginated."""
    found: list[ObjectInfo] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"Bucket": loc.bucket, "Prefix": loc.key}
        if token:
            kwargs["ContinuationToken"] = token
        page = _call(cli.list_objects_v2, loc.bucket, loc.key, **kwargs)
        for obj in page.get("Contents", []):
            modified = obj.get("LastModified")
            found.append(ObjectInfo(obj["Key"], int(obj.get("Size", 0)),
                                    modified.timestamp() if isinstance(modified, datetime) else 0.0))
        if not page.get("IsTruncated"):
            return found
        token = page.get("NextContinuationToken")


def get_bytes(cli: Any, bucket: str, key: str, missing_ok: bool = False) -> bytes | None:
    """A small object's content (None when missing and missing_ok)."""
    resp = _call(cli.get_object, bucket, key, missing_ok, Bucket=bucket, Key=key)
    if resp is None:
        return None
    with resp["Body"] as body:
        return body.read()


def put_bytes(cli: Any, bucket: str, key: str, data: bytes, content_type: str = "application/json") -> None:
    _call(cli.put_object, bucket, key, Bucket=bucket, Key=key, Body=data, ContentType=content_type)


def download(cli: Any, bucket: str, key: str, out: Path) -> None:
    """One object to a local file (multipart-aware through boto3's transfer manager)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    _call(cli.download_file, bucket, key, Bucket=bucket, Key=key, Filename=str(out))


def upload(cli: Any, path: Path, bucket: str, key: str) -> None:
    """One local file to an object (multipart above boto3's threshold)."""
    _call(cli.upload_file, bucket, key, Filename=str(path), Bucket=bucket, Key=key)


def object_sha256(cli: Any, bucket: str, key: str) -> str:
    """sha256 of an object, streamed (nothing written to disk)."""
    resp = _call(cli.get_object, bucket, key, Bucket=bucket, Key=key)
    h = hashlib.sha256()
    with resp["Body"] as body:
        for chunk in iter(lambda: body.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def delete_keys(cli: Any, bucket: str, keys: list[str]) -> None:
    """Delete objects, 1000 per request; a key that is already gone is fine."""
    for i in range(0, len(keys), 1000):
        batch = keys[i:i + 1000]
        resp = _call(cli.delete_objects, bucket, batch[0], Bucket=bucket,
                     Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
        errors = [e for e in (resp or {}).get("Errors", []) if e.get("Code") not in MISSING]
        if errors:
            first = errors[0]
            raise StorageUnavailable(f"s3://{bucket}/{first.get('Key')}: delete failed: {first.get('Code')} {first.get('Message', '')}")
