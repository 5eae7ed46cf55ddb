"""botocore's failures mapped onto the fleet's error tree: which S3 answers fail an item, which retry."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from cutout_fleet.errors import AccessDenied, CutoutError, PermanentError, SourceMissing, TransientError

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


def http_status(exc: ClientError) -> int:
    """The HTTP status of a botocore ClientError (0 when the response carries none)."""
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def translate_s3_error(exc: Exception, what: str) -> CutoutError:
    """Map a botocore failure to our tree: permanent ones fail the item, the rest are retried."""
    if isinstance(exc, ClientError):
        return _translate_client_error(exc, what)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AccessDenied(f"{what}: no S3 credentials ({exc}); set them for boto3 (env, profile or role)")
    if isinstance(exc, ParamValidationError) or _refused_by_client(exc):
        # The request never left this machine and would be refused the same way every time.
        return PermanentError(f"{what}: invalid S3 request ({exc})", code="storage_error")
    if isinstance(exc, BotoConnectionError | BotoCoreError):
        return TransientError(f"{what}: cannot reach S3 ({exc}), will retry")
    return TransientError(f"{what}: {exc}")


def _refused_by_client(exc: Exception) -> bool:
    """http.client refused to build the request (a CR or LF in a header value is a ValueError), as
    opposed to a socket or TLS failure (an OSError), which may pass."""
    return isinstance(exc, HTTPClientError) and isinstance(exc.kwargs.get("error"), ValueError)


def _translate_client_error(exc: ClientError, what: str) -> CutoutError:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = http_status(exc)
    if code in _MISSING or (status == 404 and code not in _NO_BUCKET):
        return SourceMissing(f"{what}: no such object")
    if code in _NO_BUCKET:
        return SourceMissing(f"{what}: the bucket does not exist", code="bucket_missing")
    if code in _DENIED or status == 403:
        return AccessDenied(f"{what}: access denied ({code}); check the credentials and the IAM policy")
    if code in _TRANSIENT_CODES:
        return TransientError(f"{what}: S3 answered {code}, will retry")
    if status and 400 <= status < 500 and status not in (408, 429):
        return PermanentError(f"{what}: S3 refused the request ({code}, HTTP {status})", code="storage_error")
    return TransientError(f"{what}: S3 error {code or status}, will retry")


@contextmanager
def s3_errors(what: str) -> Iterator[None]:
    """Raise any botocore failure inside the block as our error for `what` (see translate_s3_error)."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise translate_s3_error(exc, what) from exc
