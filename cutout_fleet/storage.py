"""Where images come from and go to: S3 (AWS, MinIO, moto) or a local folder, behind one interface."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from cutout_fleet.config.settings import S3Settings
from cutout_fleet.errors import (
    AccessDenied,
    ConfigError,
    CutoutError,
    ImageTooLarge,
    PermanentError,
    SourceMissing,
    TransientError,
)
from cutout_fleet.keys import safe_local_path


class WriteConflict(TransientError):
    """A conditional write lost: the object appeared or changed since it was checked."""

    code = "write_conflict"


_MISSING = {"NoSuchKey", "404", "NotFound"}
# 4xx answers that botocore itself treats as passing (timeouts, throttling): still passing after its
# retries ran out, so the task retries them too instead of failing the item for good.
_TRANSIENT_CODES = {
    "RequestTimeout",
    "RequestTimeoutException",
    "PriorRequestNotComplete",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "EC2ThrottledException",
}
_NO_BUCKET = {"NoSuchBucket"}
_DENIED = {
    "AccessDenied",
    "403",
    "Forbidden",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AllAccessDisabled",
}


@dataclass(frozen=True)
class Location:
    """A parsed `s3://bucket/prefix` or local folder."""

    scheme: str  # "s3" or "file"
    bucket: str  # bucket name, or the folder path for "file"
    prefix: str

    @property
    def uri(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.prefix}"
        return str(Path(self.bucket) / self.prefix) if self.prefix else self.bucket


def parse_location(text: str) -> Location:
    if text.startswith("s3://"):
        bucket, _, prefix = text[len("s3://") :].partition("/")
        if not bucket:
            raise ConfigError(f"{text!r}: an S3 location needs a bucket, as in s3://BUCKET/PREFIX")
        return Location("s3", bucket, prefix)
    if "://" in text:
        raise ConfigError(f"{text!r}: only s3:// URIs and local folders are supported")
    return Location("file", str(Path(text).expanduser().resolve()), "")


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str


@dataclass(frozen=True)
class StoredObject:
    data: bytes
    etag: str


class Storage(Protocol):
    """The few operations the fleet needs from an object store."""

    location: Location

    def iter_objects(self, prefix: str) -> Iterator[ObjectInfo]: ...
    def get(self, key: str, *, max_bytes: int, version: str | None = None) -> StoredObject: ...
    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        metadata: dict[str, str],
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> None: ...
    def put_file(self, key: str, path: Path, *, content_type: str) -> None: ...
    def head_metadata(self, key: str) -> dict[str, str] | None: ...


def s3_client(settings: S3Settings):
    """A boto3 client with botocore's retry mode (backoff + jitter) and timeouts from settings."""
    config = Config(
        region_name=settings.region,
        # total_max_attempts counts the first try too ("max_attempts" here would mean retries after it).
        retries={"mode": settings.retry_mode, "total_max_attempts": settings.max_attempts},
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        max_pool_connections=settings.max_pool_connections,
        s3={"addressing_style": settings.addressing_style},
    )
    verify = str(settings.ca_bundle) if settings.ca_bundle else None  # None: botocore's default trust store
    return boto3.session.Session().client(
        "s3", endpoint_url=settings.endpoint_url or None, config=config, verify=verify
    )


