"""Job manifests from local files: the S3 Batch Operations CSV, JSONL with per-key options, the first pass."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Mapping
from pathlib import Path

import pytest

from cutout_fleet.errors import InvalidOptions, SourceMissing
from cutout_fleet.producer.manifest import (
    JSONL_FIELDS,
    ManifestEntry,
    ManifestError,
    iter_manifest,
    manifest_format,
    scan_manifest,
)


def write(tmp_path: Path, name: str, text: str, *, bom: bool = False) -> str:
    """The manifest's path; bytes are written as given (no newline translation)."""
    path = tmp_path / name
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return str(path)


def jsonl(*records: Mapping[str, object]) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def read(location: str, **kwargs: object) -> list[ManifestEntry]:
    return list(iter_manifest(location, **kwargs))  # type: ignore[arg-type]


def error_of(location: str, **kwargs: object) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        read(location, **kwargs)
    return info.value


# --- format --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("m.csv", "csv"),
        ("M.CSV", "csv"),
        ("m.jsonl", "jsonl"),
        ("m.ndjson", "jsonl"),
        ("s3://shop-1/j/m.csv", "csv"),
    ],
)
def test_the_format_follows_the_extension(name: str, expected: str) -> None:
    assert manifest_format(name) == expected


def test_an_unknown_extension_asks_for_manifest_format(tmp_path: Path) -> None:
    location = write(tmp_path, "keys.txt", "shop-1,a.jpg\n")
    error = error_of(location)
    assert "--manifest-format" in str(error) and "keys.txt" in str(error)


def test_an_explicit_format_overrides_the_extension(tmp_path: Path) -> None:
    location = write(tmp_path, "keys.txt", "shop-1,a.jpg\n")
    assert [entry.key for entry in read(location, fmt="csv")] == ["a.jpg"]


def test_a_missing_local_manifest_is_source_missing(tmp_path: Path) -> None:
    with pytest.raises(SourceMissing) as info:
        read(str(tmp_path / "nope.csv"))
    assert "nope.csv" in str(info.value)


def test_a_manifest_error_is_an_invalid_options_error_with_its_own_code(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, "m.csv", "shop-1\n"))
    assert isinstance(error, InvalidOptions) and error.code == "invalid_manifest"


def test_an_s3_manifest_needs_a_client() -> None:
    with pytest.raises(ValueError, match="needs an S3 client"):
        iter_manifest("s3://shop-1/m.csv")


def test_an_s3_manifest_must_name_an_object_not_a_prefix() -> None:
    with pytest.raises(ManifestError, match="name the manifest object"):
        iter_manifest("s3://shop-1/jobs/", s3_client=object(), fmt="csv")


# --- CSV -----------------------------------------------------------------------------------------------


def test_csv_rows_give_bucket_and_key_without_a_version(tmp_path: Path) -> None:
    entries = read(write(tmp_path, "m.csv", "shop-1,shoes/a.jpg\nshop-2,bags/b.png\n"))
    assert entries == [
        ManifestEntry(bucket="shop-1", key="shoes/a.jpg", version=None, options={}, line=1),
        ManifestEntry(bucket="shop-2", key="bags/b.png", version=None, options={}, line=2),
    ]


def test_a_third_csv_column_is_the_version_id_and_an_empty_one_is_none(tmp_path: Path) -> None:
    entries = read(write(tmp_path, "m.csv", "shop-1,a.jpg,3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrH\nshop-1,b.jpg,\n"))
    assert [entry.version for entry in entries] == ["3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrH", None]


@pytest.mark.parametrize("header", ["bucket,key", "Bucket,Key,VersionId", "BUCKET,KEY,version_id"])
def test_a_header_first_row_is_skipped(tmp_path: Path, header: str) -> None:
    entries = read(write(tmp_path, "m.csv", f"{header}\nshop-1,a.jpg\n"))
    assert [(entry.key, entry.line) for entry in entries] == [("a.jpg", 2)]


