"""Job manifests read from a real S3-protocol server (moto): streamed, decoded and validated as local ones."""

from __future__ import annotations

import json

import pytest

from cutout_fleet.config.settings import S3Settings
from cutout_fleet.errors import SourceMissing
from cutout_fleet.producer.manifest import ManifestEntry, ManifestError, iter_manifest, scan_manifest
from cutout_fleet.producer.manifest_lines import manifest_etag
from cutout_fleet.storage import s3_client as build_s3_client

pytestmark = pytest.mark.integration


@pytest.fixture
def reader(s3_endpoint: str):  # type: ignore[no-untyped-def]
    """The client the producer would build from its settings."""
    return build_s3_client(S3Settings(endpoint_url=s3_endpoint, max_attempts=2))


@pytest.fixture
def jobs_bucket(new_bucket) -> str:  # type: ignore[no-untyped-def]
    return str(new_bucket("manifests"))


def upload(s3_client, bucket: str, key: str, body: bytes) -> str:  # type: ignore[no-untyped-def]
    s3_client.put_object(Bucket=bucket, Key=key, Body=body)
    return f"s3://{bucket}/{key}"


def test_a_batch_operations_csv_is_read_from_s3(s3_client, jobs_bucket: str, reader) -> None:  # type: ignore[no-untyped-def]
    body = '\ufeffshop-1,photos/red+shoe%2B1.jpg,v1\r\nshop-2,caf%C3%A9/a.png\r\n\r\nshop-1,"a,b.jpg",\r\n'
    location = upload(s3_client, jobs_bucket, "jobs/m.csv", body.encode())

    entries = list(iter_manifest(location, s3_client=reader))

    assert entries == [
        ManifestEntry(bucket="shop-1", key="photos/red shoe+1.jpg", version="v1", options={}, line=1),
        ManifestEntry(bucket="shop-2", key="café/a.png", version=None, options={}, line=2),
        ManifestEntry(bucket="shop-1", key="a,b.jpg", version=None, options={}, line=4),
    ]


def test_a_jsonl_manifest_with_per_key_options_is_read_from_s3(s3_client, jobs_bucket: str, reader) -> None:  # type: ignore[no-untyped-def]
    lines = [
        {"key": "shoes/a.jpg", "model": "isnet-general-use", "mask_blur": 2},
        {"bucket": "shop-2", "key": "bags/b+c.png", "version": "v7"},
    ]
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    location = upload(s3_client, jobs_bucket, "jobs/m.ndjson", body)

    entries = list(iter_manifest(location, s3_client=reader, default_bucket="shop-1"))

    assert entries == [
        ManifestEntry(
            bucket="shop-1",
            key="shoes/a.jpg",
            version=None,
            options={"model": "isnet-general-use", "mask_blur_px": 2},
            line=1,
        ),
        ManifestEntry(bucket="shop-2", key="bags/b+c.png", version="v7", options={}, line=2),
    ]


def test_a_manifest_longer_than_one_read_streams_with_exact_line_numbers(
    s3_client, jobs_bucket: str, reader
) -> None:  # type: ignore[no-untyped-def]
    # Many botocore read chunks, so CRLF pairs and two-byte characters fall across chunk boundaries.
    keys = [f"été/{i:05d}.jpg" for i in range(3000)]
    body = "".join(json.dumps({"bucket": "shop-1", "key": key}, ensure_ascii=False) + "\r\n" for key in keys)
    location = upload(s3_client, jobs_bucket, "jobs/long.jsonl", body.encode())

    entries = list(iter_manifest(location, s3_client=reader))

    assert [entry.key for entry in entries] == keys
    assert [entry.line for entry in entries] == list(range(1, 3001))


def test_scan_reads_an_s3_manifest_that_spans_buckets(s3_client, jobs_bucket: str, reader) -> None:  # type: ignore[no-untyped-def]
    location = upload(s3_client, jobs_bucket, "jobs/m.csv", b"shop-1,a.jpg\nshop-2,b.jpg\nshop-2,notes.txt\n")

    scan = scan_manifest(location, s3_client=reader)

    assert (scan.entries, scan.image_entries, scan.ignored_entries) == (3, 2, 1)
    assert scan.buckets == {"shop-1", "shop-2"}


def test_a_bad_line_in_an_s3_manifest_names_the_uri_and_the_line(s3_client, jobs_bucket: str, reader) -> None:  # type: ignore[no-untyped-def]
    location = upload(s3_client, jobs_bucket, "jobs/m.csv", b"shop-1,a.jpg\nshop-1\n")

    with pytest.raises(ManifestError) as info:
        scan_manifest(location, s3_client=reader)

    assert f"{location}, line 2" in str(info.value)


def test_a_missing_manifest_object_is_source_missing(jobs_bucket: str, reader) -> None:  # type: ignore[no-untyped-def]
    location = f"s3://{jobs_bucket}/jobs/absent.csv"

    with pytest.raises(SourceMissing) as info:
        list(iter_manifest(location, s3_client=reader))

    assert info.value.code == "source_missing" and location in str(info.value)


def test_a_manifest_in_a_missing_bucket_is_source_missing(reader) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SourceMissing) as info:
        list(iter_manifest("s3://no-such-bucket-for-manifests/m.csv", s3_client=reader))

    assert info.value.code == "bucket_missing"


def test_a_repeated_object_in_an_s3_manifest_is_refused_with_the_uri_and_its_lines(
    s3_client, jobs_bucket: str, reader
) -> None:  # type: ignore[no-untyped-def]
    # Given a long S3 manifest whose line 2,500 asks again, as a WebP, for the object of line 7
    lines = [json.dumps({"bucket": "shop-1", "key": f"p/{i:05d}.jpg"}) for i in range(1, 3001)]
    lines[2499] = json.dumps({"bucket": "shop-1", "key": "p/00007.jpg", "format": "webp"})
    location = upload(s3_client, jobs_bucket, "jobs/repeat.jsonl", ("\n".join(lines) + "\n").encode())

    # When it is scanned
    with pytest.raises(ManifestError) as info:
        scan_manifest(location, s3_client=reader)

    # Then the refusal names the manifest, the object and both lines
    assert f"manifest {location}: 1 object(s) listed more than once" in str(info.value)
    assert "shop-1/p/00007.jpg on lines 7, 2500 (with different options)" in str(info.value)


def test_every_read_is_pinned_to_the_manifest_that_was_validated(s3_client, jobs_bucket: str, reader) -> None:  # type: ignore[no-untyped-def]
    # Given a manifest validated as it is now
    location = upload(s3_client, jobs_bucket, "jobs/pinned.csv", b"shop-1,a.jpg\n")
    etag = manifest_etag(location, reader)
    assert scan_manifest(location, s3_client=reader, etag=etag).entries == 1

    # When someone who can write to its bucket replaces it (with a repeat) before it is streamed
    upload(s3_client, jobs_bucket, "jobs/pinned.csv", b"shop-1,a.jpg\nshop-1,a.jpg\n")

    # Then the pinned read refuses the new object instead of enqueueing lines never validated
    with pytest.raises(ManifestError, match="was replaced while it was being read"):
        list(iter_manifest(location, s3_client=reader, etag=etag))


def test_a_local_manifest_has_no_etag(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert manifest_etag(str(tmp_path / "m.csv")) is None
