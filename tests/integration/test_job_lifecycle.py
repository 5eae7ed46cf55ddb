"""Catalog jobs at scale, against the real Redis, the S3 server and a real worker process:
idempotent re-runs, --force, retry, cancel, the failure guard and resume, redelivery, dry run, manifests."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from cutout_fleet.config.settings import WorkerSettings
from cutout_fleet.messages import TaskMessage
from cutout_fleet.options import ImageOptions
from cutout_fleet.producer.publish import CeleryPublisher, producer_app
from tests.support.fleet import Fleet, FleetFactory, sample_catalog, truncated_jpeg

pytestmark = pytest.mark.integration

FAST, SLOW = "tiny-u2netp", "tiny-slow"


@pytest.fixture(scope="module")
def fleet(make_fleet: FleetFactory) -> Iterator[Fleet]:
    """One real worker process (concurrency 1) for this module; the guard trips from 3 items."""
    with make_fleet(models=[FAST, SLOW], CUTOUT_ITEMS_PER_TASK="2", CUTOUT_GUARD__MIN_ITEMS="3") as fleet:
        fleet.start_worker(concurrency=1)
        yield fleet


def _photos(n: int) -> dict[str, bytes]:
    catalog = list(sample_catalog().values())
    return {f"p{i:02d}.png": catalog[i % len(catalog)] for i in range(n)}


def _run(fleet: Fleet, src: str, out: str, *args: str) -> dict:
    """Enqueue a job and wait for its end; its final status."""
    return fleet.wait_for_job(fleet.enqueue(src, "--out", out, *args)["job_id"])


def _lines(fleet: Fleet, bucket: str, key: str) -> dict[str, dict]:
    return {line["key"]: line for line in fleet.read_jsonl(bucket, key)}


def test_rerunning_a_finished_job_skips_everything_and_force_recomputes(fleet: Fleet) -> None:
    # Given a prefix of photos processed once
    bucket = fleet.new_bucket("rerun")
    fleet.upload(bucket, "in/", _photos(4))
    src, out = f"s3://{bucket}/in/", f"s3://{bucket}/out"
    first = _run(fleet, src, out, "--model", FAST)
    assert (first["succeeded"], first["skipped"]) == (4, 0)

    # When the same job runs again, then every item is skipped as up to date
    second = _run(fleet, src, out, "--model", FAST)
    assert (second["succeeded"], second["skipped"], second["state"]) == (0, 4, "done")

    # When it runs with other options, then nothing is skipped: other options, other pixels
    changed = _run(fleet, src, out, "--model", FAST, "--background", "white")
    assert changed["succeeded"] == 4

    # When it runs with --force, then every item is computed again
    forced = _run(fleet, src, out, "--model", FAST, "--force")
    assert (forced["succeeded"], forced["skipped"]) == (4, 0)
    lines = _lines(fleet, bucket, f"out/_reports/{forced['job_id']}.jsonl")
    assert all("model" in line["timings_ms"] for line in lines.values())


def test_enqueueing_the_same_job_twice_does_not_double_any_count(fleet: Fleet) -> None:
    # Given a prefix of three photos
    bucket = fleet.new_bucket("twice")
    fleet.upload(bucket, "in/", _photos(3))
    args = (
        f"s3://{bucket}/in/",
        "--out",
        f"s3://{bucket}/out",
        "--model",
        FAST,
        "--job-id",
        f"twice-{bucket}",
    )

    # When the same job id is enqueued twice
    first = fleet.enqueue(*args)
    again = fleet.enqueue(*args)

    # Then the second call adds nothing, and the job counts each item once
    assert (first["total"], again["total"], again["already_enqueued"]) == (3, 0, 3)
    status = fleet.wait_for_job(first["job_id"])
    assert (status["total"], status["succeeded"], status["queued"]) == (3, 3, 0)


def test_a_task_delivered_twice_counts_each_key_once(fleet: Fleet) -> None:
    # Given a finished job of two photos
    bucket = fleet.new_bucket("dup")
    fleet.upload(bucket, "in/", _photos(2))
    job = fleet.enqueue(f"s3://{bucket}/in/", "--out", f"s3://{bucket}/out", "--model", FAST)
    assert fleet.wait_for_job(job["job_id"])["succeeded"] == 2

    # When the same message arrives twice more, as a redelivery after a lost ack would bring it
    message = TaskMessage(
        job_id=job["job_id"],
        source=f"s3://{bucket}/in/",
        out=f"s3://{bucket}/out",
        options=ImageOptions(model=FAST),
        keys=["in/p00.png", "in/p01.png"],
    )
    publisher = CeleryPublisher(producer_app(fleet.redis_url), WorkerSettings(item_time_limit_s=60))
    publisher.publish(fleet.queue, [message, message])
    fleet.wait_drained()

    # Then no count moved
    status = fleet.cli_json("status", job["job_id"], "--json")
    assert (status["total"], status["succeeded"], status["failed"], status["skipped"]) == (2, 2, 0, 0)


def test_retry_after_a_failure_fixes_only_the_failed_item(fleet: Fleet) -> None:
    # Given a job with three good photos and a broken one
    bucket = fleet.new_bucket("retry")
    photos = _photos(3)
    fleet.upload(bucket, "in/", {**photos, "broken.jpg": truncated_jpeg()})
    job = fleet.enqueue(f"s3://{bucket}/in/", "--out", f"s3://{bucket}/out", "--model", FAST)
    status = fleet.wait_for_job(job["job_id"])
    assert (status["succeeded"], status["failed"], status["failures_by_code"]) == (3, 1, {"undecodable": 1})
    before = {k: fleet.s3.head_object(Bucket=bucket, Key=f"out/{k[:-4]}.png")["LastModified"] for k in photos}

    # When the broken file is fixed and the job retried
    fleet.upload(bucket, "in/", {"broken.jpg": sample_catalog()["bags/coffee.JPG"]})
    fleet.cli("retry", job["job_id"])
    status = fleet.wait_for_job(job["job_id"])

    # Then only that item ran again, and the report says so
    assert (status["succeeded"], status["failed"], status["state"]) == (4, 0, "done")
    after = {k: fleet.s3.head_object(Bucket=bucket, Key=f"out/{k[:-4]}.png")["LastModified"] for k in photos}
    assert after == before
    assert (
        _lines(fleet, bucket, f"out/_reports/{job['job_id']}.jsonl")["in/broken.jpg"]["status"] == "succeeded"
    )
    csv_rows = fleet.read(bucket, f"out/_reports/{job['job_id']}.csv").decode()
    assert f"{bucket},in/broken.jpg,,succeeded,200,,out/broken.png" in csv_rows.splitlines()


def test_cancel_mid_job_leaves_no_more_work_done(fleet: Fleet) -> None:
    # Given a job of slow items, two of them finished
    bucket = fleet.new_bucket("cancel")
    fleet.upload(bucket, "in/", _photos(16))
    job = fleet.enqueue(f"s3://{bucket}/in/", "--out", f"s3://{bucket}/out", "--model", SLOW)
    fleet.wait_until(lambda: fleet.store.get(job["job_id"]).finished >= 2, 60, lambda: "two items finished")

    # When the job is cancelled, and every task still queued or in flight has run its course
    fleet.cli("cancel", job["job_id"])
    at_cancel = fleet.store.get(job["job_id"]).finished
    fleet.wait_drained()

    # Then at most the image that was being worked on finished after the cancel
    final = fleet.store.get(job["job_id"])
    assert final.state == "cancelled"
    assert at_cancel <= final.finished <= at_cancel + 1
    assert final.finished < 16
    outputs = fleet.s3.list_objects_v2(Bucket=bucket, Prefix="out/p").get("KeyCount", 0)
    assert outputs == final.succeeded


def test_the_failure_guard_stops_a_failing_job_and_resume_continues_it(fleet: Fleet) -> None:
    # Given a job of eight broken files
    bucket = fleet.new_bucket("guard")
    fleet.upload(bucket, "in/", {f"bad{i}.jpg": truncated_jpeg() for i in range(8)})
    job = fleet.enqueue(f"s3://{bucket}/in/", "--out", f"s3://{bucket}/out", "--model", FAST)

    # When it runs, then after the minimum of 3 items, more than 50 % failed: it stops and keeps the rest
    status = fleet.wait_for_job(job["job_id"])
    assert status["state"] == "stopped" and status["failed"] == 3 and status["queued"] == 5
    assert "failure guard" in status["stop_reason"] and "cutout resume" in status["stop_reason"]

    # When the files are fixed and the job resumed, then the rest succeed
    good = sample_catalog()["shoes/chelsea.png"]
    fleet.upload(bucket, "in/", {f"bad{i}.jpg": good for i in range(8)})
    fleet.cli("resume", job["job_id"])
    status = fleet.wait_for_job(job["job_id"])
    assert (status["state"], status["succeeded"], status["failed"]) == ("done", 5, 3)

    # And a retry then fixes the three that failed before the stop
    fleet.cli("retry", job["job_id"])
    status = fleet.wait_for_job(job["job_id"])
    assert (status["state"], status["succeeded"], status["failed"]) == ("done", 8, 0)


def test_bad_files_that_sort_first_stop_a_job_and_resume_no_guard_finishes_it(fleet: Fleet) -> None:
    # Given a prefix where someone put broken files whose keys sort before the real photos
    bucket = fleet.new_bucket("sortfirst")
    fleet.upload(bucket, "in/", {f"0000-{i}.jpg": truncated_jpeg() for i in range(4)})
    fleet.upload(bucket, "in/", _photos(4))
    job_id = fleet.enqueue(f"s3://{bucket}/in/", "--out", f"s3://{bucket}/out", "--model", FAST)["job_id"]

    # When it runs, then the guard stops it, naming the commonest error and the commands to go on
    status = fleet.wait_for_job(job_id)
    assert status["state"] == "stopped"
    reason = status["stop_reason"]
    assert "most with undecodable" in reason
    assert f"cutout resume {job_id}`" in reason and f"cutout resume {job_id} --no-guard" in reason

    # When it is resumed without the guard, then every photo is cut out and each bad file fails alone
    fleet.cli("resume", job_id, "--no-guard")
    status = fleet.wait_for_job(job_id)
    assert (status["state"], status["succeeded"], status["failed"]) == ("done", 4, 4)


def test_dry_run_counts_skips_and_estimates_without_enqueueing(fleet: Fleet) -> None:
    # Given a prefix with photos already done, a collision pair and a non-image
    bucket = fleet.new_bucket("dry")
    photos = _photos(3)
    fleet.upload(
        bucket, "in/", {**photos, "a.jpg": photos["p00.png"], "a.png": photos["p01.png"], "x.txt": b"x"}
    )
    jobs_before = fleet.redis.zcard("cf:jobs")
    src, out = f"s3://{bucket}/in/", f"s3://{bucket}/out"
    first = _run(fleet, src, out, "--model", FAST, "--include", "p*")
    assert first["succeeded"] == 3

    # When the whole prefix is enqueued as a dry run
    report = fleet.enqueue(src, "--out", out, "--model", FAST, "--dry-run")

    # Then it counts, finds the collision and the done items, estimates, and enqueues nothing
    assert (report["images"], report["ignored"], report["collisions"]) == (5, 1, 1)
    assert (report["already_done"], report["to_process"]) == (3, 1)
    assert report["total_bytes"] > 0 and report["sample"][0]["output_key"].startswith("out/")
    assert report["median_item_s"] > 0 and report["live_processes"] == 1 and report["estimated_s"] is not None
    assert fleet.redis.zcard("cf:jobs") == jobs_before + 1  # only the real job


def test_status_watch_json_reports_rate_eta_and_queue_depths(fleet: Fleet) -> None:
    # Given a job of two photos
    bucket = fleet.new_bucket("watch")
    fleet.upload(bucket, "in/", _photos(2))
    job = fleet.enqueue(f"s3://{bucket}/in/", "--out", f"s3://{bucket}/out", "--model", FAST)

    # When `status --watch --json` follows it to the end
    result = fleet.cli("status", job["job_id"], "--watch", "--json", timeout_s=60)

    # Then its last line has the end state, a rate and the queue depths, and `jobs` lists the job
    last = json.loads(result.stdout.splitlines()[-1])
    assert last["state"] == "done" and last["succeeded"] == 2
    assert set(last["queue_depths"]) == {"cpu", "gpu"} and last["rate_per_min"] > 0
    listing = fleet.cli("jobs", "--json").stdout
    assert job["job_id"] in listing


def test_a_manifest_naming_one_key_in_two_buckets_finishes_with_both(fleet: Fleet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Given the same key in two buckets (before item identity, one of them stayed queued forever)
    one, two, out = fleet.new_bucket("twina"), fleet.new_bucket("twinb"), fleet.new_bucket("twino")
    photos = _photos(2)
    fleet.upload(one, "p/", {"a.png": photos["p00.png"]})
    fleet.upload(two, "p/", {"a.png": photos["p01.png"]})
    manifest = tmp_path / "twins.jsonl"
    manifest.write_text("".join(json.dumps({"bucket": b, "key": "p/a.png"}) + "\n" for b in (one, two)))

    # When the manifest is enqueued and a real worker runs it
    job = fleet.enqueue("--manifest", str(manifest), "--out", f"s3://{out}/o", "--model", FAST)
    status = fleet.wait_for_job(job["job_id"])

    # Then the job is done with two outcomes, one per bucket, and two outputs
    assert status["state"] == "done" and status["succeeded"] == 2 and status["total"] == 2
    outcomes = sorted((o.bucket, o.key, o.status) for o in fleet.store.iter_outcomes(job["job_id"]))
    assert outcomes == sorted([(one, "p/a.png", "succeeded"), (two, "p/a.png", "succeeded")])
    keys = {o["Key"] for o in fleet.s3.list_objects_v2(Bucket=out, Prefix="o/")["Contents"]}
    assert {f"o/{one}/p/a.png", f"o/{two}/p/a.png"} <= keys


def test_a_manifest_spanning_buckets_maps_outputs_under_each_bucket(fleet: Fleet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Given photos in two buckets, and a manifest naming them with one per-key option
    one, two, out = fleet.new_bucket("mfa"), fleet.new_bucket("mfb"), fleet.new_bucket("mfo")
    photos = _photos(2)
    fleet.upload(one, "cat/", photos)
    fleet.upload(two, "cat/", {"red shoe.png": photos["p00.png"]})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps({"bucket": one, "key": "cat/p00.png"})
        + "\n"
        + json.dumps({"bucket": one, "key": "cat/p01.png", "background": "#ff0000"})
        + "\n"
        + json.dumps({"bucket": two, "key": "cat/red shoe.png"})
        + "\n"
    )

    # When the manifest is enqueued
    job = fleet.enqueue("--manifest", str(manifest), "--out", f"s3://{out}/o", "--model", FAST)
    status = fleet.wait_for_job(job["job_id"])

    # Then each output lies under its source bucket, and the per-key option reached its pixels
    assert status["succeeded"] == 3
    keys = {o["Key"] for o in fleet.s3.list_objects_v2(Bucket=out, Prefix="o/")["Contents"]}
    assert {f"o/{one}/cat/p00.png", f"o/{one}/cat/p01.png", f"o/{two}/cat/red shoe.png"} <= keys
    red = Image.open(io.BytesIO(fleet.read(out, f"o/{one}/cat/p01.png")))
    r, g, b = (int(v) for v in np.asarray(red)[0, 0])
    assert red.mode == "RGB" and r > 240 and g < 20 and b < 20
    csv_rows = fleet.read(out, f"o/_reports/{job['job_id']}.csv").decode()
    assert f"{two},cat/red+shoe.png,,succeeded,200,," in csv_rows
