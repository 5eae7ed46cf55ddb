"""Where a job's keys come from: a prefix listing or a manifest, streamed in chunks of items."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cutout_fleet.keys import is_image_key, relative_key
from cutout_fleet.producer.manifest import ManifestEntry
from cutout_fleet.storage import Location, Storage

LISTING_CHUNK = 1000  # one S3 page


@dataclass(frozen=True)
class SourceItem:
    key: str
    bucket: str = ""
    version: str | None = None
    size: int | None = None
    etag: str | None = None
    options: dict[str, object] | None = None  # per-key overrides (ImageOptions field names)


@dataclass
class ListingChunk:
    images: list[SourceItem] = field(default_factory=list)
    ignored: int = 0


@dataclass(frozen=True)
class KeyFilter:
    """--include / --exclude globs, matched against the key below the source prefix."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    base_prefix: str = ""

    def accepts(self, key: str) -> bool:
        rel = relative_key(key, self.base_prefix)
        if self.include and not any(fnmatch.fnmatchcase(rel, pattern) for pattern in self.include):
            return False
        return not any(fnmatch.fnmatchcase(rel, pattern) for pattern in self.exclude)


def output_inside(source: Location, out: Location) -> str | None:
    """The output folder when it lies inside the listed prefix (same bucket or folder), else None."""
    if source.scheme == out.scheme == "file":
        root, target = Path(source.bucket), Path(out.bucket)
        return target.relative_to(root).as_posix() + "/" if root in target.parents else None
    same_place = (source.scheme, source.bucket) == (out.scheme, out.bucket)
    out_folder = out.prefix.strip("/") + "/" if out.prefix.strip("/") else None
    return out_folder if same_place and out_folder and out_folder.startswith(source.prefix) else None


def _chunks(items: Iterable[SourceItem | None], chunk_size: int) -> Iterator[ListingChunk]:
    """Group items into chunks; None stands for a key that was ignored."""
    chunk = ListingChunk()
    for item in items:
        if item is None:
            chunk.ignored += 1
            continue
        chunk.images.append(item)
        if len(chunk.images) >= chunk_size:
            yield chunk
            chunk = ListingChunk()
    if chunk.images or chunk.ignored:
        yield chunk


def iter_listing_chunks(
    storage: Storage,
    prefix: str,
    *,
    exclude_prefix: str | None = None,
    key_filter: KeyFilter | None = None,
    chunk_size: int = LISTING_CHUNK,
) -> Iterator[ListingChunk]:
    """Chunks of at most `chunk_size` image keys under `prefix`; memory stays flat however long the listing.

    `exclude_prefix` skips the output prefix when it lies inside the source prefix, so a re-run
    never treats last run's cutouts (or reports) as new inputs.
    """

    def items() -> Iterator[SourceItem | None]:
        for obj in storage.iter_objects(prefix):
            if obj.key.endswith("/"):
                continue  # folder markers made by consoles
            skip = (exclude_prefix and obj.key.startswith(exclude_prefix)) or not is_image_key(obj.key)
            if skip or (key_filter is not None and not key_filter.accepts(obj.key)):
                yield None
            else:
                yield SourceItem(obj.key, size=obj.size, etag=obj.etag)

    return _chunks(items(), chunk_size)


def iter_manifest_chunks(
    entries: Iterable[ManifestEntry], *, key_filter: KeyFilter | None = None, chunk_size: int = LISTING_CHUNK
) -> Iterator[ListingChunk]:
    """Chunks from manifest entries; non-image keys are ignored."""

    def items() -> Iterator[SourceItem | None]:
        for entry in entries:
            key = entry.key
            if not is_image_key(key) or (key_filter is not None and not key_filter.accepts(key)):
                yield None
            else:
                options = entry.options or None
                yield SourceItem(key, bucket=entry.bucket, version=entry.version, options=options)

    return _chunks(items(), chunk_size)
