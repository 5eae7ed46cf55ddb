"""What an operator reads after a job, against the real Redis, the S3 server and a real worker: the
report files `cutout report` names, the CSV and its manifest, the metadata of a non-ASCII key, failed
lines, `cutout jobs`, and the exit codes of `cutout status --wait`."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.fleet import (
    CLI_TIMEOUT_S,
    QUEUE_SETTING,
    Fleet,
    FleetFactory,
    sample_catalog,
    truncated_jpeg,
)

pytestmark = pytest.mark.integration

FAST = "tiny-u2netp"
UNSERVED_QUEUE = "nobody-serves-this"  # a job sent here stays running for as long as a test needs
NON_ASCII_KEY = "p/chelsea-ü.png"


@pytest.fixture(scope="module")
def fleet(make_fleet: FleetFactory) -> Iterator[Fleet]:
    with make_fleet(models=[FAST]) as fleet:
        fleet.start_worker(concurrency=1)
        yield fleet


@dataclass(frozen=True)
class FinishedJob:
    job_id: str
    bucket: str
    wait: subprocess.CompletedProcess[str]  # `cutout status JOB --wait --json`
    report: list[str]  # the lines `cutout report JOB` printed


@pytest.fixture(scope="module")
def finished(fleet: Fleet) -> FinishedJob:
    """A job of one photo under a non-ASCII key and one broken image, waited for, its report asked for."""
    bucket = fleet.new_bucket("reports")
    photo = next(iter(sample_catalog().values()))
    fleet.upload(bucket, "", {NON_ASCII_KEY: photo, "p/broken.jpg": truncated_jpeg()})
    job_id = fleet.enqueue(f"s3://{bucket}/p/", "--out", f"s3://{bucket}/o", "--model", FAST)["job_id"]
    wait = fleet.cli("status", job_id, "--wait", "--json", check=False)
    fleet.wait_for_object(bucket, f"o/_reports/{job_id}.summary.json")
    report = fleet.cli("report", job_id).stdout.splitlines()
    return FinishedJob(job_id, bucket, wait, report)


def test_report_prints_the_jsonl_csv_manifest_and_summary_and_each_exists(
    fleet: Fleet, finished: FinishedJob
) -> None:
    # Given a finished job
    # When `cutout report` is asked where its reports are
    base = f"s3://{finished.bucket}/o/_reports/{finished.job_id}"

    # Then it prints all four, and each is there
    assert finished.report == [
        f"{base}.jsonl",
        f"{base}.csv",
        f"{base}.manifest.json",
        f"{base}.summary.json",
    ]
    for uri in finished.report:
        fleet.s3.head_object(Bucket=finished.bucket, Key=uri.removeprefix(f"s3://{finished.bucket}/"))


def test_the_csv_rows_follow_s3_batch_operations_and_the_manifest_describes_them(
    fleet: Fleet, finished: FinishedJob
) -> None:
    # Given a finished job with one cutout and one broken image
    prefix = f"o/_reports/{finished.job_id}"

    # When its CSV and manifest are read
    csv_bytes = fleet.read(finished.bucket, f"{prefix}.csv")
    manifest = json.loads(fleet.read(finished.bucket, f"{prefix}.manifest.json"))

    # Then the rows carry the HTTP status before the error code, the key URL-encoded
    rows = sorted(csv.reader(io.StringIO(csv_bytes.decode())))
    assert rows == [
        [finished.bucket, "p/broken.jpg", "", "failed", "400", "undecodable", rows[0][6]],
        [finished.bucket, "p/chelsea-%C3%BC.png", "", "succeeded", "200", "", "o/chelsea-ü.png"],
    ]
    # And the manifest names that CSV, its checksum and its columns, as AWS's does
    assert manifest["Format"] == "Report_CSV_20180820"
    assert manifest["ReportSchema"].split(", ")[3:6] == ["TaskStatus", "HTTPStatusCode", "ErrorCode"]
    assert manifest["Results"] == [
        {
            "TaskExecutionStatus": "failed",
            "Bucket": finished.bucket,
            "MD5Checksum": hashlib.md5(csv_bytes).hexdigest(),
            "Key": f"{prefix}.csv",
        }
    ]


def test_a_non_ascii_source_key_is_an_rfc2047_encoded_word_in_the_outputs_metadata(
    fleet: Fleet, finished: FinishedJob
) -> None:
    # Given the cutout of a photo whose key is not ASCII
    # When its metadata is read
    meta = fleet.s3.head_object(Bucket=finished.bucket, Key="o/chelsea-ü.png")["Metadata"]

    # Then the source key is a base64 encoded word of its UTF-8 bytes
    assert meta["cutout-source-key"] == "=?UTF-8?B?cC9jaGVsc2VhLcO8LnBuZw==?="


def test_a_failed_line_says_its_output_was_never_written(fleet: Fleet, finished: FinishedJob) -> None:
    # Given a finished job whose broken image failed
    lines = fleet.read_jsonl(finished.bucket, f"o/_reports/{finished.job_id}.jsonl")

    # When its line is read
    broken = next(line for line in lines if line["key"] == "p/broken.jpg")

    # Then it names the output key and says that output was not written, and the output is not there
    assert (broken["output_key"], broken["output_written"]) == ("o/broken.png", False)
    assert "Contents" not in fleet.s3.list_objects_v2(Bucket=finished.bucket, Prefix="o/broken.png")


def test_wait_exits_1_when_the_job_is_done_with_failed_items(finished: FinishedJob) -> None:
    # Given a job that ended done with one failed item
    # When `status --wait` returned
    # Then its exit code was 1, with the final status on stdout
    status = json.loads(finished.wait.stdout)
    assert finished.wait.returncode == 1, finished.wait.stderr
    assert (status["state"], status["succeeded"], status["failed"]) == ("done", 1, 1)


def test_jobs_shows_each_jobs_source_and_output(fleet: Fleet, finished: FinishedJob) -> None:
    # Given a finished job
    # When the recent jobs are listed
    listing = fleet.cli("jobs").stdout.splitlines()

    # Then its line names where it read from and wrote to
    line = next(line for line in listing if finished.job_id in line)
    assert line.endswith(f"| s3://{finished.bucket}/p/ -> s3://{finished.bucket}/o")


def _parked_job(fleet: Fleet, label: str) -> str:
    """A job of one photo on a queue no worker serves: it stays running."""
    bucket = fleet.new_bucket(label)
    fleet.upload(bucket, "p/", {"a.png": next(iter(sample_catalog().values()))})
    env = fleet.env(**{QUEUE_SETTING: UNSERVED_QUEUE})
    return str(
        fleet.enqueue(f"s3://{bucket}/p/", "--out", f"s3://{bucket}/o", "--model", FAST, env=env)["job_id"]
    )


def test_wait_exits_4_when_the_job_was_cancelled(fleet: Fleet) -> None:
    # Given a running job that is then cancelled
    job_id = _parked_job(fleet, "cancelled")
    fleet.cli("cancel", job_id)

    # When `status --wait` is asked about it
    result = fleet.cli("status", job_id, "--wait", "--json", check=False)

    # Then it exits 4
    assert result.returncode == 4, result.stderr
    assert json.loads(result.stdout)["state"] == "cancelled"


def test_an_interrupted_wait_exits_3_without_a_traceback(fleet: Fleet) -> None:
    # Given `status --wait` waiting on a job that stays running
    job_id = _parked_job(fleet, "interrupted")
    waiting = subprocess.Popen(
        [fleet.cutout_bin, "status", job_id, "--wait"],
        env=fleet.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert waiting.stderr is not None
    stderr: list[str] = [waiting.stderr.readline()]  # the progress bar's label: the wait has begun
    assert job_id in stderr[0], stderr
    drain = threading.Thread(target=lambda: stderr.append(waiting.stderr.read() if waiting.stderr else ""))
    drain.start()

    # When the operator presses Ctrl-C
    waiting.send_signal(signal.SIGINT)
    returncode = waiting.wait(timeout=CLI_TIMEOUT_S)
    drain.join(timeout=CLI_TIMEOUT_S)

    # Then the command says the job is still running and exits 3, and the job goes on
    text = "".join(stderr)
    assert returncode == 3, text
    assert "still running" in text and "Traceback" not in text
    assert fleet.store.get(job_id).state == "running"
