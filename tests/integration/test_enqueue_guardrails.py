"""`cutout enqueue` refuses jobs that cannot work, before anything is enqueued (exit 2, nothing in Redis):
outputs over the sources, no image, an output bucket it cannot write, a model no live worker has.
Against the real Redis, the S3 server (behind a fault proxy for a denied write) and a real worker."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from cutout_fleet.state.redis_keys import JOBS_INDEX, job_keys
from tests.support.fleet import Fleet, FleetFactory, sample_catalog
from tests.support.s3_fault_proxy import S3FaultProxy

pytestmark = pytest.mark.integration

PINNED = "tiny-u2netp"  # the worker's model
PRESENT = "tiny-birefnet"  # its file is in the worker's model folder, but not pinned
ABSENT = "birefnet-lite"  # a catalogue model whose file no worker has
EXIT_USAGE = 2


@pytest.fixture(scope="module")
def fleet(make_fleet: FleetFactory) -> Iterator[Fleet]:
    """One live worker on the fleet's queue, with one pinned model."""
    with make_fleet(models=[PINNED]) as fleet:
        fleet.start_worker(concurrency=1)
        yield fleet


def _photos(fleet: Fleet, label: str) -> str:
    """A fresh bucket with two photos under `in/`; its name."""
    bucket = fleet.new_bucket(label)
    photos = list(sample_catalog().values())
    fleet.upload(bucket, "in/", {"a.png": photos[0], "b.png": photos[1]})
    return bucket


