"""Chaos: real kills and restarts mid-job.  Every key must end succeeded or failed-with-reason exactly
once, every output must be a valid image, and each test proves the fault really hit mid-work."""

from __future__ import annotations

import io
import json
import time

import pytest
import redis
from PIL import Image

from cutout_fleet.state import RedisJobStore, attempts_key
from tests.support.fleet import fleet_env, run_cli_json, sample_catalog, start_worker
from tests.support.processes import RedisServer, children, kill9, wait_for
from tests.support.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

SLOW = "tiny-slow"  # ~0.3 s per image: "mid-task" is a window we can hit on purpose
IMAGES = 16


def _env(redis_url, s3_endpoint, model_setup, **extra: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    model_dir, catalog = model_setup
    return fleet_env(
        redis_url=redis_url,
        s3_endpoint=s3_endpoint,
        model_dir=model_dir,
        catalog=catalog,
        extra={
            "CUTOUT_WORKER__MODELS": json.dumps([SLOW]),
            "CUTOUT_WORKER__INTRA_OP_THREADS": "1",
            "CUTOUT_ITEMS_PER_TASK": "2",
            "CUTOUT_WORKER__VISIBILITY_TIMEOUT_S": "6",
            **extra,
        },
    )


def _photos(s3_client, bucket: str) -> list[str]:  # type: ignore[no-untyped-def]
    catalog = list(sample_catalog().values())
    keys = []
    for i in range(IMAGES):
        key = f"in/p{i:02d}.png"
        s3_client.put_object(Bucket=bucket, Key=key, Body=catalog[i % len(catalog)])
        keys.append(key)
    return keys


def _assert_exactly_once(store: RedisJobStore, s3_client, bucket: str, job_id: str, keys: list[str]) -> None:  # type: ignore[no-untyped-def]
    job = store.get(job_id)
    assert job is not None and job.state == "done", job
    outcomes = {o.key: o for o in store.iter_outcomes(job_id)}
    assert set(outcomes) == set(keys)  # every key, once (the outcomes hash holds one entry per key)
    assert job.finished == job.total == len(keys)  # and the counters agree with the per-key state
    for key, outcome in outcomes.items():
        if outcome.status == "failed":
            assert outcome.error_code and outcome.error, outcome
            continue
        body = s3_client.get_object(Bucket=bucket, Key=outcome.output_key)["Body"].read()
        image = Image.open(io.BytesIO(body))
        image.load()  # a valid, complete PNG
        assert image.format == "PNG" and image.mode == "RGBA", key
    before = job.counts()
    assert store.rebuild_counts(job_id)
    assert store.get(job_id).counts() == before  # the counters are exactly what per-key state says


def _in_flight(store: RedisJobStore, job_id: str) -> bool:
    """Some key has started (attempt counted) and has no outcome yet."""
    started = store.r.hkeys(attempts_key(job_id))
    return any(not store.is_recorded(job_id, key.decode()) for key in started)


def test_killing_pool_children_mid_task_loses_and_duplicates_nothing(
    redis_url, redis_client, s3_endpoint, s3_client, new_bucket, model_setup, cutout_bin, tmp_path
):  # type: ignore[no-untyped-def]
    env = _env(redis_url, s3_endpoint, model_setup)
    worker = start_worker(cutout_bin, env, tmp_path, concurrency=1)
    store = RedisJobStore.from_url(redis_url, 3600)
    bucket = new_bucket("kill")
    keys = _photos(s3_client, bucket)
    try:
        job = run_cli_json(
            cutout_bin,
            env,
            "enqueue",
            f"s3://{bucket}/in/",
            "--out",
            f"s3://{bucket}/out",
            "--model",
            SLOW,
            "--json",
        )
        kills = 0
        for _ in range(3):
            assert wait_for(lambda: _in_flight(store, job["job_id"]), 60), worker.log()
            for child in children(worker.proc.pid):
                kill9(child)
                kills += 1
            time.sleep(1.0)  # let the pool replace the child and pick the task up again
        assert wait_for(lambda: store.get(job["job_id"]).state == "done", 180, 0.2), (
            store.get(job["job_id"]),
            worker.log(),
        )
    finally:
        assert worker.stop() == 0, worker.log()
    assert kills >= 3
    _assert_exactly_once(store, s3_client, bucket, job["job_id"], keys)
    attempts = {k.decode(): int(v) for k, v in store.r.hgetall(attempts_key(job["job_id"])).items()}
    assert max(attempts.values()) >= 2  # the kills really landed mid-key


def test_a_whole_worker_killed_mid_job_has_its_tasks_finished_by_another(
    redis_url, redis_client, s3_endpoint, s3_client, new_bucket, model_setup, cutout_bin, tmp_path
):  # type: ignore[no-untyped-def]
    env = _env(redis_url, s3_endpoint, model_setup)
    store = RedisJobStore.from_url(redis_url, 3600)
    bucket = new_bucket("dead")
    keys = _photos(s3_client, bucket)
    first = start_worker(cutout_bin, env, tmp_path, concurrency=1)
    job = run_cli_json(
        cutout_bin,
        env,
        "enqueue",
        f"s3://{bucket}/in/",
        "--out",
        f"s3://{bucket}/out",
        "--model",
        SLOW,
        "--json",
    )
    assert wait_for(lambda: _in_flight(store, job["job_id"]), 60), first.log()
    # The whole worker dies at once: main process and pool, no warm shutdown, no requeue by Celery.
    for pid in [first.proc.pid, *children(first.proc.pid)]:
        kill9(pid)
    first.proc.wait(timeout=10)
    unacked = redis_client.hlen("unacked")
    assert unacked >= 1  # its reserved task is in Redis, waiting out the visibility timeout
    second = start_worker(cutout_bin, env, tmp_path, concurrency=1)
    try:
        assert wait_for(lambda: store.get(job["job_id"]).state == "done", 180, 0.2), second.log()
    finally:
        assert second.stop() == 0, second.log()
    _assert_exactly_once(store, s3_client, bucket, job["job_id"], keys)


def test_a_redis_restart_mid_job_loses_no_queued_task_or_job_state(
    s3_endpoint, s3_client, new_bucket, model_setup, cutout_bin, tmp_path
):  # type: ignore[no-untyped-def]
    server = RedisServer(free_port(), tmp_path / "redis")
    server.start()
    env = _env(server.url, s3_endpoint, model_setup)
    worker = start_worker(cutout_bin, env, tmp_path, concurrency=1)
    store = RedisJobStore.from_url(server.url, 3600)
    bucket = new_bucket("aof")
    keys = _photos(s3_client, bucket)
    try:
        job = run_cli_json(
            cutout_bin,
            env,
            "enqueue",
            f"s3://{bucket}/in/",
            "--out",
            f"s3://{bucket}/out",
            "--model",
            SLOW,
            "--json",
        )
        assert wait_for(lambda: store.get(job["job_id"]).finished >= 2, 60), worker.log()
        queued_at_restart = redis.Redis.from_url(server.url).llen("cpu")
        assert queued_at_restart > 0  # the restart really happens with work still queued
        server.stop()
        time.sleep(1.0)
        server.start()  # same port, same AOF
        assert wait_for(lambda: store.get(job["job_id"]).state == "done", 240, 0.3), worker.log()
        _assert_exactly_once(store, s3_client, bucket, job["job_id"], keys)
    finally:
        assert worker.stop() == 0, worker.log()
        server.stop()


def test_a_key_that_kills_the_worker_every_time_becomes_poison_and_the_job_completes(
    redis_url, redis_client, s3_endpoint, s3_client, new_bucket, model_setup, cutout_bin, tmp_path
):  # type: ignore[no-untyped-def]
    # Given a job whose one key runs a model slower than the hard time limit (the pool child is
    # killed inside onnxruntime each time), among keys that are fine
    env = _env(
        redis_url,
        s3_endpoint,
        model_setup,
        CUTOUT_WORKER__MODELS=json.dumps(["tiny-u2netp", "tiny-hang"]),
        CUTOUT_WORKER__ITEM_TIME_LIMIT_S="1.5",
        CUTOUT_WORKER__HARD_LIMIT_GRACE_S="1.0",
        CUTOUT_WORKER__MAX_ATTEMPTS="2",
        CUTOUT_ITEMS_PER_TASK="1",
    )
    bucket = new_bucket("poison")
    photos = list(sample_catalog().values())
    for i in range(3):
        s3_client.put_object(Bucket=bucket, Key=f"in/p{i}.png", Body=photos[i])
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
    worker = start_worker(cutout_bin, env, tmp_path, concurrency=1)
    store = RedisJobStore.from_url(redis_url, 3600)
    try:
        job = run_cli_json(
            cutout_bin,
            env,
            "enqueue",
            "--manifest",
            str(manifest),
            "--out",
            f"s3://{bucket}/out",
            "--model",
            "tiny-u2netp",
            "--json",
        )
        # When the workers keep dying on it
        assert wait_for(lambda: store.get(job["job_id"]).state == "done", 120, 0.2), worker.log()
        # Then after MAX_ATTEMPTS kills it is failed as poison, dead-lettered, and the rest succeeded
        outcomes = {o.key: o for o in store.iter_outcomes(job["job_id"])}
        assert outcomes["in/p1.png"].error_code == "poison", outcomes["in/p1.png"]
        assert "dead-letter" in outcomes["in/p1.png"].error
        assert {outcomes["in/p0.png"].status, outcomes["in/p2.png"].status} == {"succeeded"}, outcomes
        dead = store.dead_letters(job["job_id"])
        assert [entry["key"] for entry in dead] == ["in/p1.png"] and dead[0]["attempts"] == 2
        assert "Hard time limit" in worker.log()
        assert worker.proc.poll() is None  # the worker itself lived through it
    finally:
        assert worker.stop() == 0, worker.log()


def test_malformed_and_pickled_messages_are_refused_and_never_run(
    redis_url, redis_client, s3_endpoint, model_setup, cutout_bin, tmp_path
):  # type: ignore[no-untyped-def]
    import base64
    import pickle
    import uuid

    from cutout_fleet.producer.publish import CeleryPublisher, producer_app

    env = _env(redis_url, s3_endpoint, model_setup)
    worker = start_worker(cutout_bin, env, tmp_path, concurrency=1)
    try:
        publisher = CeleryPublisher(producer_app(redis_url), 60)
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
                    "delivery_info": {"exchange": "", "routing_key": "cpu"},
                },
            }
            redis_client.lpush("cpu", json.dumps(envelope))

        # A pickled body that would run code if it were ever unpickled
        evil = pickle.dumps(([(__import__("os").system, (f"touch {marker}",))], {}, {}))
        push(base64.b64encode(evil).decode(), "application/x-python-serialize", "base64")
        # JSON of the wrong shape: an unknown job field, a path-like job id, too many keys
        for payload in (
            {"v": 1, "job_id": "../x", "source": "s3://b/", "out": "s3://b/o", "options": {}, "keys": ["k"]},
            {"exec": "rm -rf /"},
            {"v": 1, "keys": ["k"] * 1000},
        ):
            push(json.dumps([[payload], {}, {}]), "application/json", None)
        assert wait_for(lambda: redis_client.llen("cpu") == 0, 30), worker.log()
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
        assert wait_for(lambda: len(RedisJobStore(redis_client, 60).rejected()) >= 4, 30), worker.log()
        reasons = [entry["reason"] for entry in RedisJobStore(redis_client, 60).rejected()]
        assert sum("does not match the schema" in reason for reason in reasons) == 3, reasons
        assert any("unknown or expired job 'no-such-job'" in reason for reason in reasons), reasons
        assert not marker.exists()  # the pickle never ran
        assert "untrusted content" in worker.log() or "ContentDisallowed" in worker.log()
        assert worker.proc.poll() is None
    finally:
        assert worker.stop() == 0, worker.log()


