"""When an output is up to date: the rule behind idempotent re-runs, shared by the worker (skip the
work) and the dry run (count what would be skipped).

Every output carries, as S3 user metadata, the source's ETag and the options hash it was made with.
An output is up to date when both match the source as it is now and the options asked for now.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from cutout_fleet.metadata_codec import (
    DIGEST_NAME_SUFFIX,
    decode_metadata_value,
    encode_metadata_value,
    fit_metadata,
)
from cutout_fleet.storage import Storage

META_SOURCE_ETAG = "cutout-source-etag"
META_SOURCE_KEY = "cutout-source-key"
META_MODEL = "cutout-model"
META_OPTIONS_HASH = "cutout-options-hash"
# Informational (the hash decides freshness): the options that made the output, and what framing did.
META_OPTIONS = "cutout-options"  # compact JSON of the options that differ from their defaults
META_FILL_REACHED = "cutout-fill-reached"  # the product's share of the canvas along its limiting side
META_SCALE = "cutout-scale"  # output pixels per source pixel; above 1 the product was upscaled
META_NO_SUBJECT = "cutout-no-subject"  # "true": no product found, written uncropped (--on-no-subject keep)


def output_metadata(
    source_etag: str,
    source_key: str,
    model: str,
    options_hash: str,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The metadata written with an output, in the one encoding of `metadata_codec`.  A source key too
    long for S3's 2 KB limit is written as `cutout-source-key-sha256`; the report keeps the full key."""
    values = {
        **(extra or {}),
        META_SOURCE_ETAG: source_etag,
        META_SOURCE_KEY: source_key,
        META_MODEL: model,
        META_OPTIONS_HASH: options_hash,
    }
    return fit_metadata(values, longest=META_SOURCE_KEY)


def made_from(existing: dict[str, str] | None, source_key: str) -> bool:
    """True when an object's metadata says this fleet made it from `source_key` (any options)."""
    if not existing:
        return False
    if META_SOURCE_KEY in existing:
        return decode_metadata_value(existing[META_SOURCE_KEY]) == source_key
    digest = existing.get(META_SOURCE_KEY + DIGEST_NAME_SUFFIX)
    return digest == hashlib.sha256(source_key.encode("utf-8", "surrogatepass")).hexdigest()


def output_matches(existing: dict[str, str] | None, source_etag: str | None, options_hash: str) -> bool:
    """True when an output's metadata says it was made from this source (ETag) with these options."""
    return (
        existing is not None
        and bool(source_etag)
        and existing.get(META_OPTIONS_HASH) == encode_metadata_value(options_hash)
        and existing.get(META_SOURCE_ETAG) == encode_metadata_value(source_etag or "")
    )


def up_to_date(
    source: Storage,
    key: str,
    existing: dict[str, str] | None,
    options_hash: str,
    *,
    source_etag: str | None = None,
) -> bool:
    """True when `existing` (the output's metadata, or None) was made from this source with these options.

    The source is asked for its ETag only when the options already match, so a changed option costs
    one request (the output's HEAD, made by the caller), not two.  A caller that listed the source
    already knows its ETag and passes it.
    """
    if not existing or existing.get(META_OPTIONS_HASH) != encode_metadata_value(options_hash):
        return False
    if source_etag is None:
        source_etag = (source.head_metadata(key) or {}).get("etag")
    return output_matches(existing, source_etag, options_hash)
