"""Job accounting against the real Redis, and the in-memory store held to the same behaviour."""

from __future__ import annotations

import pytest

from cutout_fleet.outcomes import Outcome, failed
from cutout_fleet.state import (
    JOBS_INDEX,
    Claim,
    JobExists,
    JobSpec,
    MemoryJobStore,
    RedisJobStore,
    claims_key,
    job_key,
)

TTL_S = 3600


@pytest.fixture(params=["redis", "memory"])
def store(request, redis_client):  # type: ignore[no-untyped-def]
    if request.param == "redis":
        return RedisJobStore(redis_client, TTL_S)
    return MemoryJobStore()


def _job(store, job_id: str = "job-1") -> str:  # type: ignore[no-untyped-def]
    store.create(JobSpec(job_id, "s3://in/p/", "s3://out/o", "u2netp", "cpu", {"model": "u2netp"}))
    return job_id


def _add_items(store, job_id: str, items: list[str], ignored: int = 0) -> None:  # type: ignore[no-untyped-def]
    """Claim an output for each item id (bare keys here: outcomes without a bucket name them so)."""
    store.claim_outputs(job_id, [(item, f"o/{item}") for item in items], ignored)


def _ok(key: str) -> Outcome:
    return Outcome(key, "succeeded", f"o/{key}", "u2netp", timings_ms={"model": 1.0})


def test_a_new_job_is_running_with_zero_counts(store) -> None:  # type: ignore[no-untyped-def]
    job = store.get(_job(store))
    assert job.state == "running" and not job.final
    assert job.counts() == {"total": 0, "queued": 0, "succeeded": 0, "failed": 0, "skipped": 0, "ignored": 0}


def test_creating_the_same_job_again_keeps_it_and_its_counts(store) -> None:  # type: ignore[no-untyped-def]
    job_id = _job(store)
    _add_items(store, job_id, ["a", "b", "c"])
    _job(store)
    assert store.get(job_id).total == 3


def test_a_job_id_cannot_be_reused_for_other_inputs(store) -> None:  # type: ignore[no-untyped-def]
    _job(store)
    with pytest.raises(JobExists):
        store.create(JobSpec("job-1", "s3://in/other/", "s3://out/o", "u2netp", "cpu", {"model": "u2netp"}))


def test_an_outcome_delivered_twice_is_counted_once(store) -> None:  # type: ignore[no-untyped-def]
    job_id = _job(store)
    _add_items(store, job_id, ["a", "b"])
    assert store.record(job_id, _ok("a")) == (True, False)
    assert store.record(job_id, _ok("a")) == (False, False)
    assert store.record(job_id, failed("a", None, "u2netp", "undecodable", "x")) == (False, False)
    job = store.get(job_id)
    assert (job.succeeded, job.failed, job.queued) == (1, 0, 1)
    assert [o.key for o in store.iter_outcomes(job_id)] == ["a"]
    assert store.is_recorded(job_id, "a") and not store.is_recorded(job_id, "b")


def test_items_finishing_before_the_listing_ends_do_not_complete_the_job(store) -> None:  # type: ignore[no-untyped-def]
    job_id = _job(store)
    _add_items(store, job_id, ["a"])
    assert store.record(job_id, _ok("a")) == (True, False)  # total not final yet
    assert store.get(job_id).state == "running"
    assert store.finalize(job_id) is True  # the producer's finalize is the one that completes it
    assert store.get(job_id).state == "done"
    assert store.finalize(job_id) is False  # and only once


def test_the_last_outcome_completes_a_finalized_job_exactly_once(store) -> None:  # type: ignore[no-untyped-def]
    job_id = _job(store)
    _add_items(store, job_id, ["a", "b"], ignored=3)
    assert store.finalize(job_id) is False
    assert store.record(job_id, _ok("a")) == (True, False)
    assert store.record(job_id, failed("b", "o/b", "u2netp", "undecodable", "bad")) == (True, True)
    assert store.record(job_id, _ok("b")) == (False, False)
    job = store.get(job_id)
    assert job.state == "done" and job.finished_at is not None
    assert job.counts() == {"total": 2, "queued": 0, "succeeded": 1, "failed": 1, "skipped": 0, "ignored": 3}


def test_an_empty_job_is_done_when_finalized(store) -> None:  # type: ignore[no-untyped-def]
    job_id = _job(store)
    assert store.finalize(job_id) is True


def test_output_claims_name_the_first_owner_and_recognise_the_same_key(store) -> None:  # type: ignore[no-untyped-def]
    job_id = _job(store)
    first = store.claim_outputs(job_id, [("p/a.jpg", "o/a.png"), ("p/b.jpg", "o/b.png")])
    assert first == [(Claim.NEW, None), (Claim.NEW, None)]
    second = store.claim_outputs(job_id, [("p/a.png", "o/a.png"), ("p/a.jpg", "o/a.png")])
    assert second == [(Claim.COLLISION, "p/a.jpg"), (Claim.AGAIN, None)]


def test_redis_job_keys_expire(redis_client) -> None:  # type: ignore[no-untyped-def]
    store = RedisJobStore(redis_client, TTL_S)
    job_id = _job(store)
    _add_items(store, job_id, ["a"])
    store.record(job_id, _ok("a"))
    for key in redis_client.scan_iter(f"cf:job:{{{job_id}}}*"):
        assert 0 < redis_client.ttl(key) <= TTL_S, key
    assert redis_client.ttl(job_key(job_id)) > 0 and redis_client.ttl(claims_key(job_id)) > 0


