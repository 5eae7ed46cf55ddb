"""A transient failure retries that item alone, through Celery's retry, on a real worker.

The worker reads S3 through the fault proxy, which answers one source key with 503 SlowDown (what S3
sends for a hot key) while its neighbours in the same task are served normally.
"""

from __future__ import annotations

import pytest

from tests.support.fleet import Fleet, FleetFactory, sample_catalog
from tests.support.s3_fault_proxy import S3FaultProxy

pytestmark = pytest.mark.integration

MODEL = "tiny-u2netp"
KEYS = ["in/a.png", "in/b.png", "in/c.png"]
HOT_KEY = "in/b.png"
# One task for all three keys; botocore gives up at once, so the task's own retries are what we see.
SETTINGS = {
    "CUTOUT_ITEMS_PER_TASK": "3",
    "CUTOUT_S3__ADDRESSING_STYLE": "path",
    "CUTOUT_S3__MAX_ATTEMPTS": "1",
    "CUTOUT_WORKER__RETRY_BACKOFF_S": "1",
    "CUTOUT_WORKER__RETRY_BACKOFF_MAX_S": "2",
}
JOB_DONE_S = 120.0


def _start_job(proxy: S3FaultProxy, fleet: Fleet) -> str:
    """Three photos in one task; the worker reads S3 through the proxy, the producer lists it directly."""
    bucket = fleet.new_bucket("hot")
    photos = list(sample_catalog().values())
    fleet.upload(bucket, "", {key: photos[i] for i, key in enumerate(KEYS)})
    fleet.start_worker(concurrency=1, env=fleet.env(CUTOUT_S3__ENDPOINT_URL=proxy.url))
    job = fleet.enqueue(f"s3://{bucket}/in/", "--out", f"s3://{bucket}/out", "--model", MODEL)
    return str(job["job_id"])


def test_a_throttled_item_is_retried_alone_and_its_neighbours_are_not_redone(
    make_fleet: FleetFactory, s3_endpoint: str
) -> None:
    with (
        S3FaultProxy(s3_endpoint, permanent_status={HOT_KEY: 503}) as proxy,
        make_fleet(models=[MODEL], **SETTINGS) as fleet,
    ):
        # Given a task of three items whose middle source answers SlowDown
        job_id = _start_job(proxy, fleet)

        # When its neighbours are done and the hot key still has no outcome, S3 heals
        fleet.wait_until(
            lambda: len(list(fleet.store.iter_outcomes(job_id))) == 2,
            JOB_DONE_S,
            lambda: f"outcomes: {list(fleet.store.iter_outcomes(job_id))}",
        )
        tries_while_hot = proxy.requests_for(HOT_KEY)
        proxy.heal_path(HOT_KEY)
        fleet.wait_for_state(job_id, "done", JOB_DONE_S)

        # Then every item succeeded; the neighbours were fetched once, the hot key again, alone
        outcomes = {o.key: o.status for o in fleet.store.iter_outcomes(job_id)}
        assert outcomes == dict.fromkeys(KEYS, "succeeded")
        assert proxy.requests_for("in/a.png") == 1 and proxy.requests_for("in/c.png") == 1
        assert tries_while_hot >= 1 and proxy.requests_for(HOT_KEY) > tries_while_hot
        assert "Retry in" in fleet.logs()


def test_when_retries_run_out_only_the_throttled_item_fails(
    make_fleet: FleetFactory, s3_endpoint: str
) -> None:
    with (
        S3FaultProxy(s3_endpoint, permanent_status={HOT_KEY: 503}) as proxy,
        make_fleet(models=[MODEL], **SETTINGS, CUTOUT_WORKER__TRANSIENT_RETRIES="1") as fleet,
    ):
        # Given the same task, one task retry allowed, and a key that stays hot
        job_id = _start_job(proxy, fleet)

        # When the job runs to its end
        fleet.wait_for_state(job_id, "done", JOB_DONE_S)

        # Then the hot key failed as transient_error after its tries, and the others succeeded
        outcomes = {o.key: o for o in fleet.store.iter_outcomes(job_id)}
        assert outcomes[HOT_KEY].status == "failed" and outcomes[HOT_KEY].error_code == "transient_error"
        assert "gave up after 1 retries" in (outcomes[HOT_KEY].error or "")
        assert {outcomes["in/a.png"].status, outcomes["in/c.png"].status} == {"succeeded"}
        assert proxy.requests_for(HOT_KEY) == 2  # the first try and one retry, nothing more
