"""One catalog prefix end to end through the fleet: S3 (moto) -> enqueue -> Redis -> real worker -> S3.

Runs on the real u2netp and on a tiny model with BiRefNet's exact contract, so neither path rots.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from tests.support.fleet import Fleet, FleetFactory, sample_catalog, truncated_jpeg

pytestmark = pytest.mark.integration

MODELS = ["u2netp", "tiny-birefnet"]


@pytest.fixture(scope="module")
def fleet(make_fleet: FleetFactory) -> Iterator[Fleet]:
    """One real worker process (prefork, concurrency 2) serving the cpu queue for this module."""
    with make_fleet(models=MODELS, CUTOUT_ITEMS_PER_TASK="3") as fleet:
        fleet.start_worker(concurrency=2)
        yield fleet


@pytest.mark.parametrize("model", MODELS)
def test_a_prefix_of_photos_becomes_cutouts_a_report_and_metadata(fleet: Fleet, model: str) -> None:
    # Given a prefix of photos, a file that is not an image and a broken JPEG
    src_bucket, out_bucket = fleet.new_bucket("in"), fleet.new_bucket("out")
    photos = sample_catalog()
    etags = fleet.upload(src_bucket, "catalog/", photos)
    fleet.upload(
        src_bucket, "catalog/", {"bags/notes.txt": b"not an image", "bad/broken.jpg": truncated_jpeg()}
    )

    # When the producer enqueues the prefix and we wait for the job
    job = fleet.enqueue(
        f"s3://{src_bucket}/catalog/", "--out", f"s3://{out_bucket}/cutouts", "--model", model
    )
    assert job["total"] == len(photos) + 1 and job["ignored"] == 1
    status = fleet.wait_for_job(job["job_id"], timeout_s=240, check=True)

    # Then every good photo succeeded and the broken one failed alone, with a reason
    assert status["state"] == "done", status
    assert (status["succeeded"], status["failed"], status["queued"]) == (len(photos), 1, 0), fleet.logs()
    for key, data in photos.items():
        out_key = "cutouts/" + key.rsplit(".", 1)[0] + ".png"
        obj = fleet.s3.get_object(Bucket=out_bucket, Key=out_key)
        cutout = Image.open(io.BytesIO(obj["Body"].read()))
        original = Image.open(io.BytesIO(data))
        assert cutout.format == "PNG" and cutout.mode == "RGBA"
        assert cutout.size == original.size
        alpha = np.asarray(cutout.getchannel("A"))
        assert alpha.min() < 50 and alpha.max() > 200, f"{out_key}: alpha is trivial"
        meta = obj["Metadata"]
        assert meta["cutout-source-etag"] == etags["catalog/" + key]
        assert meta["cutout-model"] == model
        assert meta["cutout-options-hash"].startswith("o1-")

    # And the report lists every key, and the summary its counts
    lines = fleet.read_jsonl(out_bucket, f"cutouts/_reports/{job['job_id']}.jsonl")
    by_key = {line["key"]: line for line in lines}
    assert set(by_key) == {"catalog/" + k for k in photos} | {"catalog/bad/broken.jpg"}
    broken = by_key["catalog/bad/broken.jpg"]
    assert (
        broken["status"] == "failed"
        and broken["error_code"] == "undecodable"
        and "truncated" in broken["error"]
    )
    good = by_key["catalog/shoes/astronaut.png"]
    assert good["status"] == "succeeded" and good["model"] == model
    assert good["output_key"] == "cutouts/shoes/astronaut.png"
    assert {"download", "decode", "model", "mask", "encode", "upload"} <= set(good["timings_ms"])
    summary = json.loads(fleet.read(out_bucket, f"cutouts/_reports/{job['job_id']}.summary.json"))
    assert summary["counts"]["succeeded"] == len(photos) and summary["failures_by_code"] == {"undecodable": 1}
    located = fleet.cli("report", job["job_id"]).stdout.split()
    assert located[0] == f"s3://{out_bucket}/cutouts/_reports/{job['job_id']}.jsonl"


def test_two_inputs_with_one_output_name_fail_the_later_one_as_a_collision(fleet: Fleet) -> None:
    # Given two photos whose cutouts would have the same name
    src_bucket, out_bucket = fleet.new_bucket("in"), fleet.new_bucket("out")
    photos = sample_catalog()
    fleet.upload(src_bucket, "p/", {"a.jpg": photos["bags/coffee.JPG"], "a.png": photos["shoes/coffee.png"]})

    # When they are enqueued as one job
    job = fleet.enqueue(f"s3://{src_bucket}/p/", "--out", f"s3://{out_bucket}/o")
    status = fleet.wait_for_job(job["job_id"], check=True)

    # Then the first keeps the output and the later one fails as a collision naming it
    assert (status["succeeded"], status["failed"]) == (1, 1)
    lines = {line["key"]: line for line in fleet.read_jsonl(out_bucket, f"o/_reports/{job['job_id']}.jsonl")}
    assert lines["p/a.jpg"]["status"] == "succeeded"
    assert lines["p/a.png"]["error_code"] == "output_collision" and "p/a.jpg" in lines["p/a.png"]["error"]
    meta = fleet.s3.head_object(Bucket=out_bucket, Key="o/a.png")["Metadata"]
    assert meta["cutout-source-key"] == "p/a.jpg"

    # And retrying the job does not run the colliding key over the other one's output
    fleet.cli("retry", job["job_id"])
    status = fleet.wait_for_job(job["job_id"], timeout_s=60, check=True)
    assert (status["succeeded"], status["failed"]) == (1, 1)
    after = fleet.s3.head_object(Bucket=out_bucket, Key="o/a.png")["Metadata"]
    assert after["cutout-source-key"] == "p/a.jpg"


def test_invalid_options_enqueue_nothing_and_exit_2(fleet: Fleet) -> None:
    # Given a prefix with a photo
    bucket = fleet.new_bucket("in")
    fleet.upload(bucket, "p/", {"a.png": sample_catalog()["shoes/coffee.png"]})
    jobs_before = fleet.redis.zcard("cf:jobs")

    # When it is enqueued with each kind of invalid option, then each call exits 2 with an error
    for bad in (
        ["--background", "#12345"],
        ["--sensitivity", "1.5"],
        ["--mask-blur", "65"],
        ["--mask-offset", "-65"],
        ["--model", "no-such-model"],
        ["--format", "gif"],
    ):
        result = fleet.cli("enqueue", f"s3://{bucket}/p/", "--out", f"s3://{bucket}/o", *bad, check=False)
        assert result.returncode == 2, (bad, result.stderr)
        assert "Error" in result.stderr or "cutout:" in result.stderr

    # And no job was created and nothing queued
    assert fleet.redis.zcard("cf:jobs") == jobs_before
    assert fleet.redis.llen(fleet.queue) == 0