@pytest.mark.parametrize(
    ("encoded", "key"),
    [
        ("photos/red+shoe%2B1.jpg", "photos/red shoe+1.jpg"),
        ("caf%C3%A9/%C3%A9t%C3%A9.png", "café/été.png"),
        ("a%2Cb%25.jpg", "a,b%.jpg"),
    ],
)
def test_csv_keys_are_url_decoded_as_batch_operations_writes_them(
    tmp_path: Path, encoded: str, key: str
) -> None:
    (entry,) = read(write(tmp_path, "m.csv", f"shop-1,{encoded}\n"))
    assert entry.key == key


def test_a_quoted_csv_key_may_hold_a_comma(tmp_path: Path) -> None:
    (entry,) = read(write(tmp_path, "m.csv", 'shop-1,"shoes/a,b.jpg",v1\n'))
    assert (entry.key, entry.version) == ("shoes/a,b.jpg", "v1")


def test_a_utf8_bom_is_tolerated(tmp_path: Path) -> None:
    (entry,) = read(write(tmp_path, "m.csv", "shop-1,a.jpg\n", bom=True))
    assert entry.bucket == "shop-1"


def test_a_bom_before_a_header_still_lets_the_header_be_skipped(tmp_path: Path) -> None:
    entries = read(write(tmp_path, "m.csv", "bucket,key\nshop-1,a.jpg\n", bom=True))
    assert [entry.key for entry in entries] == ["a.jpg"]


def test_blank_lines_are_skipped_and_entries_keep_their_line_numbers(tmp_path: Path) -> None:
    entries = read(write(tmp_path, "m.csv", "\nshop-1,a.jpg\n\n   \nshop-1,b.jpg\n\n"))
    assert [(entry.key, entry.line) for entry in entries] == [("a.jpg", 2), ("b.jpg", 5)]


def test_crlf_line_endings_are_read_like_lf(tmp_path: Path) -> None:
    entries = read(write(tmp_path, "m.csv", "shop-1,a.jpg,v1\r\nshop-1,b.jpg\r\n"))
    assert [(entry.key, entry.version) for entry in entries] == [("a.jpg", "v1"), ("b.jpg", None)]


def test_a_quoted_field_over_two_lines_is_named_by_its_first_line(tmp_path: Path) -> None:
    entries = read(write(tmp_path, "m.csv", 'shop-1,"a\nb.jpg"\nshop-1,c.jpg\n'))
    assert [(entry.key, entry.line) for entry in entries] == [("a\nb.jpg", 1), ("c.jpg", 3)]


@pytest.mark.parametrize(
    ("row", "says"),
    [
        ("shop-1", "found 1 field"),
        ("shop-1,a.jpg,v1,extra", "found 4 field"),
        (",a.jpg", "bucket (first field) is empty"),
        ("shop-1,", "key (second field) is empty"),
        ("My_Bucket,a.jpg", "not a valid S3 bucket name"),
        ("ab,a.jpg", "not a valid S3 bucket name"),
        ("-shop-1,a.jpg", "not a valid S3 bucket name"),
        ('shop-1,"a.jpg"x', "not valid CSV"),
    ],
)
def test_a_malformed_csv_row_names_the_manifest_and_its_line(tmp_path: Path, row: str, says: str) -> None:
    location = write(tmp_path, "m.csv", f"shop-1,a.jpg\n\n{row}\nshop-1,z.jpg\n")
    error = error_of(location)
    assert f"{location}, line 3" in str(error) and says in str(error)


def test_an_unclosed_quote_is_reported_not_swallowed(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, "m.csv", 'shop-1,a.jpg\nshop-1,"b.jpg\nshop-1,c.jpg\n'))
    assert "not valid CSV" in str(error)


