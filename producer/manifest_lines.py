"""A manifest's text, line by line, from a local file or an S3 object; the formats are parsed in `manifest`.

Both readers keep line endings (a quoted CSV field may hold a newline), split lines alike (on \\n, \\r
and \\r\\n), drop a BOM, and refuse a line that is not UTF-8 by its number.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from botocore.exceptions import ClientError

from cutout_fleet.errors import AccessDenied, InvalidOptions, SourceMissing
from cutout_fleet.storage import S3Client, parse_location, s3_errors

# Bytes that are not UTF-8 survive decoding as lone surrogates (errors="surrogateescape"), so the
# error can name its exact line instead of the 8 KiB block the decoder happened to be reading.
_NOT_UTF8 = re.compile("[\udc80-\udcff]")


class ManifestError(InvalidOptions):
    """A manifest (or one of its lines) is malformed; the message names the line and the fix."""

    code = "invalid_manifest"


def read_lines(location: str, s3_client: S3Client | None = None, *, etag: str | None = None) -> Iterator[str]:
    """The lines of a local or `s3://` manifest, read as they are asked for.

    An `s3://` location that names no object, or comes without a client, is refused at once.  `etag`
    (from `manifest_etag`) pins an `s3://` manifest: if the object was replaced since, the read fails.
    """
    if location.startswith("s3://"):
        client, bucket, key = _s3_object(location, s3_client)
        raw = _s3_lines(location, bucket, key, client, etag)
    else:
        raw = _local_lines(location)
    return _checked_lines(raw, location)


def manifest_etag(location: str, s3_client: S3Client | None = None) -> str | None:
    """The ETag of an `s3://` manifest now; None for a local file.

    The producer reads a manifest more than once (validate, then stream) and pins every read to this
    ETag: anyone who can write to its bucket could otherwise replace it between the reads, and the job
    would enqueue lines that were never validated (an object named twice, which never finishes).
    """
    if not location.startswith("s3://"):
        return None
    client, bucket, key = _s3_object(location, s3_client)
    with s3_errors(f"manifest {location}"):
        return str(client.head_object(Bucket=bucket, Key=key)["ETag"])


def _s3_object(location: str, client: S3Client | None) -> tuple[S3Client, str, str]:
    """(client, bucket, key) of an `s3://` manifest, refusing a prefix or a missing client before any read."""
    if client is None:
        raise ValueError(f"reading the manifest {location} needs an S3 client")
    parsed = parse_location(location)
    if not parsed.prefix or parsed.prefix.endswith("/"):
        raise ManifestError(
            f"manifest {location}: name the manifest object, as in s3://BUCKET/jobs/manifest.csv"
        )
    return client, parsed.bucket, parsed.prefix


def _local_lines(location: str) -> Iterator[str]:
    path = Path(location).expanduser()
    try:
        # newline="" hands the csv module the line endings as written, as it asks.
        with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
            yield from handle
    except FileNotFoundError as exc:
        raise SourceMissing(f"manifest {location}: no such file") from exc
    except IsADirectoryError as exc:
        raise ManifestError(f"manifest {location}: is a folder; give the manifest file itself") from exc
    except PermissionError as exc:
        raise AccessDenied(f"manifest {location}: permission denied") from exc


def _s3_lines(location: str, bucket: str, key: str, client: S3Client, etag: str | None) -> Iterator[str]:
    # The connection can also drop mid-stream; the producer sees that as it would a failed GET.
    with s3_errors(f"manifest {location}"):
        try:
            body = client.get_object(Bucket=bucket, Key=key, **({"IfMatch": etag} if etag else {}))["Body"]
        except ClientError as exc:
            if etag and _precondition_failed(exc):
                raise ManifestError(
                    f"manifest {location} was replaced while it was being read (it no longer has the "
                    f"ETag {etag} that was validated); nothing was enqueued from the new one: enqueue again"
                ) from exc
            raise
        try:
            for number, raw in enumerate(body.iter_lines(keepends=True), 1):
                yield raw.decode("utf-8-sig" if number == 1 else "utf-8", errors="surrogateescape")
        finally:
            body.close()


def _precondition_failed(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 412 or error.get("Code") in {"PreconditionFailed", "412"}


def _checked_lines(lines: Iterable[str], where: str) -> Iterator[str]:
    for number, line in enumerate(lines, 1):
        if _NOT_UTF8.search(line):
            raise ManifestError(
                f"manifest {where}, line {number}: not UTF-8 text; save the manifest as UTF-8"
            )
        yield line
