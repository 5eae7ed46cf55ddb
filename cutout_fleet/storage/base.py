"""The `Storage` interface: the few operations the fleet needs from an object store."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cutout_fleet.errors import TransientError
from cutout_fleet.storage.location import Location


class WriteConflict(TransientError):
    """A conditional write lost: the object appeared or changed since it was checked."""

    code = "write_conflict"


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str


@dataclass(frozen=True)
class StoredObject:
    data: bytes
    etag: str


@dataclass(frozen=True)
class WriteCondition:
    """When a write may go ahead: always, only if the key is absent, or only over one ETag."""

    absent: bool = False
    etag: str | None = None


class Storage(ABC):
    """An S3 bucket or a local folder, as the producer, the worker and the reports use it."""

    location: Location

    @abstractmethod
    def iter_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix`, streamed in key order."""

    @abstractmethod
    def get(self, key: str, *, max_bytes: int, version: str | None = None) -> StoredObject:
        """The object's bytes and ETag; ImageTooLarge past `max_bytes`, SourceMissing when absent."""

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
        """Write one object: only if absent (`if_none_match`) or only over ETag `if_match` when given."""
        condition = WriteCondition(absent=if_none_match, etag=if_match)
        self._write(key, data, content_type=content_type, metadata=metadata, condition=condition)

    @abstractmethod
    def _write(
        self, key: str, data: bytes, *, content_type: str, metadata: dict[str, str], condition: WriteCondition
    ) -> None:
        """`put`, its condition gathered into one value; WriteConflict when the condition fails."""

    @abstractmethod
    def put_file(self, key: str, path: Path, *, content_type: str) -> None:
        """Upload a local file (a report) as `key`."""

    @abstractmethod
    def head_metadata(self, key: str) -> dict[str, str] | None:
        """The object's user metadata plus `etag` and `size`, or None when it does not exist."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; nothing happens when it does not exist."""