def test_a_job_through_a_faulty_s3_completes_with_every_key_once(
    redis_url, redis_client, s3_endpoint, s3_client, new_bucket, model_setup, cutout_bin, tmp_path
):  # type: ignore[no-untyped-def]
    from tests.support.s3_fault_proxy import S3FaultProxy

    bucket = new_bucket("faulty")
    keys = _photos(s3_client, bucket)
    faults = {"500": 1.0, "503": 1.0, "reset": 1.0, "truncate": 0.5}
    with S3FaultProxy(s3_endpoint, fault_rate=0.2, faults=faults, seed=5) as proxy:
        # The worker sees S3 only through the proxy; throttling, 5xx, resets and cut-off answers hit it.
        env = _env(
            redis_url,
            proxy.url,
            model_setup,
            CUTOUT_WORKER__MODELS=json.dumps(["tiny-u2netp"]),
            CUTOUT_S3__ADDRESSING_STYLE="path",
            CUTOUT_S3__READ_TIMEOUT_S="5",
        )
        worker = start_worker(cutout_bin, env, tmp_path, concurrency=1)
        store = RedisJobStore.from_url(redis_url, 3600)
        try:
            producer_env = {**env, "CUTOUT_S3__ENDPOINT_URL": s3_endpoint}
            job = run_cli_json(
                cutout_bin,
                producer_env,
                "enqueue",
                f"s3://{bucket}/in/",
                "--out",
                f"s3://{bucket}/out",
                "--model",
                "tiny-u2netp",
                "--json",
            )
            assert wait_for(lambda: store.get(job["job_id"]).state == "done", 180, 0.2), worker.log()
            _assert_exactly_once(store, s3_client, bucket, job["job_id"], keys)
        finally:
            assert worker.stop() == 0, worker.log()
        injected = proxy.injected_total
    print(f"S3 fault proxy: {proxy.stats()}")
    assert injected > 0, proxy.stats()  # the faults really hit mid-work
    outcomes = list(store.iter_outcomes(job["job_id"]))
    assert all(o.status == "succeeded" for o in outcomes), [o for o in outcomes if o.status != "succeeded"]


