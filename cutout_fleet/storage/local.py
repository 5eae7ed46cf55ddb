"""`LocalStorage`: a folder used like a bucket (embedded mode).  Keys are checked before they become paths."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from cutout_fleet.errors import AccessDenied, ImageTooLarge, SourceMissing
from cutout_fleet.keys import safe_local_path
from cutout_fleet.storage.base import ObjectInfo, Storage, StoredObject, WriteCondition
from cutout_fleet.storage.location import Location


class LocalStorage(Storage):
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

    def _write(
        self, key: str, data: bytes, *, content_type: str, metadata: dict[str, str], condition: WriteCondition
    ) -> None:
        # One process writes a local folder: conditions have nothing to guard against here.
        self._write_atomically(key, lambda handle: handle.write(data))

    def put_file(self, key: str, path: Path, *, content_type: str) -> None:
        self._write_atomically(key, lambda handle: handle.write(path.read_bytes()))

    def head_metadata(self, key: str) -> dict[str, str] | None:
        path = safe_local_path(self.root, key)
        return {} if path.exists() else None

    def _write_atomically(self, key: str, write: Callable[[BinaryIO], object]) -> None:
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
