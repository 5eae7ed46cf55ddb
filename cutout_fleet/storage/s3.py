"""`S3Storage`: a bucket on AWS S3, MinIO or moto through one boto3 client with botocore's retries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeAlias

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from cutout_fleet.config.settings import S3Settings
from cutout_fleet.errors import AccessDenied, ImageTooLarge, SourceMissing, TransientError
from cutout_fleet.storage.base import ObjectInfo, Storage, StoredObject, WriteCondition, WriteConflict
from cutout_fleet.storage.location import Location
from cutout_fleet.storage.s3_errors import http_status, s3_errors, translate_s3_error

S3Client: TypeAlias = Any  # a boto3 S3 client (boto3 ships no type information)

HTTP_NOT_FOUND = 404
HTTP_FORBIDDEN = 403
HTTP_PRECONDITION_FAILED = 412


def s3_client(settings: S3Settings) -> S3Client:
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


def _etag(response: dict[str, Any]) -> str:
    return str(response.get("ETag", "")).strip('"')


class S3Storage(Storage):
    def __init__(self, location: Location, client: S3Client) -> None:
        self.location = location
        self.client = client

    def _uri(self, key: str) -> str:
        return f"s3://{self.location.bucket}/{key}"

    def iter_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        """Stream the listing page by page; never the whole listing in memory."""
        paginator = self.client.get_paginator("list_objects_v2")
        with s3_errors(f"listing {self._uri(prefix)}"):
            for page in paginator.paginate(Bucket=self.location.bucket, Prefix=prefix):
                for obj in page.get("Contents", ()):
                    yield ObjectInfo(obj["Key"], int(obj.get("Size", 0)), _etag(obj))

    def get(self, key: str, *, max_bytes: int, version: str | None = None) -> StoredObject:
        extra = {"VersionId": version} if version else {}
        with s3_errors(self._uri(key)):
            response = self.client.get_object(Bucket=self.location.bucket, Key=key, **extra)
            length = int(response.get("ContentLength", 0))
            if length > max_bytes:
                response["Body"].close()
                raise ImageTooLarge(
                    f"{self._uri(key)}: {length:,} bytes, over the limit of {max_bytes:,} "
                    "(CUTOUT_LIMITS__MAX_BYTES)"
                )
            data = response["Body"].read()
        return StoredObject(data, _etag(response))

    def _write(
        self, key: str, data: bytes, *, content_type: str, metadata: dict[str, str], condition: WriteCondition
    ) -> None:
        """One PUT (never multipart, so the condition applies)."""
        conditions: dict[str, str] = {}
        if condition.absent:
            conditions["IfNoneMatch"] = "*"
        if condition.etag is not None:
            conditions["IfMatch"] = f'"{condition.etag}"'
        with s3_errors(f"writing {self._uri(key)}"):
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
                if http_status(exc) == HTTP_PRECONDITION_FAILED:
                    raise WriteConflict(f"{self._uri(key)} changed since it was checked") from exc
                raise

    def put_file(self, key: str, path: Path, *, content_type: str) -> None:
        what = f"writing {self._uri(key)}"
        try:
            with s3_errors(what):
                self.client.upload_file(
                    str(path), self.location.bucket, key, ExtraArgs={"ContentType": content_type}
                )
        except boto3.exceptions.S3UploadFailedError as exc:
            # boto3 wraps the real ClientError: a 403 or a missing bucket must stay permanent.
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ClientError | BotoCoreError):
                raise translate_s3_error(cause, what) from exc
            raise TransientError(f"{what}: {exc}") from exc

    def delete(self, key: str) -> None:
        with s3_errors(f"deleting {self._uri(key)}"):
            self.client.delete_object(Bucket=self.location.bucket, Key=key)

    def head_metadata(self, key: str) -> dict[str, str] | None:
        with s3_errors(self._uri(key)):
            try:
                response = self.client.head_object(Bucket=self.location.bucket, Key=key)
            except ClientError as exc:
                if http_status(exc) == HTTP_NOT_FOUND:
                    return None
                raise
        meta = dict(response.get("Metadata", {}))
        meta["etag"] = _etag(response)
        meta["size"] = str(response.get("ContentLength", ""))
        return meta

    def probe_write(self, key: str) -> None:
        """HeadBucket, then PUT and DELETE an empty `key`: the bucket exists and these credentials can write
        there.  SourceMissing (`bucket_missing`) or AccessDenied otherwise; it proves nothing about other
        credentials (the workers') or other prefixes."""
        bucket = self.location.bucket
        with s3_errors(f"s3://{bucket}"):
            try:
                self.client.head_bucket(Bucket=bucket)
            except ClientError as exc:
                # HeadBucket has no body, so a missing bucket comes back as a bare 404 ("no such object").
                if http_status(exc) == HTTP_NOT_FOUND:
                    raise SourceMissing(
                        f"s3://{bucket}: the bucket does not exist", code="bucket_missing"
                    ) from exc
                if http_status(exc) != HTTP_FORBIDDEN:
                    raise
                # HeadBucket needs s3:ListBucket, which a least-privilege producer may not have on the
                # output bucket: the write below decides (a missing bucket answers it NoSuchBucket).
        with s3_errors(f"writing {self._uri(key)}"):
            self.client.put_object(Bucket=bucket, Key=key, Body=b"")
        try:
            with s3_errors(f"deleting {self._uri(key)}"):
                self.client.delete_object(Bucket=bucket, Key=key)
        except AccessDenied:
            pass  # a policy that allows PutObject alone: the write was proved, the empty object stays
