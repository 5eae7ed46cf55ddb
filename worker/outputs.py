"""An item's outputs on the store: the cutout (or mask), the mask beside it, and their metadata.

The mask goes first and the cutout last: without a safety level the cutout is the item's "up to date"
marker, so an item cut short between the two writes is made again, never left with a stale mask.
"""

from __future__ import annotations

import json
from typing import Protocol

from cutout_fleet.freshness import (
    META_FILL_REACHED,
    META_NO_SUBJECT,
    META_OPTIONS,
    META_SCALE,
    output_metadata,
)
from cutout_fleet.keys import mask_key
from cutout_fleet.options import ImageOptions, changed_options
from cutout_fleet.storage import Storage
from cutout_fleet.worker.conditional_write import put_checked
from cutout_fleet.worker.imaging.finish import Framing

MASK_CONTENT_TYPE = "image/png"


class OutputData(Protocol):
    """What is written for one item (worker/pipeline.py's Cutout)."""

    @property
    def data(self) -> bytes: ...
    @property
    def content_type(self) -> str: ...
    @property
    def mask(self) -> bytes | None: ...
    @property
    def framing(self) -> Framing | None: ...


def item_metadata(
    source_etag: str, source_key: str, options: ImageOptions, options_hash: str, framing: Framing | None
) -> dict[str, str]:
    """The freshness metadata, plus the options that made the output and what framing did."""
    extra: dict[str, str] = {}
    changed = changed_options(options)
    if changed:
        extra[META_OPTIONS] = json.dumps(changed, sort_keys=True, separators=(",", ":"))
    if framing is not None:
        extra[META_SCALE] = f"{framing.scale:.4g}"
        if framing.fill_reached is not None:
            extra[META_FILL_REACHED] = f"{framing.fill_reached:.4g}"
        if framing.no_subject:
            extra[META_NO_SUBJECT] = "true"
    return output_metadata(source_etag, source_key, options.model, options_hash, extra)


def put_outputs(
    out: Storage,
    key: str,
    output: OutputData,
    *,
    metadata: dict[str, str],
    seen: dict[str, str] | None,
    source_etag: str,
    options_hash: str,
) -> None:
    """The mask beside `key` when there is one, then the output at `key`; each written only over what
    was checked (`seen` is `key`'s HEAD; the mask's own is asked for here)."""
    if output.mask is not None:
        beside = mask_key(key)
        put_checked(
            out,
            beside,
            output.mask,
            content_type=MASK_CONTENT_TYPE,
            metadata=metadata,
            seen=out.head_metadata(beside),
            source_etag=source_etag,
            options_hash=options_hash,
        )
    put_checked(
        out,
        key,
        output.data,
        content_type=output.content_type,
        metadata=metadata,
        seen=seen,
        source_etag=source_etag,
        options_hash=options_hash,
    )
