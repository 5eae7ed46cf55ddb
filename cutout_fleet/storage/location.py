"""Where a job reads or writes: an `s3://bucket/prefix` or a local folder, parsed once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cutout_fleet.errors import ConfigError

S3_SCHEME = "s3://"


@dataclass(frozen=True)
class Location:
    """A parsed `s3://bucket/prefix` or local folder."""

    scheme: str  # "s3" or "file"
    bucket: str  # bucket name, or the folder path for "file"
    prefix: str

    @property
    def uri(self) -> str:
        if self.scheme == "s3":
            return f"{S3_SCHEME}{self.bucket}/{self.prefix}"
        return str(Path(self.bucket) / self.prefix) if self.prefix else self.bucket


def parse_location(text: str) -> Location:
    """`s3://BUCKET/PREFIX` or a folder (made absolute); any other URI scheme is refused."""
    if text.startswith(S3_SCHEME):
        bucket, _, prefix = text[len(S3_SCHEME) :].partition("/")
        if not bucket:
            raise ConfigError(f"{text!r}: an S3 location needs a bucket, as in s3://BUCKET/PREFIX")
        return Location("s3", bucket, prefix)
    if "://" in text:
        raise ConfigError(f"{text!r}: only s3:// URIs and local folders are supported")
    return Location("file", str(Path(text).expanduser().resolve()), "")
