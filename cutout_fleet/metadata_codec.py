"""The one encoding of S3 user metadata values, and S3's size limit on them.

User metadata travels in HTTP headers (`x-amz-meta-*`): botocore refuses a non-ASCII value, http.client
refuses a CR or LF, and a header loses leading and trailing spaces.  So a value is written:

- as it is, when it is printable ASCII with no leading or trailing space and no `=?`;
- otherwise as RFC 2047 encoded words (`=?UTF-8?B?…?=`, base64 of its UTF-8 bytes, words of at most
  75 characters joined by a space), as S3's documentation suggests for non-ASCII metadata.

S3 limits the user metadata of one object to 2 KB (names plus values, in UTF-8 bytes): `fit_metadata`
replaces a value that would pass it with its SHA-256 under a name that says so.
"""

from __future__ import annotations

import base64
import hashlib
from email.header import decode_header, make_header

ENCODED_WORD_PREFIX = "=?UTF-8?B?"
ENCODED_WORD_SUFFIX = "?="
# RFC 2047: an encoded word is at most 75 characters; 45 bytes of UTF-8 make 60 of base64, 72 in all.
ENCODED_WORD_MAX_BYTES = 45
S3_USER_METADATA_MAX_BYTES = 2048
DIGEST_NAME_SUFFIX = "-sha256"


def _as_is(value: str) -> bool:
    return (
        value.isascii()
        and value.isprintable()
        and value == value.strip(" ")
        and "=?" not in value  # would read back as an encoded word
    )


def _utf8_chunks(value: str) -> list[bytes]:
    """UTF-8 of `value` in pieces of at most ENCODED_WORD_MAX_BYTES, never splitting a character."""
    chunks: list[bytes] = []
    current = b""
    for char in value:
        encoded = char.encode("utf-8", "surrogatepass")
        if current and len(current) + len(encoded) > ENCODED_WORD_MAX_BYTES:
            chunks.append(current)
            current = b""
        current += encoded
    return [*chunks, current] if current else chunks


def encode_metadata_value(value: str) -> str:
    """`value` as it is stored in S3 user metadata (see the module docstring)."""
    if _as_is(value):
        return value
    words = (
        ENCODED_WORD_PREFIX + base64.b64encode(chunk).decode("ascii") + ENCODED_WORD_SUFFIX
        for chunk in _utf8_chunks(value)
    )
    return " ".join(words)


def decode_metadata_value(stored: str) -> str:
    """The value `encode_metadata_value` wrote (`=?UTF-8?B?w7w=?=` -> `ü`)."""
    if not stored.startswith(ENCODED_WORD_PREFIX):
        return stored
    return str(make_header(decode_header(stored)))


def metadata_bytes(metadata: dict[str, str]) -> int:
    """The size S3 counts against its user-metadata limit: names plus values, in UTF-8 bytes."""
    return sum(len(name.encode()) + len(value.encode()) for name, value in metadata.items())


def fit_metadata(values: dict[str, str], *, longest: str) -> dict[str, str]:
    """`values` encoded; when they would pass S3's limit, `longest` is replaced by `longest-sha256`, the
    hex SHA-256 of its UTF-8 (the caller keeps the full value elsewhere, e.g. in the job report)."""
    encoded = {name: encode_metadata_value(value) for name, value in values.items()}
    if metadata_bytes(encoded) <= S3_USER_METADATA_MAX_BYTES:
        return encoded
    digest = hashlib.sha256(values[longest].encode("utf-8", "surrogatepass")).hexdigest()
    del encoded[longest]
    encoded[longest + DIGEST_NAME_SUFFIX] = digest
    return encoded