def test_bytes_that_are_not_utf8_name_their_line(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(b"shop-1,a.jpg\nshop-1,caf\xe9.jpg\n")
    error = error_of(str(path))
    assert "line 2" in str(error) and "UTF-8" in str(error)


def test_entries_before_a_bad_line_stream_out_before_it_fails(tmp_path: Path) -> None:
    entries = iter_manifest(write(tmp_path, "m.csv", "shop-1,a.jpg\nshop-1\n"))
    assert next(entries).key == "a.jpg"
    with pytest.raises(ManifestError, match="line 2"):
        next(entries)


# --- JSONL ---------------------------------------------------------------------------------------------


def test_jsonl_lines_give_bucket_key_and_version(tmp_path: Path) -> None:
    location = write(tmp_path, "m.jsonl", jsonl({"bucket": "shop-1", "key": "a.jpg", "version": "v1"}))
    assert read(location) == [ManifestEntry(bucket="shop-1", key="a.jpg", version="v1", options={}, line=1)]


def test_jsonl_options_use_the_cli_flag_names_and_become_image_option_fields(tmp_path: Path) -> None:
    record = {
        "bucket": "shop-1",
        "key": "a.jpg",
        "model": "isnet-general-use",
        "background": "White",
        "sensitivity": 0.5,
        "mask_blur": 3,
        "mask_offset": -2,
        "format": "webp",
    }
    (entry,) = read(write(tmp_path, "m.jsonl", jsonl(record)))
    assert entry.options == {
        "model": "isnet-general-use",
        "background": "#ffffff",  # normalised as the task will see it
        "sensitivity": 0.5,
        "mask_blur_px": 3,
        "mask_offset_px": -2,
        "format": "webp",
    }


def test_jsonl_keys_are_taken_as_written_not_url_decoded(tmp_path: Path) -> None:
    (entry,) = read(write(tmp_path, "m.jsonl", jsonl({"bucket": "shop-1", "key": "red+shoe%2B1.jpg"})))
    assert entry.key == "red+shoe%2B1.jpg"


def test_null_fields_mean_not_given(tmp_path: Path) -> None:
    record = {"key": "a.jpg", "bucket": None, "version": None, "model": None}
    (entry,) = read(write(tmp_path, "m.jsonl", jsonl(record)), default_bucket="shop-9")
    assert (entry.bucket, entry.version, entry.options) == ("shop-9", None, {})


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"sensitivity": 2}, "sensitivity: Input should be less than or equal to 1"),
        ({"mask_blur": 100}, "mask_blur: "),
        ({"format": "gif"}, "format: "),
        ({"background": "teal"}, "background: "),
    ],
)
def test_a_bad_option_value_names_the_line_and_the_flag(
    tmp_path: Path, options: dict[str, object], says: str
) -> None:
    location = write(
        tmp_path,
        "m.jsonl",
        jsonl({"bucket": "shop-1", "key": "a.jpg"}, {"bucket": "shop-1", "key": "b.jpg", **options}),
    )
    error = error_of(location)
    assert f"{location}, line 2: invalid options" in str(error) and says in str(error)
    assert "_px" not in str(error)


@pytest.mark.parametrize("field", ["colour", "mask_blur_px", "Key"])
def test_an_unknown_field_is_an_error_listing_the_allowed_ones(tmp_path: Path, field: str) -> None:
    error = error_of(write(tmp_path, "m.jsonl", jsonl({"bucket": "shop-1", "key": "a.jpg", field: 1})))
    assert f"unknown field(s) {field}" in str(error) and ", ".join(JSONL_FIELDS) in str(error)


def test_invalid_json_names_its_line(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, "m.jsonl", '{"bucket": "shop-1", "key": "a.jpg"}\n{"key": "b.jpg",\n'))
    assert "line 2: not valid JSON" in str(error)


def test_a_line_that_is_not_an_object_is_an_error(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, "m.jsonl", '["shop-1", "a.jpg"]\n'))
    assert "line 1: expected a JSON object" in str(error)


@pytest.mark.parametrize(
    "record", [{"bucket": "shop-1"}, {"bucket": "shop-1", "key": ""}, {"bucket": "shop-1", "key": 5}]
)
def test_a_line_needs_a_non_empty_string_key(tmp_path: Path, record: dict[str, object]) -> None:
    error = error_of(write(tmp_path, "m.jsonl", jsonl(record)))
    assert '"key" must be a non-empty string' in str(error)


@pytest.mark.parametrize("bucket", ["B1", "b", 7])
def test_a_bad_jsonl_bucket_is_an_error(tmp_path: Path, bucket: object) -> None:
    error = error_of(write(tmp_path, "m.jsonl", jsonl({"bucket": bucket, "key": "a.jpg"})))
    assert "line 1" in str(error) and "not a valid S3 bucket name" in str(error)