def test_an_outcome_for_an_expired_job_is_not_recorded(redis_client) -> None:  # type: ignore[no-untyped-def]
    store = RedisJobStore(redis_client, TTL_S)
    assert store.record("gone", _ok("a")) == (False, False)
    assert list(redis_client.scan_iter("cf:job:{gone}*")) == []


def test_claiming_counts_new_items_and_collisions_but_never_a_key_twice(store) -> None:  # type: ignore[no-untyped-def]
    job_id = _job(store)
    store.claim_outputs(job_id, [("p/a.jpg", "o/a.png"), ("p/b.jpg", "o/b.png")], 4)
    store.claim_outputs(job_id, [("p/a.jpg", "o/a.png"), ("p/a.png", "o/a.png")])  # again + a collision
    job = store.get(job_id)
    assert (job.total, job.ignored) == (3, 4)


def test_retry_forgets_a_failed_outcome_by_its_item_id(redis_client) -> None:  # type: ignore[no-untyped-def]
    # Given a finalized job whose item in bucket "in" failed
    store = RedisJobStore(redis_client, TTL_S)
    job_id = _job(store)
    store.claim_outputs(job_id, [("in/p/a.png", "o/a.png")])
    store.finalize(job_id)
    store.record(job_id, failed("p/a.png", "o/a.png", "u2netp", "undecodable", "bad", bucket="in"))

    # When retry forgets the failed outcomes it found, by item id
    forgotten = store.unrecord_failed(job_id, [o.item_id for o in store.failed_outcomes(job_id)])

    # Then the item has no outcome any more and the job runs again
    job = store.get(job_id)
    assert forgotten == 1 and not store.is_recorded(job_id, "in/p/a.png")
    assert (job.state, job.failed, job.queued) == ("running", 0, 1)


def test_a_dead_letter_names_its_item_id(redis_client) -> None:  # type: ignore[no-untyped-def]
    # Given a job
    store = RedisJobStore(redis_client, TTL_S)
    job_id = _job(store)

    # When an item is moved to the dead-letter list
    store.add_dead_letter(job_id, "in/p/a.png?versionId=v1", 3, "killed the worker")

    # Then the entry names the item id and its attempts
    [entry] = store.dead_letters(job_id)
    assert (entry["item"], entry["attempts"]) == ("in/p/a.png?versionId=v1", 3)


def test_deleting_a_job_leaves_no_key_and_no_index_entry(redis_client) -> None:  # type: ignore[no-untyped-def]
    # Given a job with claims, outcomes and attempts (as a dry run's scratch job has claims)
    store = RedisJobStore(redis_client, TTL_S)
    job_id = _job(store)
    _add_items(store, job_id, ["a", "b"])
    store.begin_item(job_id, "b")
    store.record(job_id, _ok("a"))

    # When it is deleted
    store.delete_job(job_id)

    # Then nothing of it is left in Redis
    assert list(redis_client.scan_iter(f"cf:job:{{{job_id}}}*")) == []
    assert redis_client.zscore(JOBS_INDEX, job_id) is None and store.get(job_id) is None


def test_queue_depths_count_the_messages_waiting_in_each_queue(redis_client) -> None:  # type: ignore[no-untyped-def]
    # Given two messages waiting in one queue and none in the other
    store = RedisJobStore(redis_client, TTL_S)
    redis_client.lpush("cpu", "m1", "m2")

    # When the depths are read
    depths = store.queue_depths(["cpu", "gpu"])

    # Then each queue has its count
    assert depths == {"cpu": 2, "gpu": 0}


def test_a_claim_call_retried_after_a_dropped_reply_gets_its_first_answer(redis_client) -> None:  # type: ignore[no-untyped-def]
    # Given a claim call whose reply was lost (the script ran), sent again by the client's retry
    from cutout_fleet.state.redis_keys import claim_call_key
    from cutout_fleet.state.scripts import JobScripts

    store = RedisJobStore(redis_client, 3600)
    store.create(JobSpec("retried", "s3://b/p/", "s3://o/x", "u2netp", "cpu", {}))
    script = JobScripts.register(redis_client).claim
    keys = [claims_key("retried"), job_key("retried"), claim_call_key("retried", "call-1")]
    args = [3600, 0, "1", "x/a.png", "b/p/a.png"]  # ttl, ignored, count (an item of the job), then pairs

    first, again = script(keys=keys, args=args), script(keys=keys, args=args)

    # Then the retry sees the item as newly claimed too (so it is published), and it is counted once
    assert first == [] and again == []
    assert store.get("retried").total == 1  # type: ignore[union-attr]


def test_a_second_output_of_an_item_is_claimed_without_counting_it_again(redis_client) -> None:  # type: ignore[no-untyped-def]
    # Given a job whose items also write a mask beside their cutout (`--output both`)
    store = RedisJobStore(redis_client, 3600)
    store.create(JobSpec("masks", "s3://b/p/", "s3://o/x", "u2netp", "cpu", {}))
    store.claim_outputs("masks", [("p/a.png", "o/a.png"), ("p/a.mask.jpg", "o/a.mask.png")])

    # When the masks are claimed in the non-counting call
    answers = store.claim_outputs(
        "masks", [("p/a.png", "o/a.mask.png"), ("p/a.mask.jpg", "o/a.mask.mask.png")], count=False
    )

    # Then the mask that lands on another item's output is a collision naming it, and nothing is counted
    assert answers == [(Claim.COLLISION, "p/a.mask.jpg"), (Claim.NEW, None)]
    assert store.get("masks").total == 2  # type: ignore[union-attr]
