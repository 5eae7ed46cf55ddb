"""The storage layer against a real S3-protocol server (moto) and a local folder."""

from __future__ import annotations

import pytest

from cutout_fleet.config.settings import S3Settings
from cutout_fleet.errors import ImageTooLarge, SourceMissing
from cutout_fleet.storage import LocalStorage, S3Storage, parse_location, s3_client


@pytest.fixture
def storage(s3_endpoint, new_bucket):  # type: ignore[no-untyped-def]
    bucket = new_bucket("st")
    client = s3_client(S3Settings(endpoint_url=s3_endpoint, max_attempts=2))
    return S3Storage(parse_location(f"s3://{bucket}/p/"), client)


def test_listing_streams_every_page(storage) -> None:  # type: ignore[no-untyped-def]
    client = storage.client
    for i in range(1105):  # more than one 1000-key page
        client.put_object(Bucket=storage.location.bucket, Key=f"p/{i:05d}.jpg", Body=b"x")
    keys = [obj.key for obj in storage.iter_objects("p/")]
    assert len(keys) == 1105 and keys == sorted(keys)


def test_put_then_get_round_trips_bytes_metadata_and_etag(storage) -> None:  # type: ignore[no-untyped-def]
    storage.put("o/a.png", b"\x89PNG...", content_type="image/png", metadata={"cutout-model": "u2netp"})
    obj = storage.get("o/a.png", max_bytes=100)
    assert obj.data == b"\x89PNG..." and obj.etag
    meta = storage.head_metadata("o/a.png")
    assert meta["cutout-model"] == "u2netp" and meta["etag"] == obj.etag
    assert storage.head_metadata("o/missing.png") is None


def test_a_missing_object_is_a_permanent_source_missing(storage) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SourceMissing) as info:
        storage.get("p/nope.jpg", max_bytes=100)
    assert info.value.code == "source_missing" and "p/nope.jpg" in str(info.value)


def test_a_missing_bucket_is_reported_as_such(s3_endpoint) -> None:  # type: ignore[no-untyped-def]
    client = s3_client(S3Settings(endpoint_url=s3_endpoint, max_attempts=1))
    storage = S3Storage(parse_location("s3://no-such-bucket-here/p/"), client)
    with pytest.raises(SourceMissing) as info:
        list(storage.iter_objects("p/"))
    assert info.value.code == "bucket_missing"


def test_an_object_over_the_byte_limit_is_refused_before_reading(storage) -> None:  # type: ignore[no-untyped-def]
    storage.put("p/big.jpg", b"x" * 2048, content_type="image/jpeg", metadata={})
    with pytest.raises(ImageTooLarge):
        storage.get("p/big.jpg", max_bytes=1024)


def test_a_local_folder_lists_sorted_and_writes_atomically(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.jpg").write_bytes(b"z")
    (tmp_path / "a.png").write_bytes(b"a")
    storage = LocalStorage(parse_location(str(tmp_path)))
    assert [o.key for o in storage.iter_objects("")] == ["a.png", "b/z.jpg"]
    storage.put("out/deep/c.png", b"c", content_type="image/png", metadata={})
    assert (tmp_path / "out" / "deep" / "c.png").read_bytes() == b"c"
    assert not list((tmp_path / "out" / "deep").glob(".tmp-*"))


@pytest.mark.parametrize("key", ["../escape.png", "/etc/passwd", "a/../../b.png", "nul\x00.png"])
def test_a_local_folder_refuses_keys_that_leave_it(tmp_path, key: str) -> None:  # type: ignore[no-untyped-def]
    from cutout_fleet.errors import PermanentError

    storage = LocalStorage(parse_location(str(tmp_path / "root")))
    with pytest.raises(PermanentError):
        storage.put(key, b"x", content_type="image/png", metadata={})