def test_a_non_string_version_is_an_error(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, "m.jsonl", jsonl({"bucket": "shop-1", "key": "a.jpg", "version": 3})))
    assert '"version" must be a string' in str(error)


def test_the_default_bucket_fills_in_only_where_a_line_has_none(tmp_path: Path) -> None:
    location = write(tmp_path, "m.jsonl", jsonl({"key": "a.jpg"}, {"bucket": "shop-2", "key": "b.jpg"}))
    assert [entry.bucket for entry in read(location, default_bucket="shop-1")] == ["shop-1", "shop-2"]


def test_a_line_without_a_bucket_and_no_default_is_an_error(tmp_path: Path) -> None:
    error = error_of(
        write(tmp_path, "m.jsonl", jsonl({"bucket": "shop-1", "key": "a.jpg"}, {"key": "b.jpg"}))
    )
    assert "line 2: no bucket" in str(error)


def test_an_invalid_default_bucket_is_refused_before_reading(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="default bucket"):
        iter_manifest(str(tmp_path / "absent.jsonl"), default_bucket="Not_A_Bucket")


def test_jsonl_blank_lines_are_skipped_and_entries_keep_their_line_numbers(tmp_path: Path) -> None:
    location = write(
        tmp_path,
        "m.ndjson",
        '\n{"bucket": "shop-1", "key": "a.jpg"}\r\n  \n{"bucket": "shop-1", "key": "b.jpg"}',
    )
    assert [(entry.key, entry.line) for entry in read(location)] == [("a.jpg", 2), ("b.jpg", 4)]


# --- the first pass ------------------------------------------------------------------------------------


def test_scan_counts_entries_images_buckets_and_per_key_models(tmp_path: Path) -> None:
    location = write(
        tmp_path,
        "m.jsonl",
        jsonl(
            {"bucket": "shop-1", "key": "a.jpg"},
            {"bucket": "shop-2", "key": "b.PNG", "model": "isnet-general-use"},
            {"bucket": "shop-1", "key": "notes.txt", "model": "u2netp"},
            {"key": "c.webp"},
        ),
    )
    scan = scan_manifest(location, default_bucket="shop-3")
    assert (scan.entries, scan.image_entries, scan.ignored_entries) == (4, 3, 1)
    assert scan.buckets == {"shop-1", "shop-2", "shop-3"}
    assert scan.models == {"isnet-general-use", "u2netp"}


def test_scan_of_a_one_bucket_csv_sees_one_bucket_and_no_models(tmp_path: Path) -> None:
    scan = scan_manifest(write(tmp_path, "m.csv", "bucket,key\nshop-1,a.jpg\nshop-1,b.jpg,v2\n"))
    assert (scan.entries, scan.buckets, scan.models) == (2, {"shop-1"}, frozenset())


def test_scan_fails_on_a_bad_last_line(tmp_path: Path) -> None:
    location = write(
        tmp_path, "m.csv", "".join(f"shop-1,{i}.jpg\n" for i in range(1000)) + "shop-1,x.jpg,v,extra\n"
    )
    with pytest.raises(ManifestError, match="line 1001"):
        scan_manifest(location)


# --- repeats: a manifest names each object once ---------------------------------------------------------


