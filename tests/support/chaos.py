"""What the chaos tests share: a job of slow photos, and the exactly-once check after a fault."""

from __future__ import annotations

import io

from PIL import Image

from cutout_fleet.state import RedisJobStore
from tests.support.fleet import Fleet, WorkerProcess, sample_catalog

SLOW = "tiny-slow"  # ~0.3 s per image: "mid-task" is a window we can hit on purpose
IMAGES = 16


def upload_photos(fleet: Fleet, bucket: str) -> list[str]:
    catalog = list(sample_catalog().values())
    files = {f"p{i:02d}.png": catalog[i % len(catalog)] for i in range(IMAGES)}
    return list(fleet.upload(bucket, "in/", files))


def enqueue_prefix(fleet: Fleet, bucket: str, model: str = SLOW, **env: str) -> str:
    job = fleet.enqueue(
        f"s3://{bucket}/in/", "--out", f"s3://{bucket}/out", "--model", model, env=fleet.env(**env)
    )
    return str(job["job_id"])


def assert_exactly_once(fleet: Fleet, bucket: str, job_id: str, keys: list[str]) -> None:
    store = fleet.store
    job = store.get(job_id)
    assert job is not None and job.state == "done", job
    outcomes = {o.key: o for o in store.iter_outcomes(job_id)}
    assert set(outcomes) == set(keys)  # every key, once (the outcomes hash holds one entry per key)
    assert job.finished == job.total == len(keys)  # and the counters agree with the per-key state
    for key, outcome in outcomes.items():
        if outcome.status == "failed":
            assert outcome.error_code and outcome.error, outcome
            continue
        image = Image.open(io.BytesIO(fleet.read(bucket, outcome.output_key)))
        image.load()  # a valid, complete PNG
        assert image.format == "PNG" and image.mode == "RGBA", key
    before = job.counts()
    assert store.rebuild_counts(job_id)
    assert store.get(job_id).counts() == before  # the counters are exactly what per-key state says


def in_flight(store: RedisJobStore, job_id: str, since: dict[str, int] | None = None) -> bool:
    """Some item began an attempt (after the `since` counts, if given) and has no outcome yet."""
    since = since or {}
    return any(
        n > since.get(item, 0) and not store.is_recorded(job_id, item)
        for item, n in store.attempts(job_id).items()
    )


def job_in_flight(
    fleet: Fleet, label: str, *, versioned: bool = False
) -> tuple[str, list[str], WorkerProcess, str]:
    """A job of slow photos on one new worker, waited for until an item is in flight.

    Returns (bucket, keys, worker, job id).
    """
    bucket = fleet.new_bucket(label)
    if versioned:
        fleet.s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    keys = upload_photos(fleet, bucket)
    worker = fleet.start_worker(concurrency=1)
    job_id = enqueue_prefix(fleet, bucket)
    fleet.wait_until(lambda: in_flight(fleet.store, job_id), 60, lambda: "an item in flight")
    return bucket, keys, worker, job_id
