"""Stream the keys under a prefix and sort them into images and ignored keys, page by page."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from cutout_fleet.keys import is_image_key
from cutout_fleet.storage import Storage

LISTING_CHUNK = 1000  # one S3 page


@dataclass
class ListingChunk:
    images: list[str] = field(default_factory=list)
    ignored: int = 0


def iter_listing_chunks(
    storage: Storage, prefix: str, *, exclude_prefix: str | None = None, chunk_size: int = LISTING_CHUNK
) -> Iterator[ListingChunk]:
    """Yield chunks of at most `chunk_size` image keys; memory stays flat however long the listing.

    `exclude_prefix` skips the output prefix when it lies inside the source prefix, so a re-run
    never treats last run's cutouts (or reports) as new inputs.
    """
    chunk = ListingChunk()
    for obj in storage.iter_objects(prefix):
        if obj.key.endswith("/"):
            continue  # folder markers made by consoles
        if exclude_prefix and obj.key.startswith(exclude_prefix):
            chunk.ignored += 1
        elif is_image_key(obj.key):
            chunk.images.append(obj.key)
        else:
            chunk.ignored += 1
        if len(chunk.images) >= chunk_size:
            yield chunk
            chunk = ListingChunk()
    if chunk.images or chunk.ignored:
        yield chunk
