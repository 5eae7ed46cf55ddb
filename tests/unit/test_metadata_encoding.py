"""One encoding for every S3 user metadata value: percent-encoded UTF-8, ASCII left as it is."""

from __future__ import annotations

from cutout_fleet.freshness import (
    META_SOURCE_KEY,
    decode_metadata_value,
    encode_metadata_value,
    output_matches,
    output_metadata,
)


def test_a_non_ascii_source_key_is_stored_percent_encoded_and_reads_back_exactly() -> None:
    # Given a source key with a non-ASCII letter
    key = "cats/chelsea-ü.png"

    # When an output's metadata is made for it
    stored = output_metadata('"etag-1"', key, "u2netp", "o1-abc")[META_SOURCE_KEY]

    # Then it is the percent-encoding of its UTF-8 bytes, which decodes back to the key
    assert stored == "cats/chelsea-%C3%BC.png"
    assert decode_metadata_value(stored) == key


def test_every_metadata_value_is_printable_ascii_without_edge_spaces() -> None:
    # Given values an HTTP header would mangle: non-ASCII, control characters, a percent sign, spaces
    values = ["ß/ünï 𝄞.png", "tab\there", "new\nline", "100% off.jpg", " leading and trailing "]

    # When each is encoded
    encoded = [encode_metadata_value(value) for value in values]

    # Then each is printable ASCII with no space, and decodes back to what it was
    assert all(text.isascii() and text.isprintable() and " " not in text for text in encoded)
    assert [decode_metadata_value(text) for text in encoded] == values


def test_ascii_values_without_percent_or_space_are_left_as_they_are() -> None:
    # Given the ASCII values outputs always carried
    values = ['"0a1b2c-3"', "u2netp", "o1-4f5e6d", "p/a.jpg", "a+b=c(d)~e"]

    # When they are encoded
    # Then nothing changes, so outputs written before this encoding stay up to date
    assert [encode_metadata_value(value) for value in values] == values


def test_an_output_written_with_the_encoding_matches_its_source_and_options() -> None:
    # Given the metadata of an output made from a source with a non-ASCII key
    metadata = output_metadata('"etag-1"', "p/ü.png", "u2netp", "o1-abc")

    # When it is compared with the same source and options, then with changed options
    # Then only the first matches
    assert output_matches(metadata, '"etag-1"', "o1-abc")
    assert not output_matches(metadata, '"etag-1"', "o1-other")
