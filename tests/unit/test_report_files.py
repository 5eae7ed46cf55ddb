"""The completion report's files: the CSV in the row order of S3 Batch Operations' reports, its
manifest.json, the JSONL lines of failed items, and a summary rate that counts only cutouts."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from urllib.parse import unquote_plus

from cutout_fleet.outcomes import Outcome, failed
from cutout_fleet.reports import (
    FORMULA_START,
    REPORT_SCHEMA,
    ReportKeys,
    csv_row,
    report_manifest,
    write_report,
)
from cutout_fleet.state import JobSpec, MemoryJobStore
from cutout_fleet.storage import LocalStorage, parse_location

JOB = "job-r"


def _finished_job(tmp_path: Path, outcomes: list[Outcome]) -> tuple[MemoryJobStore, LocalStorage]:
    store = MemoryJobStore()
    store.create(
        JobSpec(job_id=JOB, source="s3://in/p/", out=str(tmp_path), model="u2netp", queue="cpu", options={})
    )
    store.claim_outputs(JOB, [(o.item_id, o.output_key or o.key) for o in outcomes])
    store.finalize(JOB)
    for outcome in outcomes:
        store.record(JOB, outcome)
    return store, LocalStorage(parse_location(str(tmp_path)))


def test_a_failed_csv_row_puts_the_http_status_before_the_error_code() -> None:
    # Given a failed item
    outcome = failed("p/broken.jpg", "o/broken.png", "u2netp", "undecodable", "p/broken.jpg: not an image")

    # When it becomes a CSV row
    row = csv_row(outcome, "in")

    # Then the columns follow the rows of real S3 Batch Operations reports: ...,failed,400,ErrorCode,message
    assert row == ["in", "p/broken.jpg", "", "failed", "400", "undecodable", "p/broken.jpg: not an image"]
    assert len(row) == len(REPORT_SCHEMA) and REPORT_SCHEMA[4:6] == ("HTTPStatusCode", "ErrorCode")


def test_a_succeeded_csv_row_has_status_200_an_empty_error_code_and_an_encoded_key() -> None:
    # Given an item whose key has a space and a non-ASCII letter
    outcome = Outcome("p/red shoe-ü.jpg", "succeeded", "o/red shoe-ü.png", "u2netp", bucket="in")

    # When it becomes a CSV row
    row = csv_row(outcome, "in")

    # Then the key is URL-encoded, as S3 Batch Operations writes it, and the message is the output key
    assert row == ["in", "p/red+shoe-%C3%BC.jpg", "", "succeeded", "200", "", "o/red shoe-ü.png"]


def test_no_csv_cell_starts_a_spreadsheet_formula_and_the_key_still_decodes() -> None:
    # Given failed items whose keys (and so messages) would run as formulas in a spreadsheet
    keys = ['=HYPERLINK("http://x","y").png', "-2+3.png", "@SUM(A1).png", "+1.png", "\tx.png"]
    rows = [
        csv_row(failed(key, "o/" + key, "u2netp", "undecodable", f"{key}: not an image"), "in")
        for key in keys
    ]

    # Then no cell starts with = + - @ tab CR LF: the message gets a leading ', the key column is
    # URL-encoded (a leading - as %2D), so it still decodes to the key
    assert not [cell for row in rows for cell in row if cell.startswith(FORMULA_START)]
    assert [row[6] for row in rows] == [f"'{key}: not an image" for key in keys]
    assert [unquote_plus(row[1]) for row in rows] == keys


def test_the_manifest_names_the_csv_its_md5_and_the_schema_in_row_order() -> None:
    # Given a CSV that holds a failed row
    # When its manifest is made
    manifest = report_manifest("out", "o/_reports/j.csv", "d41d8cd98f00b204e9800998ecf8427e", True, 0.5)

    # Then it has AWS's fields, and the schema names our columns in their real order
    assert manifest == {
        "Format": "Report_CSV_20180820",
        "ReportCreationDate": "1970-01-01T00:00:00.500Z",
        "Results": [
            {
                "TaskExecutionStatus": "failed",
                "Bucket": "out",
                "MD5Checksum": "d41d8cd98f00b204e9800998ecf8427e",
                "Key": "o/_reports/j.csv",
            }
        ],
        "ReportSchema": "Bucket, Key, VersionId, TaskStatus, HTTPStatusCode, ErrorCode, ResultMessage",
    }


def test_write_report_writes_the_csv_and_a_manifest_whose_checksum_matches_it(tmp_path: Path) -> None:
    # Given a finished job with one cutout and one failure
    ok = Outcome("p/a.jpg", "succeeded", "a.png", "u2netp", bucket="in")
    bad = failed("p/b.jpg", "b.png", "u2netp", "undecodable", "p/b.jpg: not an image", bucket="in")
    store, storage = _finished_job(tmp_path, [ok, bad])

    # When the report is written
    write_report(store, storage, JOB)

    # Then the manifest names the CSV beside it, with its MD5, and every row has the schema's columns
    keys = ReportKeys.for_job("", JOB)
    csv_bytes = (tmp_path / keys.csv).read_bytes()
    manifest = json.loads((tmp_path / keys.manifest).read_text())
    assert manifest["Results"][0]["Key"] == keys.csv
    assert manifest["Results"][0]["MD5Checksum"] == hashlib.md5(csv_bytes).hexdigest()
    rows = list(csv.reader(io.StringIO(csv_bytes.decode())))
    assert {len(row) for row in rows} == {len(REPORT_SCHEMA)}
    assert sorted(row[3:6] for row in rows) == [["failed", "400", "undecodable"], ["succeeded", "200", ""]]


def test_a_failed_line_says_its_output_was_not_written(tmp_path: Path) -> None:
    # Given a finished job whose only item failed
    store, storage = _finished_job(tmp_path, [failed("p/b.jpg", "b.png", "u2netp", "undecodable", "bad")])

    # When the report is written
    write_report(store, storage, JOB)

    # Then its JSONL line names the output key and says it was never written
    line = json.loads((tmp_path / ReportKeys.for_job("", JOB).jsonl).read_text())
    assert line["output_key"] == "b.png" and line["output_written"] is False


def test_a_job_where_everything_failed_reports_no_images_per_second(tmp_path: Path) -> None:
    # Given a finished job whose items all failed within milliseconds
    outcomes = [failed(f"p/{n}.jpg", f"{n}.png", "u2netp", "bucket_missing", "no bucket") for n in range(13)]
    store, storage = _finished_job(tmp_path, outcomes)

    # When the report is written
    write_report(store, storage, JOB)

    # Then the summary does not claim a rate: no image was cut out
    summary = json.loads((tmp_path / ReportKeys.for_job("", JOB).summary).read_text())
    assert summary["counts"]["failed"] == 13 and summary["images_per_s"] is None
    assert summary["manifest_key"] == ReportKeys.for_job("", JOB).manifest