def scan_error(location: str, **kwargs: object) -> str:
    with pytest.raises(ManifestError) as info:
        scan_manifest(location, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


def test_one_key_listed_twice_with_different_formats_is_refused_with_both_lines(tmp_path: Path) -> None:
    # Given a JSONL manifest that asks for one object as a PNG on line 1 and as a WebP on line 3
    location = write(
        tmp_path,
        "m.jsonl",
        jsonl(
            {"bucket": "shop-1", "key": "a.jpg", "format": "png"},
            {"bucket": "shop-1", "key": "b.jpg"},
            {"bucket": "shop-1", "key": "a.jpg", "format": "webp"},
        ),
    )

    # When it is scanned, Then it is refused, naming the object, its lines and that the options differ
    message = scan_error(location)
    assert "1 object(s) listed more than once: shop-1/a.jpg on lines 1, 3 (with different options)" in message
    assert "keep one line per object" in message


def test_an_exact_repeat_is_refused_too(tmp_path: Path) -> None:
    # Given a CSV that lists one object three times, once spelled with %20 and once with +
    location = write(tmp_path, "m.csv", "shop-1,a+b.jpg\nshop-1,c.jpg\nshop-1,a%20b.jpg\nshop-1,a b.jpg\n")

    # Then the three lines are one object, named once with every line
    message = scan_error(location)
    assert "shop-1/a b.jpg on lines 1, 3, 4." in message and "different options" not in message


def test_one_key_in_two_buckets_or_in_two_versions_is_no_repeat(tmp_path: Path) -> None:
    # Given one key in two buckets, and as two versions and unversioned in one bucket
    location = write(tmp_path, "m.csv", "shop-1,a.jpg\nshop-2,a.jpg\nshop-1,a.jpg,v1\nshop-1,a.jpg,v2\n")

    # Then these are four objects
    assert scan_manifest(location).entries == 4


def test_a_line_without_a_bucket_repeats_the_line_in_the_default_bucket(tmp_path: Path) -> None:
    location = write(tmp_path, "m.jsonl", jsonl({"key": "a.jpg"}, {"bucket": "shop-1", "key": "a.jpg"}))
    assert "shop-1/a.jpg on lines 1, 2" in scan_error(location, default_bucket="shop-1")


def test_many_repeats_name_the_first_ten_and_count_the_rest(tmp_path: Path) -> None:
    location = write(tmp_path, "m.csv", "".join(f"shop-1,{i}.jpg\nshop-1,{i}.jpg\n" for i in range(12)))
    message = scan_error(location)
    assert message.count(" on lines ") == 10 and "; and 2 more." in message
    assert "12 object(s) listed more than once: shop-1/0.jpg on lines 1, 2;" in message


def test_two_objects_that_share_a_digest_are_not_a_repeat(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Given digests that all collide, as two distinct ids could in a 64-bit digest
    monkeypatch.setattr("cutout_fleet.producer.manifest_repeats._digest", lambda _item: 7)
    location = write(tmp_path, "m.csv", "shop-1,a.jpg\nshop-1,b.jpg\n")

    # Then the second reading compares the ids themselves and finds no repeat
    assert scan_manifest(location).entries == 2


# --- memory --------------------------------------------------------------------------------------------


def _write_long_csv(tmp_path: Path, lines: int) -> str:
    path = tmp_path / f"long-{lines}.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.writelines(f"shop-{i % 3},photos/{i:07d}.jpg,v{i}\n" for i in range(lines))
    return str(path)


def _peak_bytes_reading(location: str) -> tuple[int, int]:
    """(entries, traced peak) while streaming the manifest and dropping each entry."""
    tracemalloc.start()
    try:
        entries = sum(1 for _ in iter_manifest(location))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return entries, peak


def test_memory_stays_flat_however_long_the_manifest(tmp_path: Path) -> None:
    small, large = _write_long_csv(tmp_path, 20_000), _write_long_csv(tmp_path, 200_000)
    _peak_bytes_reading(small)  # warm up: first-use allocations (regex caches and the like) are not per line

    small_entries, small_peak = _peak_bytes_reading(small)
    large_entries, large_peak = _peak_bytes_reading(large)

    assert (small_entries, large_entries) == (20_000, 200_000)
    # Held entries would take ~20 MB at 200,000 lines and grow 10x from 20,000.
    assert large_peak < 2 * 1024 * 1024
    assert large_peak < 2 * small_peak + 256 * 1024


def test_the_scan_keeps_a_few_bytes_per_line_to_find_repeats(tmp_path: Path) -> None:
    # Given a 200,000-line manifest without a repeat
    location = _write_long_csv(tmp_path, 200_000)
    scan_manifest(_write_long_csv(tmp_path, 2_000))  # warm up

    # When it is scanned under tracemalloc
    tracemalloc.start()
    try:
        scan = scan_manifest(location)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # Then it holds 8 bytes per line, and their sorted copy, not the lines (~20 MB)
    assert scan.entries == 200_000
    assert peak < 200_000 * 2 * 8 * 1.2 + 1024 * 1024, peak
