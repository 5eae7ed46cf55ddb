"""When an output is up to date: the rule behind idempotent re-runs, shared by the worker (skip the
work) and the dry run (count what would be skipped).

Every output carries, as S3 user metadata, the source's ETag and the options hash it was made with.
An output is up to date when both match the source as it is now and the options asked for now.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from cutout_fleet.storage import Storage

META_SOURCE_ETAG = "cutout-source-etag"
META_SOURCE_KEY = "cutout-source-key"
META_MODEL = "cutout-model"
META_OPTIONS_HASH = "cutout-options-hash"

# S3 user metadata travels in HTTP headers, so it must be printable ASCII, and a header loses leading and
# trailing spaces.  One encoding for every value: the percent-encoding of its UTF-8 bytes (RFC 3986, as
# in URLs), keeping letters, digits and this punctuation as they are; `%`, the space, control characters
# and all non-ASCII become `%XX`.  ETags, model names and options hashes are therefore unchanged.
METADATA_SAFE = "!\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~"


def encode_metadata_value(value: str) -> str:
    """`value` as it is stored in S3 user metadata: see METADATA_SAFE."""
    return quote(value, safe=METADATA_SAFE)


def decode_metadata_value(stored: str) -> str:
    """The value `encode_metadata_value` wrote (`chelsea-%C3%BC.png` -> `chelsea-ü.png`)."""
    return unquote(stored, errors="strict")


def output_metadata(source_etag: str, source_key: str, model: str, options_hash: str) -> dict[str, str]:
    """The metadata written with an output, every value encoded by `encode_metadata_value`."""
    values = {
        META_SOURCE_ETAG: source_etag,
        META_SOURCE_KEY: source_key,
        META_MODEL: model,
        META_OPTIONS_HASH: options_hash,
    }
    return {name: encode_metadata_value(value) for name, value in values.items()}


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
