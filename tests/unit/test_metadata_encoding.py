"""One encoding for every S3 user metadata value: printable ASCII as it is, anything else as RFC 2047
encoded words, and a source key too long for S3's 2 KB limit stored as its SHA-256."""

from __future__ import annotations

import hashlib

import pytest
from botocore.exceptions import HTTPClientError

from cutout_fleet.errors import PermanentError, TransientError
from cutout_fleet.freshness import META_SOURCE_KEY, output_matches, output_metadata
from cutout_fleet.metadata_codec import (
    S3_USER_METADATA_MAX_BYTES,
    decode_metadata_value,
    encode_metadata_value,
    metadata_bytes,
)
from cutout_fleet.storage.s3_errors import translate_s3_error

HEADER_HOSTILE = ["ß/ünï 𝄞.png", "tab\there", "new\nline", "p/cr\rx.png", " leading and trailing ", "=?x?="]


def test_a_non_ascii_source_key_is_stored_as_an_rfc2047_encoded_word_and_reads_back_exactly() -> None:
    # Given a source key with a non-ASCII letter
    key = "cats/chelsea-ü.png"

    # When an output's metadata is made for it
    stored = output_metadata('"etag-1"', key, "u2netp", "o1-abc")[META_SOURCE_KEY]

    # Then it is one base64 encoded word of its UTF-8 bytes, which decodes back to the key
    assert stored == "=?UTF-8?B?Y2F0cy9jaGVsc2VhLcO8LnBuZw==?="
    assert decode_metadata_value(stored) == key


@pytest.mark.parametrize("value", HEADER_HOSTILE)
def test_a_value_a_header_would_refuse_or_mangle_is_encoded_and_reads_back(value: str) -> None:
    # When a value with non-ASCII, control characters, edge spaces or an encoded-word marker is encoded
    encoded = encode_metadata_value(value)

    # Then it is printable ASCII without edge spaces, and decodes back to what it was
    assert encoded.isascii() and encoded.isprintable() and encoded == encoded.strip()
    assert decode_metadata_value(encoded) == value


def test_a_long_non_ascii_value_is_split_into_encoded_words_of_at_most_75_characters() -> None:
    value = "ü" * 300
    words = encode_metadata_value(value).split(" ")
    assert len(words) > 1 and all(len(word) <= 75 for word in words)
    assert decode_metadata_value(" ".join(words)) == value


def test_printable_ascii_values_are_left_as_they_are() -> None:
    # Given the ASCII values outputs always carried, and keys with punctuation and inner spaces
    values = ['"0a1b2c-3"', "u2netp", "o1-4f5e6d", "p/a.jpg", "a+b=c(d)~e", "100% off.jpg", "two words.png"]

    # Then nothing changes, so outputs written before this encoding stay up to date
    assert [encode_metadata_value(value) for value in values] == values
    assert [decode_metadata_value(value) for value in values] == values


def test_a_source_key_past_the_s3_metadata_limit_is_stored_as_its_sha256() -> None:
    # Given a source key whose encoding alone passes S3's 2 KB of user metadata
    key = "p/" + "ü" * 1200 + ".png"

    # When an output's metadata is made for it
    metadata = output_metadata('"etag-1"', key, "u2netp", "o1-abc")

    # Then the key is replaced by its digest, and the whole fits
    assert META_SOURCE_KEY not in metadata
    assert metadata[META_SOURCE_KEY + "-sha256"] == hashlib.sha256(key.encode()).hexdigest()
    assert metadata_bytes(metadata) <= S3_USER_METADATA_MAX_BYTES
    assert output_matches(metadata, '"etag-1"', "o1-abc")


def test_the_longest_s3_key_still_fits_in_full() -> None:
    key = "ü" * 512  # 1024 bytes of UTF-8, S3's longest key
    metadata = output_metadata('"' + "e" * 34 + '"', key, "birefnet-general", "o1-" + "f" * 64)
    assert decode_metadata_value(metadata[META_SOURCE_KEY]) == key


def test_an_output_written_with_the_encoding_matches_its_source_and_options() -> None:
    metadata = output_metadata('"etag-1"', "p/ü.png", "u2netp", "o1-abc")
    assert output_matches(metadata, '"etag-1"', "o1-abc")
    assert not output_matches(metadata, '"etag-1"', "o1-other")


def test_a_request_the_http_client_refuses_to_build_is_permanent_but_a_socket_error_is_not() -> None:
    refused = HTTPClientError(error=ValueError("Invalid header value b'x\\ry'"))
    reset = HTTPClientError(error=ConnectionResetError("reset by peer"))

    assert isinstance(translate_s3_error(refused, "writing s3://b/k"), PermanentError)
    assert isinstance(translate_s3_error(reset, "writing s3://b/k"), TransientError)
