"""Chaos: real kills and restarts mid-job.  Every key must end succeeded or failed-with-reason exactly
once, every output must be a valid image, and each test proves the fault really hit mid-work."""

from __future__ import annotations

import base64
import json
import pickle
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cutout_fleet.config.settings import WorkerSettings
from cutout_fleet.producer.publish import CeleryPublisher, producer_app
from cutout_fleet.state import RedisJobStore
from tests.support.chaos import (
    SLOW,
    assert_exactly_once,
    enqueue_prefix,
    in_flight,
    job_in_flight,
    upload_photos,
)
from tests.support.fleet import Fleet, FleetFactory, sample_catalog
from tests.support.processes import RedisServer, wait_for
from tests.support.s3_fault_proxy import S3FaultProxy
from tests.support.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

# Every chaos fleet: two keys a task, and a visibility timeout short enough that a dead worker's task
# comes back within the test.
CHAOS_SETTINGS = {"CUTOUT_ITEMS_PER_TASK": "2", "CUTOUT_WORKER__VISIBILITY_TIMEOUT_S": "6"}
KILL_ROUNDS = 3
# How long Redis stays down in the restart tests: the fault itself, not a wait for something.
REDIS_OUTAGE_S = 1.0
JOB_DONE_S = 180.0


@pytest.fixture
def fleet(make_fleet: FleetFactory) -> Iterator[Fleet]:
    """A fleet serving the slow model; each test starts the workers it needs."""
    with make_fleet(models=[SLOW], **CHAOS_SETTINGS) as fleet:
        yield fleet


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own (AOF on), which the test may stop and start again."""
    server = RedisServer(free_port(), tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def test_killing_pool_children_mid_task_loses_and_duplicates_nothing(fleet: Fleet) -> None:
    # Given a job of slow items on one worker
    worker = fleet.start_worker(concurrency=1)
    bucket = fleet.new_bucket("kill")
    keys = upload_photos(fleet, bucket)
    job_id = enqueue_prefix(fleet, bucket)
    store = fleet.store

    # When its pool process is SIGKILLed mid-item, three times, each time in an attempt begun after the
    # last kill (the replaced pool took the work up again)
    kills, since = 0, {}
    for _ in range(KILL_ROUNDS):
        fleet.wait_until(lambda since=since: in_flight(store, job_id, since), 60, lambda: "a new attempt")
        since = store.attempts(job_id)
        kills += worker.kill_pool()
    fleet.wait_for_state(job_id, "done", JOB_DONE_S)

    # Then every key ended exactly once, and the kills really landed mid-key
    assert kills >= KILL_ROUNDS
    assert_exactly_once(fleet, bucket, job_id, keys)
    assert max(store.attempts(job_id).values()) >= 2


def test_the_visibility_timeout_backstop_redelivers_a_dead_workers_task(fleet: Fleet) -> None:
    # Given a job of slow items in flight on one worker, and a visibility timeout (6 s) far shorter
    # than the lease (test_dead_workers.py covers the lease with the production defaults)
    bucket, keys, first, job_id = job_in_flight(fleet, "dead")

    # When the whole worker dies at once: main process and pool, no warm shutdown, no requeue by Celery
    first.kill()
    assert (
        fleet.redis.hlen("unacked") >= 1
    )  # its reserved task is in Redis, waiting out the visibility timeout

    # Then another worker finishes the job, every key exactly once
    fleet.start_worker(concurrency=1)
    fleet.wait_for_state(job_id, "done", JOB_DONE_S)
    assert_exactly_once(fleet, bucket, job_id, keys)


def test_a_redis_restart_mid_job_loses_no_queued_task_or_job_state(
    make_fleet: FleetFactory, redis_server: RedisServer
) -> None:
    with make_fleet(models=[SLOW], redis_url=redis_server.url, **CHAOS_SETTINGS) as fleet:
        # Given a job of slow items under way on a Redis with AOF on, work still queued
        fleet.start_worker(concurrency=1)
        bucket = fleet.new_bucket("aof")
        keys = upload_photos(fleet, bucket)
        job_id = enqueue_prefix(fleet, bucket)
        fleet.wait_until(lambda: fleet.store.get(job_id).finished >= 2, 60, lambda: "two items finished")
        assert fleet.redis.llen(fleet.queue) > 0  # the restart really happens with work still queued

        # When Redis stops and starts again (same port, same AOF)
        redis_server.stop()
        time.sleep(REDIS_OUTAGE_S)
        redis_server.start()

        # Then the job completes with every key exactly once
        fleet.wait_for_state(job_id, "done", 240)
        assert_exactly_once(fleet, bucket, job_id, keys)


def test_a_key_that_kills_the_worker_every_time_becomes_poison_and_the_job_completes(
    make_fleet: FleetFactory, tmp_path: Path
) -> None:
    # Given a job whose one key runs a model that never returns (the pool child is killed inside
    # onnxruntime by the hard time limit each time), among keys that are fine
    settings = {
        **CHAOS_SETTINGS,
        "CUTOUT_WORKER__ITEM_TIME_LIMIT_S": "1.5",
        "CUTOUT_WORKER__HARD_LIMIT_GRACE_S": "1.0",
        "CUTOUT_WORKER__MAX_ATTEMPTS": "2",
        "CUTOUT_ITEMS_PER_TASK": "1",
    }
    with make_fleet(models=["tiny-u2netp", "tiny-hang"], **settings) as fleet:
        bucket = fleet.new_bucket("poison")
        photos = list(sample_catalog().values())
        fleet.upload(bucket, "in/", {f"p{i}.png": photos[i] for i in range(3)})
        manifest = tmp_path / "m.jsonl"
        manifest.write_text(
            "".join(
                json.dumps(
                    {"bucket": bucket, "key": f"in/p{i}.png", **({"model": "tiny-hang"} if i == 1 else {})}
                )
                + "\n"
                for i in range(3)
            )
        )
        worker = fleet.start_worker(concurrency=1)
        job = fleet.enqueue(
            "--manifest", str(manifest), "--out", f"s3://{bucket}/out", "--model", "tiny-u2netp"
        )

        # When the workers keep dying on it
        fleet.wait_for_state(job["job_id"], "done", 120)

        # Then after MAX_ATTEMPTS kills it is failed as poison, dead-lettered, and the rest succeeded
        outcomes = {o.key: o for o in fleet.store.iter_outcomes(job["job_id"])}
        assert outcomes["in/p1.png"].error_code == "poison", outcomes["in/p1.png"]
        assert "dead-letter" in outcomes["in/p1.png"].error
        assert {outcomes["in/p0.png"].status, outcomes["in/p2.png"].status} == {"succeeded"}, outcomes
        dead = fleet.store.dead_letters(job["job_id"])
        assert [entry["item"] for entry in dead] == [f"{bucket}/in/p1.png"] and dead[0]["attempts"] == 2
        assert "Hard time limit" in worker.log()
        assert worker.proc.poll() is None  # the worker itself lived through it


def test_malformed_and_pickled_messages_are_refused_and_never_run(fleet: Fleet, tmp_path: Path) -> None:
    # Given a worker, and a way to push raw entries with Celery's envelope straight onto its queue
    worker = fleet.start_worker(concurrency=1)
    publisher = CeleryPublisher(producer_app(fleet.redis_url), WorkerSettings(item_time_limit_s=60))
    template = publisher._envelope_template()
    marker = tmp_path / "pwned"

    def push(body: str, content_type: str, encoding: str | None) -> None:
        task_id = str(uuid.uuid4())
        envelope = {
            **template,
            "body": body,
            "content-type": content_type,
            "headers": {**template["headers"], "id": task_id, "root_id": task_id},
            "properties": {
                **template["properties"],
                "correlation_id": task_id,
                "delivery_tag": str(uuid.uuid4()),
                "body_encoding": encoding,
                "delivery_info": {"exchange": "", "routing_key": fleet.queue},
            },
        }
        fleet.redis.lpush(fleet.queue, json.dumps(envelope))

    # When it receives a pickled body that would run code if it were ever unpickled
    evil = pickle.dumps(([(__import__("os").system, (f"touch {marker}",))], {}, {}))
    push(base64.b64encode(evil).decode(), "application/x-python-serialize", "base64")
    # And JSON of the wrong shape: an unknown job field, a path-like job id, too many keys
    for payload in (
        {"v": 1, "job_id": "../x", "source": "s3://b/", "out": "s3://b/o", "options": {}, "keys": ["k"]},
        {"exec": "rm -rf /"},
        {"v": 1, "keys": ["k"] * 1000},
    ):
        push(json.dumps([[payload], {}, {}]), "application/json", None)
    fleet.wait_until(lambda: fleet.redis.llen(fleet.queue) == 0, 30, lambda: "the bad messages taken")
    # And a well-formed task of a job that does not exist (or expired)
    unknown = {
        "v": 1,
        "job_id": "no-such-job",
        "source": "s3://b/",
        "out": "s3://b/o",
        "options": {"model": SLOW},
        "keys": ["k.png"],
    }
    push(json.dumps([[unknown], {}, {}]), "application/json", None)
    fleet.wait_until(
        lambda: len(fleet.store.rejected()) >= 4, 30, lambda: f"4 rejected: {fleet.store.rejected()}"
    )

    # Then each JSON one is refused with its reason, the pickle never ran, and the worker lives on
    reasons = [entry["reason"] for entry in fleet.store.rejected()]
    assert sum("does not match the schema" in reason for reason in reasons) == 3, reasons
    assert any("unknown or expired job 'no-such-job'" in reason for reason in reasons), reasons
    assert not marker.exists()  # the pickle never ran
    assert "untrusted content" in worker.log() or "ContentDisallowed" in worker.log()
    assert worker.proc.poll() is None


def test_a_job_through_a_faulty_s3_completes_with_every_key_once(
    make_fleet: FleetFactory, s3_endpoint: str
) -> None:
    faults = {"500": 1.0, "503": 1.0, "reset": 1.0, "truncate": 0.5}
    s3_settings = {"CUTOUT_S3__ADDRESSING_STYLE": "path", "CUTOUT_S3__READ_TIMEOUT_S": "5"}
    with (
        S3FaultProxy(s3_endpoint, fault_rate=0.2, faults=faults, seed=5) as proxy,
        make_fleet(models=["tiny-u2netp"], **CHAOS_SETTINGS, **s3_settings) as fleet,
    ):
        # Given a worker that sees S3 only through the proxy: throttling, 5xx, resets and cut-off answers
        bucket = fleet.new_bucket("faulty")
        keys = upload_photos(fleet, bucket)
        fleet.start_worker(concurrency=1, env=fleet.env(CUTOUT_S3__ENDPOINT_URL=proxy.url))

        # When a job runs (the producer lists S3 directly)
        job_id = enqueue_prefix(fleet, bucket, "tiny-u2netp")
        fleet.wait_for_state(job_id, "done", JOB_DONE_S)

        # Then every key ended exactly once, all of them succeeded, and the faults really hit mid-work
        assert_exactly_once(fleet, bucket, job_id, keys)
        outcomes = list(fleet.store.iter_outcomes(job_id))
        assert all(o.status == "succeeded" for o in outcomes), [
            o for o in outcomes if o.status != "succeeded"
        ]
    print(f"S3 fault proxy: {proxy.stats()}")
    assert proxy.injected_total > 0, proxy.stats()


def test_the_producer_rides_out_a_redis_restart_mid_enqueue(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    from bench.enqueue_speed import write_manifest
    from cutout_fleet.config.settings import load_settings
    from cutout_fleet.connections import redis_client
    from cutout_fleet.options import ImageOptions
    from cutout_fleet.producer.enqueue import EnqueueRequest, enqueue_job
    from cutout_fleet.producer.listing import iter_manifest_chunks
    from cutout_fleet.producer.manifest import iter_manifest
    from cutout_fleet.storage import parse_location

    # Given a producer enqueueing a 60,000-key manifest in a thread
    keys = 60_000
    manifest = tmp_path / "m.csv"
    write_manifest(manifest, keys)
    settings = load_settings(redis_url=redis_server.url)
    store = RedisJobStore(redis_client(settings), 3600)
    publisher = CeleryPublisher(
        producer_app(redis_server.url), settings.worker, client=redis_client(settings)
    )
    request = EnqueueRequest(
        source=parse_location("s3://catalog-bucket/m.csv"),
        out=parse_location("s3://cutouts/out"),
        options=ImageOptions(),
        queue_for=lambda _model: "cpu",
        items_per_task=16,
        job_id="restart",
        mapping="full",
    )
    outcome: dict[str, object] = {}

    def produce() -> None:
        try:
            outcome["result"] = enqueue_job(
                request, store, iter_manifest_chunks(iter_manifest(str(manifest))), publisher
            )
        except Exception as exc:  # reported below, with the restart's timing
            outcome["error"] = exc

    thread = threading.Thread(target=produce)
    thread.start()
    assert wait_for(lambda: (job := store.get("restart")) is not None and job.total >= 5_000, 60)

    # When Redis stops mid-enqueue (the producer's next commands meet a dead server) and comes back
    redis_server.stop()
    assert thread.is_alive()
    time.sleep(REDIS_OUTAGE_S)
    redis_server.start()
    thread.join(120)

    # Then the enqueue finished without an error, with the exact total and every key queued
    assert "error" not in outcome, outcome
    job = store.get("restart")
    assert job is not None and job.final and job.total == keys  # exact, though commands were retried
    queued: set[str] = set()
    for entry in redis_client(settings).lrange("cpu", 0, -1):
        queued.update(json.loads(json.loads(entry)["body"])[0][0]["keys"])
    assert len(queued) == keys  # every key is in a queued task (a retried push may repeat one)
