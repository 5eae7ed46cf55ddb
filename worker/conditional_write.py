"""Writing an output only over what was checked: absent -> If-None-Match, present -> If-Match its ETag."""

from __future__ import annotations

from cutout_fleet.freshness import output_matches
from cutout_fleet.storage import Storage, WriteConflict


def put_checked(
    out: Storage,
    key: str,
    data: bytes,
    *,
    content_type: str,
    metadata: dict[str, str],
    seen: dict[str, str] | None,
    source_etag: str,
    options_hash: str,
) -> None:
    """Write `key` over the state `seen` (its HEAD, or None when absent) and nothing newer.

    A redelivered task racing its twin loses the condition; if the winner wrote the same source and
    options, that is success, otherwise the item is retried (WriteConflict is a TransientError).
    """
    try:
        out.put(
            key,
            data,
            content_type=content_type,
            metadata=metadata,
            if_none_match=seen is None,
            if_match=None if seen is None else seen.get("etag"),
        )
    except WriteConflict:
        if not output_matches(out.head_metadata(key), source_etag, options_hash):
            raise
