"""Keys an attacker can write into the source bucket cannot fail their neighbours or loop in retries.

Real worker processes, the real S3-protocol server (and the fault proxy for a write that always fails).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from urllib.parse import unquote_plus

import pytest

from cutout_fleet.freshness import META_SOURCE_KEY
from cutout_fleet.metadata_codec import decode_metadata_value
from cutout_fleet.reports import FORMULA_START
from tests.support.fleet import FleetFactory, sample_catalog, truncated_jpeg
from tests.support.s3_fault_proxy import S3FaultProxy

pytestmark = pytest.mark.integration

MODEL = "tiny-u2netp"
JOB_DONE_S = 180.0


def test_a_key_with_cr_lf_or_non_ascii_is_processed_and_its_neighbours_too(make_fleet: FleetFactory) -> None:
    with make_fleet(models=[MODEL], CUTOUT_ITEMS_PER_TASK="16") as fleet:
        # Given one task of six keys: two that an HTTP header cannot carry as they are, four plain
        # (moto's router cannot store a key with LF; the unit tests encode that one)
        bucket = fleet.new_bucket("crlf")
        photo = next(iter(sample_catalog().values()))
        names = ["cr\rx.png", "ünï 𝄞.png", "a.png", "b.png", "c.png", "d.png"]
        fleet.upload(bucket, "p/", dict.fromkeys(names, photo))
        fleet.start_worker()

        # When the job runs
        job = fleet.enqueue(f"s3://{bucket}/p/", "--out", f"s3://{bucket}/out", "--model", MODEL)
        record = fleet.wait_for_state(str(job["job_id"]), "done", JOB_DONE_S)

        # Then every key succeeded, and each output names its source key exactly, through the encoding
        assert (record.total, record.succeeded, record.failed) == (6, 6, 0)
        for name in names:
            output = "out/" + name.rsplit(".", 1)[0] + ".png"
            stored = fleet.s3.head_object(Bucket=bucket, Key=output)["Metadata"][META_SOURCE_KEY]
            assert decode_metadata_value(stored) == "p/" + name


def test_an_output_that_can_never_be_written_becomes_poison_after_max_attempts(
    make_fleet: FleetFactory, s3_endpoint: str
) -> None:
    settings = {
        "CUTOUT_ITEMS_PER_TASK": "3",
        "CUTOUT_S3__ADDRESSING_STYLE": "path",
        "CUTOUT_S3__MAX_ATTEMPTS": "1",
        "CUTOUT_WORKER__RETRY_BACKOFF_S": "1",
        "CUTOUT_WORKER__RETRY_BACKOFF_MAX_S": "1",
        "CUTOUT_WORKER__MAX_ATTEMPTS": "2",
    }
    with make_fleet(models=[MODEL], **settings) as fleet:
        bucket = fleet.new_bucket("putfail")
        photos = list(sample_catalog().values())
        fleet.upload(bucket, "in/", {"a.png": photos[0], "b.png": photos[1], "c.png": photos[2]})
        # Given a task of three items whose middle output's PUT is always refused as SlowDown
        with S3FaultProxy(s3_endpoint, permanent_status={f"PUT /{bucket}/out/b.png": 503}) as proxy:
            fleet.start_worker(env=fleet.env(CUTOUT_S3__ENDPOINT_URL=proxy.url))

            # When the job runs to its end
            job = fleet.enqueue(f"s3://{bucket}/in/", "--out", f"s3://{bucket}/out", "--model", MODEL)
            fleet.wait_for_state(str(job["job_id"]), "done", JOB_DONE_S)

            # Then the model ran for it MAX_ATTEMPTS times, not once per task retry (8), and its
            # neighbours succeeded
            outcomes = {o.key: o for o in fleet.store.iter_outcomes(str(job["job_id"]))}
            assert outcomes["in/b.png"].error_code == "poison"
            assert {outcomes["in/a.png"].status, outcomes["in/c.png"].status} == {"succeeded"}
            assert proxy.permanent == 2


def test_the_csv_report_of_formula_keys_holds_no_cell_a_spreadsheet_would_run(
    make_fleet: FleetFactory,
) -> None:
    with make_fleet(models=[MODEL]) as fleet:
        # Given keys that read as spreadsheet formulas: one image, one broken file (its message starts
        # with its key)
        bucket = fleet.new_bucket("formula")
        photo = next(iter(sample_catalog().values()))
        fleet.upload(bucket, "", {'=HYPERLINK("http://x","y").png': photo, "-2+3.jpg": truncated_jpeg()})
        fleet.start_worker()

        # When the job runs and its report is written
        job = fleet.enqueue(f"s3://{bucket}/", "--out", f"s3://{bucket}/out", "--model", MODEL)
        job_id = str(job["job_id"])
        fleet.wait_for_state(job_id, "done", JOB_DONE_S)
        rows = list(
            csv.reader(io.StringIO(fleet.wait_for_object(bucket, f"out/_reports/{job_id}.csv").decode()))
        )

        # Then no cell starts with = + - @ tab CR LF, and the key column still decodes to each key
        assert len(rows) == 2
        assert not [cell for row in rows for cell in row if cell.startswith(FORMULA_START)]
        assert sorted(unquote_plus(row[1]) for row in rows) == ["-2+3.jpg", '=HYPERLINK("http://x","y").png']


def test_keys_that_name_one_file_in_a_folder_collide_instead_of_overwriting(
    make_fleet: FleetFactory, tmp_path: Path
) -> None:
    with make_fleet(models=[MODEL]) as fleet:
        # Given three S3 keys that a folder would write to one file
        bucket = fleet.new_bucket("dots")
        photos = list(sample_catalog().values())
        fleet.upload(bucket, "p/", {"x/a.png": photos[0], "x/./a.png": photos[1], "x//a.png": photos[2]})

        # When `cutout run` reads them into a local folder
        out = tmp_path / "out"
        fleet.cli("run", f"s3://{bucket}/p/", "--out", str(out), "--model", MODEL, check=False)

        # Then one is cut out and the other two fail as output collisions: nothing is overwritten
        (report,) = (out / "_reports").glob("*.jsonl")
        lines = [json.loads(line) for line in report.read_text().splitlines()]
        assert sorted(line.get("error_code") or line["status"] for line in lines) == [
            "output_collision",
            "output_collision",
            "succeeded",
        ]
        assert [p.relative_to(out).as_posix() for p in out.rglob("*.png")] == ["x/a.png"]
