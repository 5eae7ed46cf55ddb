"""Job accounting against the real Redis, and the in-memory store held to the same behaviour."""

from __future__ import annotations

import pytest

from cutout_fleet.outcomes import Outcome, failed
from cutout_fleet.state import Claim, JobExists, JobSpec, MemoryJobStore, RedisJobStore, claims_key, job_key

TTL_S = 3600


@pytest.fixture(params=["redis", "memory"])
def store(request, redis_client):  # type: ignore[no-untyped-def]
    if request.param == "redis":
        return RedisJobStore(redis_client, TTL_S)
    return MemoryJobStore()


def _job(store, job_id: str = "job-1") -> str:  # type: ignore[no-untyped-def]
    store.create(JobSpec(job_id, "s3://in/p/", "s3://out/o", "u2netp", "cpu", {"model": "u2netp"}))
    return job_id


def _add_items(store, job_id: str, keys: list[str], ignored: int = 0) -> None:  # type: ignore[no-untyped-def]
    store.claim_outputs(job_id, [(key, f"o/{key}") for key in keys], ignored)


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
