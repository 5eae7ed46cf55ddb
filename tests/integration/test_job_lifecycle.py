"""Catalog jobs at scale, against the real Redis, the S3 server and a real worker process:
idempotent re-runs, --force, retry, cancel, the failure guard and resume, redelivery, dry run, manifests."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
import redis
from PIL import Image

from cutout_fleet.messages import TaskMessage
from cutout_fleet.options import ImageOptions
from cutout_fleet.producer.publish import CeleryPublisher, producer_app
from cutout_fleet.state import RedisJobStore
from tests.support.fleet import fleet_env, run_cli, run_cli_json, sample_catalog, start_worker, truncated_jpeg

pytestmark = pytest.mark.integration

FAST, SLOW = "tiny-u2netp", "tiny-slow"


@pytest.fixture(scope="module")
def fleet(redis_url, s3_endpoint, model_setup, cutout_bin, tmp_path_factory):  # type: ignore[no-untyped-def]
    redis.Redis.from_url(redis_url).flushdb()
    model_dir, catalog = model_setup
    env = fleet_env(
        redis_url=redis_url,
        s3_endpoint=s3_endpoint,
        model_dir=model_dir,
        catalog=catalog,
        extra={
            "CUTOUT_WORKER__MODELS": json.dumps([FAST, SLOW]),
            "CUTOUT_WORKER__INTRA_OP_THREADS": "1",
            "CUTOUT_ITEMS_PER_TASK": "2",
            "CUTOUT_GUARD__MIN_ITEMS": "3",
        },
    )
    worker = start_worker(cutout_bin, env, tmp_path_factory.mktemp("logs"), concurrency=1)
    yield env, worker
    assert worker.stop() == 0, worker.log()


def _photos(n: int) -> dict[str, bytes]:
    catalog = list(sample_catalog().values())
    return {f"p{i:02d}.png": catalog[i % len(catalog)] for i in range(n)}


def _upload(s3_client, bucket: str, prefix: str, files: dict[str, bytes]) -> None:  # type: ignore[no-untyped-def]
    for key, data in files.items():
        s3_client.put_object(Bucket=bucket, Key=prefix + key, Body=data)


def _enqueue(cutout_bin, env, src: str, out: str, *args: str) -> dict:  # type: ignore[no-untyped-def]
    return run_cli_json(cutout_bin, env, "enqueue", src, "--out", out, "--json", *args)


def _wait(cutout_bin, env, job_id: str, timeout_s: float = 120) -> dict:  # type: ignore[no-untyped-def]
    result = run_cli(cutout_bin, env, "status", job_id, "--wait", "--json", timeout_s=timeout_s, check=False)
    return json.loads(result.stdout)


def _lines(s3_client, bucket: str, key: str) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    return {line["key"]: line for line in map(json.loads, body.splitlines())}


def test_rerunning_a_finished_job_skips_everything_and_force_recomputes(
    fleet, s3_client, new_bucket, cutout_bin
):  # type: ignore[no-untyped-def]
    env, _ = fleet
    bucket = new_bucket("rerun")
    _upload(s3_client, bucket, "in/", _photos(4))
    src, out = f"s3://{bucket}/in/", f"s3://{bucket}/out"
    first = _wait(cutout_bin, env, _enqueue(cutout_bin, env, src, out, "--model", FAST)["job_id"])
    assert (first["succeeded"], first["skipped"]) == (4, 0)

    second = _wait(cutout_bin, env, _enqueue(cutout_bin, env, src, out, "--model", FAST)["job_id"])
    assert (second["succeeded"], second["skipped"], second["state"]) == (0, 4, "done")

    changed = _wait(
        cutout_bin,
        env,
        _enqueue(cutout_bin, env, src, out, "--model", FAST, "--background", "white")["job_id"],
    )
    assert changed["succeeded"] == 4  # other options: other pixels, so nothing is skipped

    forced = _wait(cutout_bin, env, _enqueue(cutout_bin, env, src, out, "--model", FAST, "--force")["job_id"])
    assert (forced["succeeded"], forced["skipped"]) == (4, 0)
    lines = _lines(s3_client, bucket, f"out/_reports/{forced['job_id']}.jsonl")
    assert all("model" in line["timings_ms"] for line in lines.values())


def test_enqueueing_the_same_job_twice_does_not_double_any_count(fleet, s3_client, new_bucket, cutout_bin):  # type: ignore[no-untyped-def]
    env, _ = fleet
    bucket = new_bucket("twice")
    _upload(s3_client, bucket, "in/", _photos(3))
    args = (f"s3://{bucket}/in/", f"s3://{bucket}/out", "--model", FAST, "--job-id", f"twice-{bucket}")
    first = _enqueue(cutout_bin, env, *args)
    again = _enqueue(cutout_bin, env, *args)
    assert (first["total"], again["total"], again["already_enqueued"]) == (3, 0, 3)
    status = _wait(cutout_bin, env, first["job_id"])
    assert (status["total"], status["succeeded"], status["queued"]) == (3, 3, 0)


def test_a_task_delivered_twice_counts_each_key_once(fleet, s3_client, new_bucket, cutout_bin, redis_url):  # type: ignore[no-untyped-def]
    env, _ = fleet
    bucket = new_bucket("dup")
    _upload(s3_client, bucket, "in/", _photos(2))
    job = _enqueue(cutout_bin, env, f"s3://{bucket}/in/", f"s3://{bucket}/out", "--model", FAST)
    assert _wait(cutout_bin, env, job["job_id"])["succeeded"] == 2
    # The same message again, as a redelivery after a lost ack would bring it.
    message = TaskMessage(
        job_id=job["job_id"],
        source=f"s3://{bucket}/in/",
        out=f"s3://{bucket}/out",
        options=ImageOptions(model=FAST),
        keys=["in/p00.png", "in/p01.png"],
    )
    publisher = CeleryPublisher(producer_app(redis_url), 60)
    publisher.publish("cpu", [message, message])
    deadline = time.monotonic() + 30
    client = redis.Redis.from_url(redis_url)
    while client.llen("cpu") and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    status = run_cli_json(cutout_bin, env, "status", job["job_id"], "--json")
    assert (status["total"], status["succeeded"], status["failed"], status["skipped"]) == (2, 2, 0, 0)


def test_retry_after_a_failure_fixes_only_the_failed_item(fleet, s3_client, new_bucket, cutout_bin):  # type: ignore[no-untyped-def]
    env, _ = fleet
    bucket = new_bucket("retry")
    photos = _photos(3)
    _upload(s3_client, bucket, "in/", {**photos, "broken.jpg": truncated_jpeg()})
    job = _enqueue(cutout_bin, env, f"s3://{bucket}/in/", f"s3://{bucket}/out", "--model", FAST)
    status = _wait(cutout_bin, env, job["job_id"])
    assert (status["succeeded"], status["failed"], status["failures_by_code"]) == (3, 1, {"undecodable": 1})
    before = {
        k: s3_client.head_object(Bucket=bucket, Key=f"out/{k[:-4]}.png")["LastModified"] for k in photos
    }

    # When the broken file is fixed and the job retried
    _upload(s3_client, bucket, "in/", {"broken.jpg": sample_catalog()["bags/coffee.JPG"]})
    run_cli(cutout_bin, env, "retry", job["job_id"])
    status = _wait(cutout_bin, env, job["job_id"])

    # Then only that item ran again, and the report says so
    assert (status["succeeded"], status["failed"], status["state"]) == (4, 0, "done")
    after = {k: s3_client.head_object(Bucket=bucket, Key=f"out/{k[:-4]}.png")["LastModified"] for k in photos}
    assert after == before
    assert (
        _lines(s3_client, bucket, f"out/_reports/{job['job_id']}.jsonl")["in/broken.jpg"]["status"]
        == "succeeded"
    )
    csv_rows = (
        s3_client.get_object(Bucket=bucket, Key=f"out/_reports/{job['job_id']}.csv")["Body"].read().decode()
    )
    assert f"{bucket},in/broken.jpg,,succeeded,,200,out/broken.png" in csv_rows.splitlines()


def test_cancel_mid_job_leaves_no_more_work_done(fleet, s3_client, new_bucket, cutout_bin, redis_url):  # type: ignore[no-untyped-def]
    env, _ = fleet
    bucket = new_bucket("cancel")
    _upload(s3_client, bucket, "in/", _photos(16))
    job = _enqueue(cutout_bin, env, f"s3://{bucket}/in/", f"s3://{bucket}/out", "--model", SLOW)
    store = RedisJobStore.from_url(redis_url, 3600)
    deadline = time.monotonic() + 60
    while store.get(job["job_id"]).finished < 2 and time.monotonic() < deadline:
        time.sleep(0.05)

    run_cli(cutout_bin, env, "cancel", job["job_id"])
    at_cancel = store.get(job["job_id"]).finished
    client = redis.Redis.from_url(redis_url)
    while client.llen("cpu") and time.monotonic() < deadline + 60:
        time.sleep(0.1)
    time.sleep(1.5)  # the in-flight item, if any, lands

    final = store.get(job["job_id"])
    assert final.state == "cancelled"
    assert at_cancel <= final.finished <= at_cancel + 1  # at most the image that was being worked on
    assert final.finished < 16
    outputs = s3_client.list_objects_v2(Bucket=bucket, Prefix="out/p").get("KeyCount", 0)
    assert outputs == final.succeeded


def test_the_failure_guard_stops_a_failing_job_and_resume_continues_it(
    fleet, s3_client, new_bucket, cutout_bin
):  # type: ignore[no-untyped-def]
    env, _ = fleet
    bucket = new_bucket("guard")
    _upload(s3_client, bucket, "in/", {f"bad{i}.jpg": truncated_jpeg() for i in range(8)})
    job = _enqueue(cutout_bin, env, f"s3://{bucket}/in/", f"s3://{bucket}/out", "--model", FAST)
    status = _wait(cutout_bin, env, job["job_id"])
    # min 3 items, more than 50 % failed: the job stops itself and keeps the rest
    assert status["state"] == "stopped" and status["failed"] == 3 and status["queued"] == 5
    assert "failure guard" in status["stop_reason"] and "cutout resume" in status["stop_reason"]

    good = sample_catalog()["shoes/chelsea.png"]
    _upload(s3_client, bucket, "in/", {f"bad{i}.jpg": good for i in range(8)})
    run_cli(cutout_bin, env, "resume", job["job_id"])
    status = _wait(cutout_bin, env, job["job_id"])
    assert (status["state"], status["succeeded"], status["failed"]) == ("done", 5, 3)
    run_cli(cutout_bin, env, "retry", job["job_id"])
    status = _wait(cutout_bin, env, job["job_id"])
    assert (status["state"], status["succeeded"], status["failed"]) == ("done", 8, 0)


def test_dry_run_counts_skips_and_estimates_without_enqueueing(
    fleet, s3_client, new_bucket, cutout_bin, redis_url
):  # type: ignore[no-untyped-def]
    env, _ = fleet
    bucket = new_bucket("dry")
    photos = _photos(3)
    _upload(
        s3_client,
        bucket,
        "in/",
        {**photos, "a.jpg": photos["p00.png"], "a.png": photos["p01.png"], "x.txt": b"x"},
    )
    jobs_before = redis.Redis.from_url(redis_url).zcard("cf:jobs")
    first = _wait(
        cutout_bin,
        env,
        _enqueue(
            cutout_bin, env, f"s3://{bucket}/in/", f"s3://{bucket}/out", "--model", FAST, "--include", "p*"
        )["job_id"],
    )
    assert first["succeeded"] == 3

    report = _enqueue(
        cutout_bin, env, f"s3://{bucket}/in/", f"s3://{bucket}/out", "--model", FAST, "--dry-run"
    )

    assert (report["images"], report["ignored"], report["collisions"]) == (5, 1, 1)
    assert (report["already_done"], report["to_process"]) == (3, 1)
    assert report["total_bytes"] > 0 and report["sample"][0]["output_key"].startswith("out/")
    assert report["median_item_s"] > 0 and report["live_processes"] == 1 and report["estimated_s"] is not None
    assert redis.Redis.from_url(redis_url).zcard("cf:jobs") == jobs_before + 1  # only the real job


def test_status_watch_json_reports_rate_eta_and_queue_depths(fleet, s3_client, new_bucket, cutout_bin):  # type: ignore[no-untyped-def]
    env, _ = fleet
    bucket = new_bucket("watch")
    _upload(s3_client, bucket, "in/", _photos(2))
    job = _enqueue(cutout_bin, env, f"s3://{bucket}/in/", f"s3://{bucket}/out", "--model", FAST)
    result = run_cli(cutout_bin, env, "status", job["job_id"], "--watch", "--json", timeout_s=60)
    last = json.loads(result.stdout.splitlines()[-1])
    assert last["state"] == "done" and last["succeeded"] == 2
    assert set(last["queue_depths"]) == {"cpu", "gpu"} and last["rate_per_min"] > 0
    listing = run_cli(cutout_bin, env, "jobs", "--json").stdout
    assert job["job_id"] in listing


def test_a_manifest_spanning_buckets_maps_outputs_under_each_bucket(
    fleet, s3_client, new_bucket, cutout_bin, tmp_path
):  # type: ignore[no-untyped-def]
    env, _ = fleet
    one, two, out = new_bucket("mfa"), new_bucket("mfb"), new_bucket("mfo")
    photos = _photos(2)
    _upload(s3_client, one, "cat/", photos)
    _upload(s3_client, two, "cat/", {"red shoe.png": photos["p00.png"]})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps({"bucket": one, "key": "cat/p00.png"})
        + "\n"
        + json.dumps({"bucket": one, "key": "cat/p01.png", "background": "#ff0000"})
        + "\n"
        + json.dumps({"bucket": two, "key": "cat/red shoe.png"})
        + "\n"
    )
    job = run_cli_json(
        cutout_bin,
        env,
        "enqueue",
        "--manifest",
        str(manifest),
        "--out",
        f"s3://{out}/o",
        "--model",
        FAST,
        "--json",
    )
    status = _wait(cutout_bin, env, job["job_id"])
    assert status["succeeded"] == 3
    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=out, Prefix="o/")["Contents"]}
    assert {f"o/{one}/cat/p00.png", f"o/{one}/cat/p01.png", f"o/{two}/cat/red shoe.png"} <= keys
    red = Image.open(io.BytesIO(s3_client.get_object(Bucket=out, Key=f"o/{one}/cat/p01.png")["Body"].read()))
    r, g, b = (int(v) for v in np.asarray(red)[0, 0])
    assert red.mode == "RGB" and r > 240 and g < 20 and b < 20  # the per-key option reached it
    csv_rows = s3_client.get_object(Bucket=out, Key=f"o/_reports/{job['job_id']}.csv")["Body"].read().decode()
    assert f"{two},cat/red+shoe.png,,succeeded,,200," in csv_rows