def translate_s3_error(exc: Exception, what: str) -> CutoutError:
    """Map a botocore failure to our tree: permanent ones fail the item, the rest are retried."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _MISSING or (status == 404 and code not in _NO_BUCKET):
            return SourceMissing(f"{what}: no such object")
        if code in _NO_BUCKET:
            return SourceMissing(f"{what}: the bucket does not exist", code="bucket_missing")
        if code in _DENIED or status == 403:
            return AccessDenied(f"{what}: access denied ({code}); check the credentials and the IAM policy")
        if code in _TRANSIENT_CODES:
            return TransientError(f"{what}: S3 answered {code}, will retry")
        if status and 400 <= status < 500 and status not in (408, 429):
            return PermanentError(
                f"{what}: S3 refused the request ({code}, HTTP {status})", code="storage_error"
            )
        return TransientError(f"{what}: S3 error {code or status}, will retry")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AccessDenied(f"{what}: no S3 credentials ({exc}); set them for boto3 (env, profile or role)")
    if isinstance(exc, ParamValidationError):
        return PermanentError(f"{what}: invalid S3 request ({exc})", code="storage_error")
    if isinstance(exc, BotoConnectionError | BotoCoreError):
        return TransientError(f"{what}: cannot reach S3 ({exc}), will retry")
    return TransientError(f"{what}: {exc}")


class S3Storage:
    def __init__(self, location: Location, client) -> None:
        self.location = location
        self.client = client

    def _uri(self, key: str) -> str:
        return f"s3://{self.location.bucket}/{key}"

    def iter_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        """Stream the listing page by page; never the whole listing in memory."""
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.location.bucket, Prefix=prefix):
                for obj in page.get("Contents", ()):
                    yield ObjectInfo(obj["Key"], int(obj.get("Size", 0)), str(obj.get("ETag", "")).strip('"'))
        except (ClientError, BotoCoreError) as exc:
            raise translate_s3_error(exc, f"listing {self._uri(prefix)}") from exc

    def get(self, key: str, *, max_bytes: int, version: str | None = None) -> StoredObject:
        extra = {"VersionId": version} if version else {}
        try:
            response = self.client.get_object(Bucket=self.location.bucket, Key=key, **extra)
            length = int(response.get("ContentLength", 0))
            if length > max_bytes:
                response["Body"].close()
                raise ImageTooLarge(
                    f"{self._uri(key)}: {length:,} bytes, over the limit of {max_bytes:,} "
                    "(CUTOUT_LIMITS__MAX_BYTES)"
                )
            data = response["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise translate_s3_error(exc, self._uri(key)) from exc
        return StoredObject(data, str(response.get("ETag", "")).strip('"'))

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        metadata: dict[str, str],
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> None:
        """One PUT (never multipart, so the condition applies): only if absent, or only over `if_match`."""
        conditions: dict[str, str] = {}
        if if_none_match:
            conditions["IfNoneMatch"] = "*"
        if if_match is not None:
            conditions["IfMatch"] = f'"{if_match}"'
        try:
            self.client.put_object(
                Bucket=self.location.bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                Metadata=metadata,
                **conditions,
            )
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412:
                raise WriteConflict(f"{self._uri(key)} changed since it was checked") from exc
            raise translate_s3_error(exc, f"writing {self._uri(key)}") from exc
        except BotoCoreError as exc:
            raise translate_s3_error(exc, f"writing {self._uri(key)}") from exc

    def put_file(self, key: str, path: Path, *, content_type: str) -> None:
        try:
            self.client.upload_file(
                str(path), self.location.bucket, key, ExtraArgs={"ContentType": content_type}
            )
        except (ClientError, BotoCoreError) as exc:
            raise translate_s3_error(exc, f"writing {self._uri(key)}") from exc
        except boto3.exceptions.S3UploadFailedError as exc:
            # boto3 wraps the real ClientError: a 403 or a missing bucket must stay permanent.
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ClientError | BotoCoreError):
                raise translate_s3_error(cause, f"writing {self._uri(key)}") from exc
            raise TransientError(f"writing {self._uri(key)}: {exc}") from exc

    def head_metadata(self, key: str) -> dict[str, str] | None:
        try:
            response = self.client.head_object(Bucket=self.location.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise translate_s3_error(exc, self._uri(key)) from exc
        except BotoCoreError as exc:
            raise translate_s3_error(exc, self._uri(key)) from exc
        meta = dict(response.get("Metadata", {}))
        meta["etag"] = str(response.get("ETag", "")).strip('"')
        meta["size"] = str(response.get("ContentLength", ""))
        return meta


class LocalStorage:
    """A folder used like a bucket (embedded mode).  Keys are checked before they become paths."""

    def __init__(self, location: Location) -> None:
        self.location = location
        self.root = Path(location.bucket)

    def iter_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            raise SourceMissing(f"{self.root} is not a folder", code="bucket_missing")
        # Sorted walk so the order (and which of two colliding inputs wins) matches S3's listing.
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in sorted(filenames):
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    stat = (Path(dirpath) / name).stat()
                    yield ObjectInfo(key, stat.st_size, f"{stat.st_mtime_ns:x}-{stat.st_size:x}")

    def get(self, key: str, *, max_bytes: int, version: str | None = None) -> StoredObject:
        path = safe_local_path(self.root, key)
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise ImageTooLarge(f"{path}: {size:,} bytes, over the limit of {max_bytes:,}")
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise SourceMissing(f"{path}: no such file") from exc
        except PermissionError as exc:
            raise AccessDenied(f"{path}: permission denied") from exc
        return StoredObject(data, hashlib.md5(data, usedforsecurity=False).hexdigest())

    def _write_atomically(self, key: str, write) -> None:
        path = safe_local_path(self.root, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        metadata: dict[str, str],
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> None:
        # One process writes a local folder: conditions have nothing to guard against here.
        self._write_atomically(key, lambda handle: handle.write(data))

    def put_file(self, key: str, path: Path, *, content_type: str) -> None:
        self._write_atomically(key, lambda handle: handle.write(path.read_bytes()))

    def head_metadata(self, key: str) -> dict[str, str] | None:
        path = safe_local_path(self.root, key)
        return {} if path.exists() else None


def open_storage(location: Location, s3_settings: S3Settings, client=None) -> Storage:
    if location.scheme == "s3":
        return S3Storage(location, client or s3_client(s3_settings))
    return LocalStorage(location)
