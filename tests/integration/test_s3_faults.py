"""S3 faults through the project's own storage layer, with a fault-injecting proxy in front of moto.

Transient faults (500, 503 SlowDown, resets, read timeouts) are retried by botocore with backoff and
jitter and the work succeeds; permanent answers (403, NoSuchKey, NoSuchBucket) fail at once, with no
retry and a clear code; faults that outlast max_attempts surface as TransientError for the task retry.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cutout_fleet.config.settings import S3Settings
from cutout_fleet.errors import AccessDenied, SourceMissing, TransientError
from cutout_fleet.storage import S3Storage, parse_location, s3_client
from tests.support.s3_fault_proxy import FaultKind, S3FaultProxy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

OBJECT_BYTES = 100 * 1024
ROUND_TRIPS = 30
# A worker runs several items at once; the same number of threads shares one client here.
CONCURRENT_ITEMS = 8
MAX_ATTEMPTS = 8
READ_TIMEOUT_S = 1.0
DELAY_S = 1.5  # longer than READ_TIMEOUT_S, so the client gives up on the request
# A refused request is one loopback round trip (the request count, not this, proves there was no retry).
NO_RETRY_WITHIN_S = 0.5
MAX_BYTES = 10 * 1024 * 1024
THROTTLE_5XX_AND_RESETS: tuple[FaultKind, ...] = ("500", "503", "reset")


def storage_via(proxy: S3FaultProxy, bucket: str, *, max_attempts: int = MAX_ATTEMPTS) -> S3Storage:
    """The storage layer as a worker builds it (adaptive retries, timeouts), pointed at the proxy."""
    settings = S3Settings(
        endpoint_url=proxy.url,
        addressing_style="path",  # Host stays 127.0.0.1:<port>, which the proxy passes on unchanged
        max_attempts=max_attempts,
        connect_timeout_s=1,
        read_timeout_s=READ_TIMEOUT_S,
    )
    return S3Storage(parse_location(f"s3://{bucket}/"), s3_client(settings))


@pytest.fixture
def bucket(new_bucket) -> str:  # type: ignore[no-untyped-def]
    return str(new_bucket("faults"))


@pytest.fixture
def clean_proxy(s3_endpoint: str) -> Iterator[S3FaultProxy]:
    """A proxy that injects nothing: it counts what reaches S3."""
    with S3FaultProxy(s3_endpoint) as proxy:
        yield proxy


def round_trip(storage: S3Storage, key: str) -> bool:
    data = os.urandom(OBJECT_BYTES)
    storage.put(key, data, content_type="application/octet-stream", metadata={"item": key})
    return storage.get(key, max_bytes=MAX_BYTES).data == data


def test_puts_and_gets_survive_500_503_and_resets_with_data_intact(s3_endpoint: str, bucket: str) -> None:
    with S3FaultProxy(s3_endpoint, fault_rate=0.3, faults=THROTTLE_5XX_AND_RESETS, seed=1) as proxy:
        storage = storage_via(proxy, bucket)
        with ThreadPoolExecutor(CONCURRENT_ITEMS) as pool:
            intact = list(pool.map(lambda i: round_trip(storage, f"items/{i:03d}.bin"), range(ROUND_TRIPS)))
        injected = proxy.injected

    assert all(intact)
    assert sum(injected.values()) > 0, "no fault was injected: the test proved nothing"
    assert proxy.forwarded == 2 * ROUND_TRIPS  # each fault was retried until S3 itself answered
    assert proxy.requests == proxy.forwarded + sum(injected.values())


@pytest.mark.parametrize("method", ["PUT", "GET"])
def test_a_response_slower_than_the_read_timeout_is_retried(
    s3_endpoint: str, bucket: str, method: str
) -> None:
    with S3FaultProxy(
        s3_endpoint, fault_rate=1.0, faults=("delay",), delay_s=DELAY_S, only_methods=(method,), max_faults=1
    ) as proxy:
        storage = storage_via(proxy, bucket)
        started = time.monotonic()
        assert round_trip(storage, "slow.bin")
        elapsed_s = time.monotonic() - started

    assert proxy.injected["delay"] == 1
    assert proxy.requests_for("slow.bin") == 3  # one timed out, then one PUT and one GET went through
    assert elapsed_s >= READ_TIMEOUT_S  # the client really waited out its read timeout


def test_a_get_cut_off_mid_body_is_a_transient_error_and_the_next_try_succeeds(
    s3_endpoint: str, bucket: str
) -> None:
    with S3FaultProxy(
        s3_endpoint, fault_rate=1.0, faults=("truncate",), only_methods=("GET",), max_faults=1
    ) as proxy:
        storage = storage_via(proxy, bucket)
        data = os.urandom(OBJECT_BYTES)
        storage.put("cut.bin", data, content_type="application/octet-stream", metadata={})
        # botocore retries requests, not the reading of a body already under way: the task retry does.
        with pytest.raises(TransientError, match=r"cut\.bin"):
            storage.get("cut.bin", max_bytes=MAX_BYTES)
        assert storage.get("cut.bin", max_bytes=MAX_BYTES).data == data

    assert proxy.injected["truncate"] == 1


@pytest.mark.parametrize("operation", ["get", "put"])
def test_access_denied_fails_at_once_without_a_retry(s3_endpoint: str, bucket: str, operation: str) -> None:
    with S3FaultProxy(s3_endpoint, permanent_status={"denied/": 403}) as proxy:
        storage = storage_via(proxy, bucket)
        started = time.monotonic()
        with pytest.raises(AccessDenied) as info:
            if operation == "get":
                storage.get("denied/a.png", max_bytes=MAX_BYTES)
            else:
                storage.put("denied/a.png", b"png", content_type="image/png", metadata={})
        elapsed_s = time.monotonic() - started

    assert info.value.code == "access_denied" and "denied/a.png" in str(info.value)
    assert proxy.requests_for("denied/a.png") == 1
    assert elapsed_s < NO_RETRY_WITHIN_S


def test_a_missing_object_fails_at_once_as_source_missing(clean_proxy: S3FaultProxy, bucket: str) -> None:
    storage = storage_via(clean_proxy, bucket)
    with pytest.raises(SourceMissing) as info:
        storage.get("in/missing.png", max_bytes=MAX_BYTES)

    assert info.value.code == "source_missing" and "in/missing.png" in str(info.value)
    assert clean_proxy.requests_for("in/missing.png") == 1


def test_a_missing_bucket_fails_at_once_as_bucket_missing(clean_proxy: S3FaultProxy) -> None:
    storage = storage_via(clean_proxy, "no-such-bucket-for-faults")
    with pytest.raises(SourceMissing) as info:
        storage.get("in/a.png", max_bytes=MAX_BYTES)

    assert info.value.code == "bucket_missing"
    assert clean_proxy.requests == 1


@pytest.mark.parametrize(
    ("fault", "max_attempts"),
    [
        ("500", 5),
        # SlowDown backs off from 1 s (throttling scale), doubling: few attempts keep the test short.
        ("503", 2),
    ],
)
def test_a_fault_that_persists_is_a_transient_error_once_retries_run_out(
    s3_endpoint: str, bucket: str, fault: FaultKind, max_attempts: int
) -> None:
    with S3FaultProxy(s3_endpoint, fault_rate=1.0, faults=(fault,)) as proxy:
        storage = storage_via(proxy, bucket, max_attempts=max_attempts)
        with pytest.raises(TransientError) as info:
            storage.get("in/a.png", max_bytes=MAX_BYTES)

    assert info.value.code == "transient_error" and "in/a.png" in str(info.value)
    assert proxy.requests == max_attempts  # total_max_attempts: the first try counts
    assert proxy.injected[fault] == proxy.requests and proxy.forwarded == 0


def test_max_attempts_counts_the_first_attempt_too(s3_endpoint: str, bucket: str) -> None:
    max_attempts = 3
    with S3FaultProxy(s3_endpoint, fault_rate=1.0, faults=("500",)) as proxy:
        storage = storage_via(proxy, bucket, max_attempts=max_attempts)
        with pytest.raises(TransientError):
            storage.get("in/a.png", max_bytes=MAX_BYTES)

    assert proxy.requests == max_attempts


def test_a_request_timeout_that_persists_stays_transient(s3_endpoint: str, bucket: str) -> None:
    with S3FaultProxy(s3_endpoint, permanent_status={"in/": (400, "RequestTimeout")}) as proxy:
        storage = storage_via(proxy, bucket, max_attempts=2)
        with pytest.raises(TransientError):
            storage.get("in/a.png", max_bytes=MAX_BYTES)


def test_access_denied_on_upload_file_fails_at_once(s3_endpoint: str, bucket: str, tmp_path: Path) -> None:
    report = tmp_path / "report.csv"
    report.write_text("key,status\n")
    with S3FaultProxy(s3_endpoint, permanent_status={"denied/": 403}) as proxy:
        storage = storage_via(proxy, bucket)
        with pytest.raises(AccessDenied):
            storage.put_file("denied/report.csv", report, content_type="text/csv")