def _keys(fleet: Fleet, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in fleet.s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def _assert_nothing_enqueued(fleet: Fleet) -> None:
    assert fleet.redis.zcard(JOBS_INDEX) == 0, "a job was recorded"
    assert fleet.redis.llen(fleet.queue) == 0, "a task was queued"


def _try_enqueue(
    fleet: Fleet,
    bucket: str,
    *extra: str,
    out: str = "out",
    model: str = PINNED,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`cutout enqueue s3://BUCKET/in/ --out OUT --model MODEL EXTRA...`, whatever its exit code."""
    target = out if out.startswith("s3://") else f"s3://{bucket}/{out}"
    return fleet.cli(
        "enqueue", f"s3://{bucket}/in/", "--out", target, "--model", model, *extra, env=env, check=False
    )


@pytest.fixture(autouse=True)
def _no_jobs_yet(fleet: Fleet) -> None:
    fleet.redis.delete(JOBS_INDEX)


def test_out_equal_to_the_source_prefix_is_refused_and_nothing_is_written(fleet: Fleet) -> None:
    # Given photos under in/
    bucket = _photos(fleet, "same-place")

    # When the output is the same place, spelled without the trailing slash
    result = _try_enqueue(fleet, bucket, out="in")

    # Then the job is refused with the reason and a way out, and the source prefix is untouched
    assert result.returncode == EXIT_USAGE, result.stderr
    assert "is the source prefix itself" in result.stderr and "give --out another prefix" in result.stderr
    assert _keys(fleet, bucket) == ["in/a.png", "in/b.png"]
    _assert_nothing_enqueued(fleet)


def test_a_prefix_with_no_image_is_refused(fleet: Fleet) -> None:
    # Given a prefix holding only a text file
    bucket = fleet.new_bucket("no-images")
    fleet.upload(bucket, "in/", {"notes.txt": b"not an image"})

    # When it is enqueued
    result = _try_enqueue(fleet, bucket)

    # Then it is refused, saying that no key is an image and how to create the job anyway
    assert result.returncode == EXIT_USAGE, result.stderr
    assert "no image to process (1 other keys ignored" in result.stderr and "--allow-empty" in result.stderr
    _assert_nothing_enqueued(fleet)


def test_an_empty_prefix_makes_an_empty_job_with_allow_empty(fleet: Fleet) -> None:
    # Given a prefix with nothing under it
    bucket = fleet.new_bucket("allow-empty")

    # When it is enqueued with --allow-empty
    job = fleet.enqueue(
        f"s3://{bucket}/in/", "--out", f"s3://{bucket}/out", "--model", PINNED, "--allow-empty"
    )

    # Then a job of no item exists
    assert job["total"] == 0 and job["job_id"]


def test_a_missing_output_bucket_is_refused(fleet: Fleet) -> None:
    # Given photos, and an output bucket that does not exist
    bucket = _photos(fleet, "no-out-bucket")
    missing = f"{bucket}-missing"

    # When they are enqueued to it
    result = _try_enqueue(fleet, bucket, out=f"s3://{missing}/out")

    # Then the job is refused, naming the bucket, without a traceback
    assert result.returncode == EXIT_USAGE, result.stderr
    assert f"the bucket {missing!r} does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    _assert_nothing_enqueued(fleet)


def test_an_output_bucket_the_producer_cannot_write_is_refused(fleet: Fleet) -> None:
    # Given photos, and an S3 that denies writes under the output's _reports/ (a wrong IAM policy)
    bucket = _photos(fleet, "denied-out")
    with S3FaultProxy(fleet.s3_endpoint, permanent_status={"out/_reports/": (403, "AccessDenied")}) as proxy:
        env = fleet.env(CUTOUT_S3__ENDPOINT_URL=proxy.url, CUTOUT_S3__ADDRESSING_STYLE="path")

        # When they are enqueued
        result = _try_enqueue(fleet, bucket, env=env)

    # Then the job is refused: the producer cannot write the reports there
    assert result.returncode == EXIT_USAGE, result.stderr
    assert "this producer cannot write there" in result.stderr and "out/_reports/" in result.stderr
    assert "Traceback" not in result.stderr
    _assert_nothing_enqueued(fleet)


def test_the_probe_leaves_nothing_in_the_output(fleet: Fleet) -> None:
    # Given photos, and a writable output
    bucket = _photos(fleet, "probe-clean")

    # When a dry run probes the output
    fleet.enqueue(f"s3://{bucket}/in/", "--out", f"s3://{bucket}/out", "--model", PINNED, "--dry-run")

    # Then the probe object is gone again
    assert _keys(fleet, bucket) == ["in/a.png", "in/b.png"]


def test_a_model_no_live_worker_of_its_queue_has_is_refused(fleet: Fleet) -> None:
    # Given a live worker on the queue that has only its own models
    bucket = _photos(fleet, "absent-model")

    # When a job asks for a catalogue model that worker does not have
    result = _try_enqueue(fleet, bucket, model=ABSENT)

    # Then it is refused, naming the model, the queue, what the workers have and how to fix it
    assert result.returncode == EXIT_USAGE, result.stderr
    assert f"model {ABSENT!r}: none of the 1 live workers on queue {fleet.queue!r}" in result.stderr
    assert PINNED in result.stderr and f"cutout models pull {ABSENT}" in result.stderr
    _assert_nothing_enqueued(fleet)


def test_a_dry_run_refuses_a_model_no_live_worker_has(fleet: Fleet) -> None:
    bucket = _photos(fleet, "absent-dry")

    result = _try_enqueue(fleet, bucket, "--dry-run", model=ABSENT)

    assert result.returncode == EXIT_USAGE, result.stderr
    assert f"model {ABSENT!r}: none of the 1 live workers" in result.stderr


def test_a_model_installed_but_not_pinned_is_accepted(fleet: Fleet) -> None:
    # Given a live worker whose model folder holds a second model that it does not pin
    bucket = _photos(fleet, "present-model")

    # When a dry run asks for that model
    report = fleet.enqueue(
        f"s3://{bucket}/in/", "--out", f"s3://{bucket}/out", "--model", PRESENT, "--dry-run"
    )

    # Then it is accepted: the worker loads it on first use, and its processes count in the estimate
    assert report["images"] == 2 and report["live_processes"] == 1 and report["warnings"] == []


def test_a_queue_with_no_live_worker_only_warns(fleet: Fleet) -> None:
    # Given a queue that no live worker consumes (a fleet scaled to zero)
    bucket = _photos(fleet, "scaled-to-zero")
    env = fleet.env(CUTOUT_QUEUES__CPU="nobody-listens")

    # When a job is enqueued for a model no worker has
    result = _try_enqueue(fleet, bucket, model=ABSENT, env=env)

    # Then it is accepted, with a warning that it waits for a worker with that model
    assert result.returncode == 0
    assert (
        "warning: no live worker serves queue 'nobody-listens'" in result.stderr and ABSENT in result.stderr
    )
    assert fleet.redis.llen("nobody-listens") == 1


def test_a_notify_url_that_is_not_http_is_refused(fleet: Fleet) -> None:
    bucket = _photos(fleet, "notify-ftp")

    result = _try_enqueue(fleet, bucket, "--notify", "ftp://x/y")

    assert result.returncode == EXIT_USAGE, result.stderr
    assert "ftp://x/y" in result.stderr and "Traceback" not in result.stderr
    _assert_nothing_enqueued(fleet)


def test_the_notify_url_given_to_enqueue_is_kept_with_the_job(fleet: Fleet) -> None:
    # Given photos, and a receiver URL for this job (no default in the settings)
    bucket = _photos(fleet, "notify-url")

    # When the job is enqueued with --notify
    job = fleet.enqueue(
        f"s3://{bucket}/in/",
        "--out",
        f"s3://{bucket}/out",
        "--model",
        PINNED,
        "--notify",
        "http://127.0.0.1:9/cutout-done",
    )

    # Then the job carries it (the worker that finishes the job posts there)
    status = fleet.cli_json("status", str(job["job_id"]), "--json")
    assert status["notify_url"] == "http://127.0.0.1:9/cutout-done"


# --- job ids --------------------------------------------------------------------------------------------


def test_a_job_id_with_a_trailing_newline_is_refused_before_the_job_exists(fleet: Fleet) -> None:
    # Given photos
    bucket = _photos(fleet, "job-id-newline")

    # When they are enqueued as job "x\n" (a `$` that matched before the newline let it through once)
    result = _try_enqueue(fleet, bucket, "--job-id", "x\n")

    # Then it is refused with the rule, and no job, claim or task exists
    assert result.returncode == EXIT_USAGE, result.stderr
    assert "job id 'x\\n' is not valid: use 1-64 letters, digits" in result.stderr
    assert "Traceback" not in result.stderr
    assert not fleet.redis.exists(*job_keys("x\n")), "the job's state was written"
    _assert_nothing_enqueued(fleet)


# --- a manifest names each object once ------------------------------------------------------------------


def _manifest(fleet: Fleet, bucket: str, name: str, lines: list[str]) -> str:
    """A manifest object in the S3 server; its URI."""
    fleet.s3.put_object(
        Bucket=bucket, Key=f"jobs/{name}", Body="".join(f"{line}\n" for line in lines).encode()
    )
    return f"s3://{bucket}/jobs/{name}"


def _enqueue_manifest(fleet: Fleet, bucket: str, manifest: str) -> subprocess.CompletedProcess[str]:
    return fleet.cli(
        "enqueue",
        "--manifest",
        manifest,
        "--out",
        f"s3://{bucket}/out",
        "--model",
        PINNED,
        "--json",
        check=False,
    )


def test_one_key_asked_for_in_two_formats_is_refused_with_its_lines(fleet: Fleet) -> None:
    # Given a JSONL manifest in S3 that asks for in/a.png as a PNG (line 1) and as a WebP (line 3)
    bucket = _photos(fleet, "repeat-formats")
    manifest = _manifest(
        fleet,
        bucket,
        "m.jsonl",
        [
            json.dumps({"bucket": bucket, "key": "in/a.png", "format": "png"}),
            json.dumps({"bucket": bucket, "key": "in/b.png"}),
            json.dumps({"bucket": bucket, "key": "in/a.png", "format": "webp"}),
        ],
    )

    # When it is enqueued (this job used to stay `running` for ever, one item queued)
    result = _enqueue_manifest(fleet, bucket, manifest)

    # Then it is refused before any job exists, naming the object, both lines and that the options differ
    assert result.returncode == EXIT_USAGE, result.stderr
    assert f"{bucket}/in/a.png on lines 1, 3 (with different options)" in result.stderr
    assert "keep one line per object" in result.stderr and "Traceback" not in result.stderr
    _assert_nothing_enqueued(fleet)
    assert _keys(fleet, bucket) == ["in/a.png", "in/b.png", "jobs/m.jsonl"]


def test_an_exact_repeat_in_a_manifest_is_refused_with_its_lines(fleet: Fleet) -> None:
    # Given a Batch Operations CSV in S3 that lists in/b.png twice, the same way
    bucket = _photos(fleet, "repeat-same")
    manifest = _manifest(
        fleet, bucket, "m.csv", [f"{bucket},in/a.png", f"{bucket},in/b.png", f"{bucket},in/b.png"]
    )

    # When it is enqueued
    result = _enqueue_manifest(fleet, bucket, manifest)

    # Then it is refused too, with both lines
    assert result.returncode == EXIT_USAGE, result.stderr
    assert f"{bucket}/in/b.png on lines 2, 3." in result.stderr
    _assert_nothing_enqueued(fleet)


def test_a_manifest_naming_each_object_once_runs_to_the_end_with_per_key_formats(fleet: Fleet) -> None:
    # Given the same two objects, each once, one as a PNG and one as a WebP
    bucket = _photos(fleet, "repeat-free")
    manifest = _manifest(
        fleet,
        bucket,
        "m.jsonl",
        [
            json.dumps({"bucket": bucket, "key": "in/a.png", "format": "png"}),
            json.dumps({"bucket": bucket, "key": "in/b.png", "format": "webp"}),
        ],
    )

    # When it is enqueued and the live worker runs it
    result = _enqueue_manifest(fleet, bucket, manifest)
    assert result.returncode == 0, result.stderr
    status = fleet.wait_for_job(json.loads(result.stdout)["job_id"], check=True)

    # Then both items finish and the job is done
    assert (status["state"], status["total"], status["succeeded"]) == ("done", 2, 2), status
    assert {"out/in/a.png", "out/in/b.webp"} <= set(_keys(fleet, bucket))
