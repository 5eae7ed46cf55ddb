"""One item identity (bucket, key, version) through job state: one key in two buckets, or two versions
of one key, are two items, counted and recorded apart, in Redis and in memory alike."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from cutout_fleet.items import item_id
from cutout_fleet.options import ImageOptions
from cutout_fleet.outcomes import Outcome
from cutout_fleet.producer.enqueue import EnqueueRequest, enqueue_job
from cutout_fleet.producer.listing import ListingChunk, SourceItem
from cutout_fleet.producer.publish import CollectingPublisher
from cutout_fleet.state import JobSpec, MemoryJobStore, RedisJobStore
from cutout_fleet.storage import parse_location

pytestmark = pytest.mark.integration

TTL_S = 3600
KEY = "p/a.png"
IN_SPRING, IN_AUTUMN = item_id("spring", KEY), item_id("autumn", KEY)
VERSION_1, VERSION_2 = item_id("spring", KEY, "v1"), item_id("spring", KEY, "v2")


@pytest.fixture(params=["redis", "memory"])
def store(request, redis_client):  # type: ignore[no-untyped-def]
    if request.param == "redis":
        return RedisJobStore(redis_client, TTL_S)
    return MemoryJobStore()


def _job_with(store, items: Sequence[str]) -> str:  # type: ignore[no-untyped-def]
    """A finalized job whose items are these item ids, each with an output of its own."""
    store.create(JobSpec("job-1", "s3://spring/", "s3://out/o", "u2netp", "cpu", {"model": "u2netp"}))
    store.claim_outputs("job-1", [(item, f"o/{n}.png") for n, item in enumerate(items)])
    store.finalize("job-1")
    return "job-1"


def _succeeded(bucket: str, version: str | None = None) -> Outcome:
    return Outcome(KEY, "succeeded", "o/x.png", "u2netp", bucket=bucket, version=version)


def test_one_key_in_two_buckets_is_claimed_as_two_new_items(store) -> None:  # type: ignore[no-untyped-def]
    # Given a job whose two items share a key in two buckets
    job_id = _job_with(store, [IN_SPRING, IN_AUTUMN])

    # Then both count towards the total
    assert store.get(job_id).total == 2


def test_one_key_in_two_buckets_gets_two_outcomes_and_completes_the_job(store) -> None:  # type: ignore[no-untyped-def]
    # Given a job whose two items share a key in two buckets
    job_id = _job_with(store, [IN_SPRING, IN_AUTUMN])

    # When each bucket's item records its outcome
    first = store.record(job_id, _succeeded("spring"))
    second = store.record(job_id, _succeeded("autumn"))

    # Then both are recorded, and the second completes the job
    assert (first, second) == ((True, False), (True, True))
    assert store.get(job_id).counts()["succeeded"] == 2
    assert sorted(o.item_id for o in store.iter_outcomes(job_id)) == sorted([IN_SPRING, IN_AUTUMN])


def test_two_versions_of_one_key_get_two_outcomes_and_complete_the_job(store) -> None:  # type: ignore[no-untyped-def]
    # Given a job whose two items are two versions of one key
    job_id = _job_with(store, [VERSION_1, VERSION_2])

    # When each version records its outcome
    first = store.record(job_id, _succeeded("spring", "v1"))
    second = store.record(job_id, _succeeded("spring", "v2"))

    # Then both are recorded, and the second completes the job
    assert (first, second) == ((True, False), (True, True))
    assert store.get(job_id).counts()["succeeded"] == 2


def test_an_outcome_marks_only_its_own_item_as_recorded(store) -> None:  # type: ignore[no-untyped-def]
    # Given a job with one key in two buckets
    job_id = _job_with(store, [IN_SPRING, IN_AUTUMN])

    # When the spring item records its outcome
    store.record(job_id, _succeeded("spring"))

    # Then the autumn item still has work to do
    assert store.is_recorded(job_id, IN_SPRING) and not store.is_recorded(job_id, IN_AUTUMN)
    assert store.begin_item(job_id, IN_AUTUMN).recorded is False


def test_attempts_are_counted_per_item(redis_client) -> None:  # type: ignore[no-untyped-def]
    # Given a job with one key in two buckets, the spring item begun twice
    store = RedisJobStore(redis_client, TTL_S)
    job_id = _job_with(store, [IN_SPRING, IN_AUTUMN])
    store.begin_item(job_id, IN_SPRING)
    store.begin_item(job_id, IN_SPRING)

    # When the autumn item begins
    start = store.begin_item(job_id, IN_AUTUMN)

    # Then it is its first attempt
    assert start.attempt == 1


def _enqueue_two_buckets(store: RedisJobStore, publisher: CollectingPublisher) -> str:
    request = EnqueueRequest(
        source=parse_location("s3://manifests/two-buckets.csv"),
        out=parse_location("s3://out/o"),
        options=ImageOptions(model="u2netp"),
        queue_for=lambda _model: "cpu",
        items_per_task=16,
        job_id="two-buckets",
        mapping="bucket",
    )
    chunk = ListingChunk([SourceItem(KEY, bucket="spring"), SourceItem(KEY, bucket="autumn")])
    return enqueue_job(request, store, [chunk], publisher).job_id


def _queued_items(publisher: CollectingPublisher) -> list[str]:
    return sorted(item_id(m.bucket, key) for m in publisher.messages for key in m.keys)


def test_a_manifest_naming_one_key_in_two_buckets_queues_both(redis_client) -> None:  # type: ignore[no-untyped-def]
    # Given a manifest chunk that names p/a.png in two buckets
    store, publisher = RedisJobStore(redis_client, TTL_S), CollectingPublisher()

    # When it is enqueued
    job_id = _enqueue_two_buckets(store, publisher)

    # Then both items are claimed, counted and queued
    assert store.get(job_id).total == 2
    assert _queued_items(publisher) == sorted([IN_SPRING, IN_AUTUMN])


def test_a_manifest_job_with_one_key_in_two_buckets_completes_after_both_outcomes(redis_client) -> None:  # type: ignore[no-untyped-def]
    # Given an enqueued manifest job that names p/a.png in two buckets
    store, publisher = RedisJobStore(redis_client, TTL_S), CollectingPublisher()
    job_id = _enqueue_two_buckets(store, publisher)

    # When a worker records an outcome for each queued item
    results = [
        store.record(job_id, Outcome(key, "succeeded", "o/x.png", "u2netp", bucket=m.bucket))
        for m in publisher.messages
        for key in m.keys
    ]

    # Then the last one completes the job, with nothing left queued
    assert results[-1] == (True, True)
    job = store.get(job_id)
    assert (job.state, job.queued, job.succeeded) == ("done", 0, 2)
