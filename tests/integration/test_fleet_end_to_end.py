"""One catalog prefix end to end through the fleet: S3 (moto) -> enqueue -> Redis -> real worker -> S3.

Runs on the real u2netp and on a tiny model with BiRefNet's exact contract, so neither path rots.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.support.fleet import (
    fleet_env,
    run_cli,
    run_cli_json,
    sample_catalog,
    start_worker,
    truncated_jpeg,
)

pytestmark = pytest.mark.integration

MODELS = ["u2netp", "tiny-birefnet"]


@pytest.fixture(scope="module")
def fleet(redis_url, s3_endpoint, model_setup, cutout_bin, tmp_path_factory):  # type: ignore[no-untyped-def]
    """One real worker process (prefork, concurrency 2) serving the cpu queue for this module."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    model_dir, catalog = model_setup
    env = fleet_env(
        redis_url=redis_url,
        s3_endpoint=s3_endpoint,
        model_dir=model_dir,
        catalog=catalog,
        extra={
            "CUTOUT_WORKER__MODELS": json.dumps(MODELS),
            "CUTOUT_ITEMS_PER_TASK": "3",
            "CUTOUT_WORKER__INTRA_OP_THREADS": "1",
        },
    )
    worker = start_worker(cutout_bin, env, tmp_path_factory.mktemp("logs"), concurrency=2)
    yield env, worker
    assert worker.stop() == 0, worker.log()


def _upload(s3_client, bucket: str, prefix: str, files: dict[str, bytes]) -> dict[str, str]:  # type: ignore[no-untyped-def]
    etags = {}
    for key, data in files.items():
        response = s3_client.put_object(Bucket=bucket, Key=prefix + key, Body=data)
        etags[prefix + key] = response["ETag"].strip('"')
    return etags


def _read_jsonl(s3_client, bucket: str, key: str) -> list[dict]:  # type: ignore[no-untyped-def]
    body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    return [json.loads(line) for line in body.splitlines() if line]


@pytest.mark.parametrize("model", MODELS)
def test_a_prefix_of_photos_becomes_cutouts_a_report_and_metadata(
    fleet, s3_client, new_bucket, cutout_bin, model
):  # type: ignore[no-untyped-def]
    env, worker = fleet
    src_bucket, out_bucket = new_bucket("in"), new_bucket("out")
    photos = sample_catalog()
    etags = _upload(s3_client, src_bucket, "catalog/", photos)
    _upload(
        s3_client,
        src_bucket,
        "catalog/",
        {"bags/notes.txt": b"not an image", "bad/broken.jpg": truncated_jpeg()},
    )

    # When the producer enqueues the prefix and we wait for the job
    job = run_cli_json(
        cutout_bin,
        env,
        "enqueue",
        f"s3://{src_bucket}/catalog/",
        "--out",
        f"s3://{out_bucket}/cutouts",
        "--model",
        model,
        "--json",
    )
    assert job["total"] == len(photos) + 1 and job["ignored"] == 1
    status = run_cli_json(cutout_bin, env, "status", job["job_id"], "--wait", "--json", timeout_s=240)

    # Then every good photo succeeded and the broken one failed alone, with a reason
    assert status["state"] == "done", status
    assert (status["succeeded"], status["failed"], status["queued"]) == (len(photos), 1, 0), worker.log()
    for key, data in photos.items():
        out_key = "cutouts/" + key.rsplit(".", 1)[0] + ".png"
        obj = s3_client.get_object(Bucket=out_bucket, Key=out_key)
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
    lines = _read_jsonl(s3_client, out_bucket, f"cutouts/_reports/{job['job_id']}.jsonl")
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
    summary = json.loads(
        s3_client.get_object(Bucket=out_bucket, Key=f"cutouts/_reports/{job['job_id']}.summary.json")[
            "Body"
        ].read()
    )
    assert summary["counts"]["succeeded"] == len(photos) and summary["failures_by_code"] == {"undecodable": 1}
    located = run_cli(cutout_bin, env, "report", job["job_id"]).stdout.split()
    assert located[0] == f"s3://{out_bucket}/cutouts/_reports/{job['job_id']}.jsonl"


def test_two_inputs_with_one_output_name_fail_the_later_one_as_a_collision(
    fleet, s3_client, new_bucket, cutout_bin
):  # type: ignore[no-untyped-def]
    env, _ = fleet
    src_bucket, out_bucket = new_bucket("in"), new_bucket("out")
    photos = sample_catalog()
    _upload(
        s3_client, src_bucket, "p/", {"a.jpg": photos["bags/coffee.JPG"], "a.png": photos["shoes/coffee.png"]}
    )

    job = run_cli_json(
        cutout_bin, env, "enqueue", f"s3://{src_bucket}/p/", "--out", f"s3://{out_bucket}/o", "--json"
    )
    status = run_cli_json(cutout_bin, env, "status", job["job_id"], "--wait", "--json", timeout_s=120)

    assert (status["succeeded"], status["failed"]) == (1, 1)
    lines = {
        line["key"]: line for line in _read_jsonl(s3_client, out_bucket, f"o/_reports/{job['job_id']}.jsonl")
    }
    assert lines["p/a.jpg"]["status"] == "succeeded"
    assert lines["p/a.png"]["error_code"] == "output_collision" and "p/a.jpg" in lines["p/a.png"]["error"]
    meta = s3_client.head_object(Bucket=out_bucket, Key="o/a.png")["Metadata"]
    assert meta["cutout-source-key"] == "p/a.jpg"

    # And retrying the job does not run the colliding key over the other one's output
    run_cli(cutout_bin, env, "retry", job["job_id"])
    status = run_cli_json(cutout_bin, env, "status", job["job_id"], "--wait", "--json", timeout_s=60)
    assert (status["succeeded"], status["failed"]) == (1, 1)
    after = s3_client.head_object(Bucket=out_bucket, Key="o/a.png")["Metadata"]
    assert after["cutout-source-key"] == "p/a.jpg"


def test_invalid_options_enqueue_nothing_and_exit_2(fleet, s3_client, new_bucket, cutout_bin, redis_url):  # type: ignore[no-untyped-def]
    import redis

    env, _ = fleet
    bucket = new_bucket("in")
    _upload(s3_client, bucket, "p/", {"a.png": sample_catalog()["shoes/coffee.png"]})
    client = redis.Redis.from_url(redis_url)
    jobs_before = client.zcard("cf:jobs")
    for bad in (
        ["--background", "#12345"],
        ["--sensitivity", "1.5"],
        ["--mask-blur", "65"],
        ["--mask-offset", "-65"],
        ["--model", "no-such-model"],
        ["--format", "gif"],
    ):
        result = run_cli(
            cutout_bin, env, "enqueue", f"s3://{bucket}/p/", "--out", f"s3://{bucket}/o", *bad, check=False
        )
        assert result.returncode == 2, (bad, result.stderr)
        assert "Error" in result.stderr or "cutout:" in result.stderr
    assert client.zcard("cf:jobs") == jobs_before
    assert client.llen("cpu") == 0
