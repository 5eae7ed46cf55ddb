"""`LocalStorage`: a folder used like a bucket (embedded mode).  Keys are checked before they become paths.

Only regular files are objects.  Others may be able to write into the source folder, so the listing
leaves out, and records in `not_listed`, whatever else it meets there: FIFOs, sockets and devices,
broken symlinks and symlink loops, symlinks to folders, symlinks that lead out of the folder, folders
it cannot read.  A read opens the file without following any symlink on the way (a symlink inside the
folder is read at its real path) and with O_NONBLOCK, then checks that it opened a regular file: a FIFO
or a symlink swapped in after the listing can neither hang the read nor lead it out of the folder.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from cutout_fleet.errors import AccessDenied, ImageTooLarge, PermanentError, SourceMissing
from cutout_fleet.keys import safe_local_path
from cutout_fleet.storage.base import ObjectInfo, Storage, StoredObject, WriteCondition
from cutout_fleet.storage.location import Location

# Files left out of a listing that are kept by name (for the report); all of them are counted.
NOT_LISTED_KEPT = 100
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NO_FOLLOW_DIR_FLAGS = _DIR_FLAGS | os.O_NOFOLLOW
_NO_FOLLOW_FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


class NotAFile(PermanentError):
    """The key names something other than a regular file (a FIFO, a device, a folder)."""

    code = "not_a_file"


@dataclass(frozen=True)
class NotListedFile:
    key: str
    reason: str


@dataclass
class NotListed:
    """What one listing left out: how many entries, and the first NOT_LISTED_KEPT of them with the reason."""

    count: int = 0
    files: list[NotListedFile] = field(default_factory=list)

    def add(self, key: str, reason: str) -> None:
        self.count += 1
        if len(self.files) < NOT_LISTED_KEPT:
            self.files.append(NotListedFile(key, reason))


class LocalStorage(Storage):
    def __init__(self, location: Location) -> None:
        self.location = location
        self.root = Path(location.bucket)
        self.not_listed = NotListed()  # of the last listing

    def iter_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            raise SourceMissing(f"{self.root} is not a folder", code="bucket_missing")
        real_root = os.path.realpath(self.root)
        self.not_listed = not_listed = NotListed()

        def unreadable(exc: OSError) -> None:
            key = Path(exc.filename or self.root).relative_to(self.root).as_posix()
            if key.startswith(prefix):
                not_listed.add(key, f"a folder that cannot be read ({exc.strerror})")

        # Sorted walk so the order (and which of two colliding inputs wins) matches S3's listing.  It does
        # not descend into symlinked folders.
        for dirpath, dirnames, filenames in os.walk(self.root, onerror=unreadable):
            dirnames.sort()
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if not key.startswith(prefix):
                    continue
                found = _regular_file(os.path.join(dirpath, name), real_root)
                if isinstance(found, str):
                    not_listed.add(key, found)
                else:
                    yield ObjectInfo(key, found.st_size, f"{found.st_mtime_ns:x}-{found.st_size:x}")

    def get(self, key: str, *, max_bytes: int, version: str | None = None) -> StoredObject:
        path = self._path(key)
        try:
            with os.fdopen(self._open_inside(path), "rb") as handle:
                info = os.fstat(handle.fileno())
                if not stat.S_ISREG(info.st_mode):
                    raise NotAFile(f"{path}: {_kind(info.st_mode)}, not a regular file; it is not read")
                if info.st_size > max_bytes:
                    raise ImageTooLarge(f"{path}: {info.st_size:,} bytes, over the limit of {max_bytes:,}")
                data = handle.read(max_bytes + 1)  # a file still growing cannot pass the limit either
        except FileNotFoundError as exc:
            raise SourceMissing(f"{path}: no such file") from exc
        except PermissionError as exc:
            raise AccessDenied(f"{path}: permission denied") from exc
        except OSError as exc:  # ELOOP, ENOTDIR: a symlink or file where the listing saw a folder or file
            raise PermanentError(
                f"{path}: its path changed after the listing ({exc.strerror}); no symlink is followed there",
                code="unsafe_key",
            ) from exc
        if len(data) > max_bytes:
            raise ImageTooLarge(f"{path}: over the limit of {max_bytes:,} bytes")
        return StoredObject(data, hashlib.md5(data, usedforsecurity=False).hexdigest())

    def _path(self, key: str) -> Path:
        try:
            return safe_local_path(self.root, key)
        except RuntimeError as exc:  # pathlib's "Symlink loop"
            raise PermanentError(f"object key {key!r}: {exc}", code="unsafe_key") from exc

    def _open_inside(self, path: Path) -> int:
        """A file descriptor for `path`'s real file, opened one folder at a time from the root without
        following a symlink, with O_NONBLOCK; PermanentError when its real path leaves the root."""
        real_root = os.path.realpath(self.root)
        relative = os.path.relpath(os.path.realpath(path), real_root)
        parts = Path(relative).parts
        if not parts or parts[0] in (os.curdir, os.pardir):
            raise PermanentError(
                f"{path}: a symlink that leads out of {self.root}; not followed", code="unsafe_key"
            )
        folder = os.open(real_root, _DIR_FLAGS)
        try:
            for part in parts[:-1]:
                inner = os.open(part, _NO_FOLLOW_DIR_FLAGS, dir_fd=folder)
                os.close(folder)
                folder = inner
            return os.open(parts[-1], _NO_FOLLOW_FILE_FLAGS, dir_fd=folder)
        finally:
            os.close(folder)

    def _write(
        self, key: str, data: bytes, *, content_type: str, metadata: dict[str, str], condition: WriteCondition
    ) -> None:
        # One process writes a local folder: conditions have nothing to guard against here.
        self._write_atomically(key, lambda handle: handle.write(data))

    def put_file(self, key: str, path: Path, *, content_type: str) -> None:
        self._write_atomically(key, lambda handle: handle.write(path.read_bytes()))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def head_metadata(self, key: str) -> dict[str, str] | None:
        path = self._path(key)
        return {} if path.exists() else None

    def _write_atomically(self, key: str, write: Callable[[BinaryIO], object]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _regular_file(path: str, real_root: str) -> os.stat_result | str:
    """The stat of the regular file at `path` (a symlink is followed while it stays inside `real_root`),
    else why it is not listed."""
    try:
        info = os.lstat(path)
    except OSError as exc:  # gone since the folder was read, or not readable
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISLNK(info.st_mode):
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return "a broken symlink"
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "a symlink loop"
            return f"a symlink that cannot be followed ({exc.strerror})"
        if os.path.commonpath([os.path.realpath(path), real_root]) != real_root:
            return "a symlink that leads out of the source folder (not followed)"
        if stat.S_ISDIR(info.st_mode):
            return "a symlink to a folder (not followed)"
    return info if stat.S_ISREG(info.st_mode) else f"{_kind(info.st_mode)}, not a regular file"


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a file")
