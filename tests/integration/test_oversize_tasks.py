"""No key waits for ever on a task that is too large: the producer splits tasks by bytes, and a worker
that refuses a message still fails the keys it names.  Real `cutout enqueue`, real workers, the S3 server."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from cutout_fleet.messages import MAX_KEY_BYTES, MAX_MESSAGE_BYTES
from tests.support.fleet import FleetFactory, sample_catalog

pytestmark = pytest.mark.integration

PINNED = "tiny-u2netp"
MAX_ITEMS_PER_TASK = "256"  # the most the settings allow
# 180 keys of 1023 bytes, mostly `é`: 6 characters each in the JSON a worker measures, so ~549 KB in one
# task of up to 256 keys, over the workers' 512 KiB.
LONG_KEYS = 180
JOB_WAIT_S = 300.0


def _long_key(i: int) -> str:
    stem = f"in/{i:03d}-"
    return stem + "é" * ((MAX_KEY_BYTES - len(stem) - len(".png")) // 2) + ".png"


def _small_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 40, 40)).save(buffer, "PNG")
    return buffer.getvalue()


def test_long_keys_go_out_in_tasks_a_worker_accepts_and_every_key_finishes(make_fleet: FleetFactory) -> None:
    # Given 180 objects whose keys are as long as S3 allows, and up to 256 keys per task
    with make_fleet(models=[PINNED], CUTOUT_ITEMS_PER_TASK=MAX_ITEMS_PER_TASK) as fleet:
        bucket = fleet.new_bucket("long-keys")
        keys = [_long_key(i) for i in range(LONG_KEYS)]
        assert all(len(key.encode()) <= MAX_KEY_BYTES for key in keys)
        fleet.upload(bucket, "", dict.fromkeys(keys, _small_png()))
        fleet.start_worker(concurrency=1)

        # When they are enqueued
        job = fleet.enqueue(f"s3://{bucket}/in/", "--out", f"s3://{bucket}/o", "--model", PINNED)

        # Then they went out in two tasks, not one that workers refuse, and every key succeeded
        assert (job["total"], job["tasks"]) == (LONG_KEYS, 2), job
        status = fleet.wait_for_job(job["job_id"], timeout_s=JOB_WAIT_S, check=True)
        assert (status["state"], status["succeeded"], status["failed"]) == ("done", LONG_KEYS, 0), status
        assert fleet.store.rejected() == []
        fleet.s3.head_object(Bucket=bucket, Key="o/" + keys[-1].removeprefix("in/"))


def test_a_refused_oversize_message_fails_its_keys_and_the_job_finishes(make_fleet: FleetFactory) -> None:
    with make_fleet(models=[PINNED]) as fleet:
        # Given a real job of three photos whose one task waits in the queue (no worker yet)
        bucket = fleet.new_bucket("oversize")
        photos = list(sample_catalog().values())[:3]
        fleet.upload(bucket, "in/", {f"{n}.png": data for n, data in enumerate(photos)})
        job = fleet.enqueue(f"s3://{bucket}/in/", "--out", f"s3://{bucket}/out", "--model", PINNED)
        job_id = str(job["job_id"])

        # And that task pushed back by hand, over the size limit (a field workers ignore, but that counts)
        (entry,) = fleet.redis.lrange(fleet.queue, 0, -1)
        envelope = json.loads(entry)
        body = json.loads(envelope["body"])
        body[0][0]["padding"] = "x" * MAX_MESSAGE_BYTES
        envelope["body"] = json.dumps(body)
        fleet.redis.delete(fleet.queue)
        fleet.redis.lpush(fleet.queue, json.dumps(envelope))

        # When a worker takes it
        fleet.start_worker(concurrency=1)

        # Then the message is refused, never run, and each of its keys fails with the reason
        status = fleet.wait_for_job(job_id, timeout_s=60, check=True)
        assert (status["state"], status["failed"]) == ("done", 3), status
        assert status["failures_by_code"] == {"message_rejected": 3}
        (rejected,) = fleet.store.rejected()
        assert "over 524,288" in str(rejected["reason"])
        report = fleet.read_jsonl(bucket, f"out/_reports/{job_id}.jsonl")
        assert sorted(line["key"] for line in report) == ["in/0.png", "in/1.png", "in/2.png"]
        assert all(
            line["error_code"] == "message_rejected" and "its task message was refused" in line["error"]
            for line in report
        )