def test_the_producer_rides_out_a_redis_restart_mid_enqueue(tmp_path):  # type: ignore[no-untyped-def]
    import threading

    from bench.enqueue_speed import write_manifest
    from cutout_fleet.config.settings import load_settings
    from cutout_fleet.connections import redis_client
    from cutout_fleet.options import ImageOptions
    from cutout_fleet.producer.enqueue import EnqueueRequest, enqueue_job
    from cutout_fleet.producer.listing import iter_manifest_chunks
    from cutout_fleet.producer.manifest import iter_manifest
    from cutout_fleet.producer.publish import CeleryPublisher, producer_app
    from cutout_fleet.storage import parse_location

    server = RedisServer(free_port(), tmp_path / "redis")
    server.start()
    keys = 60_000
    manifest = tmp_path / "m.csv"
    write_manifest(manifest, keys)
    settings = load_settings(redis_url=server.url)
    store = RedisJobStore(redis_client(settings), 3600)
    publisher = CeleryPublisher(producer_app(server.url), 60, client=redis_client(settings))
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
    try:
        thread.start()
        assert wait_for(lambda: (job := store.get("restart")) is not None and job.total >= 5_000, 60)
        server.stop()  # mid-enqueue: the producer's next commands meet a dead server
        assert thread.is_alive()
        time.sleep(1.0)
        server.start()
        thread.join(120)
        assert "error" not in outcome, outcome
        job = store.get("restart")
        assert job is not None and job.final and job.total == keys  # exact, though commands were retried
        queued: set[str] = set()
        for entry in store.r.lrange("cpu", 0, -1):
            queued.update(json.loads(json.loads(entry)["body"])[0][0]["keys"])
        assert len(queued) == keys  # every key is in a queued task (a retried push may repeat one)
    finally:
        server.stop()
