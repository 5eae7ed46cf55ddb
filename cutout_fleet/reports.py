"""The completion report, under `OUT/_reports/`: `JOB.jsonl` (one line per item: a key, with its bucket
and version when it has them), `JOB.csv` and its `JOB.manifest.json` (shaped like S3 Batch Operations'
completion reports) and `JOB.summary.json`."""

from __future__ import annotations

import csv
import hashlib
import json
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

from cutout_fleet.keys import report_keys
from cutout_fleet.outcomes import Outcome
from cutout_fleet.state import JobRecord, JobStore
from cutout_fleet.storage import Storage

# The CSV's columns, in the order of the rows S3 Batch Operations writes.  AWS's documentation lists
# `ErrorCode, HTTPStatusCode` in its schema, but every example row it shows (and the reports it writes)
# carry the HTTP status first: `bucket,key,,failed,200,PermanentFailure,"..."`.  Tools written against
# real reports follow the rows, so we do too, and our manifest's ReportSchema names the true order.
REPORT_SCHEMA = ("Bucket", "Key", "VersionId", "TaskStatus", "HTTPStatusCode", "ErrorCode", "ResultMessage")
REPORT_FORMAT = "Report_CSV_20180820"
MD5_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class ReportKeys:
    """Where a job's report files are, under the output prefix."""

    jsonl: str
    csv: str
    manifest: str
    summary: str

    @classmethod
    def for_job(cls, out_prefix: str, job_id: str) -> ReportKeys:
        jsonl, summary = report_keys(out_prefix, job_id)
        base = jsonl.removesuffix(".jsonl")
        return cls(jsonl, base + ".csv", base + ".manifest.json", summary)

    def all(self) -> list[str]:
        """Every report file, in the order `cutout report` prints them."""
        return [self.jsonl, self.csv, self.manifest, self.summary]


def summarize(job: JobRecord, stage_ms: dict[str, list[float]], failures: Counter[str]) -> dict[str, Any]:
    duration_s = (job.finished_at or job.created_at) - job.created_at
    return {
        "job_id": job.job_id,
        "state": job.state,
        "stop_reason": job.stop_reason,
        "counts": job.counts(),
        "source": job.source,
        "out": job.out,
        "model": job.model,
        "queue": job.queue,
        "options": job.options,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "duration_s": round(duration_s, 3),
        # Cutouts made per second of the job's wall time: failed and skipped items cost next to nothing,
        # so counting them would report thousands of images per second for a job where nothing worked.
        "images_per_s": round(job.succeeded / duration_s, 3) if job.succeeded and duration_s > 0 else None,
        "failures_by_code": dict(sorted(failures.items())),
        "decisions": dict(sorted(job.decisions.items())),
        "median_timings_ms": {
            stage: round(statistics.median(values), 2) for stage, values in sorted(stage_ms.items()) if values
        },
    }


# HTTP-like status per error code, for the S3 Batch Operations-shaped CSV.
HTTP_STATUS = {
    "source_missing": 404,
    "bucket_missing": 404,
    "access_denied": 403,
    "timeout": 504,
    "transient_error": 503,
    "internal_error": 500,
    "poison": 500,
}
CLIENT_ERROR_STATUS = 400  # bad or too large image, invalid options, collision, model cannot run it


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, "CSV Injection").
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def spreadsheet_safe(cell: str) -> str:
    """`cell` as a spreadsheet shows it but never runs it: a leading `'` before a formula start (OWASP)."""
    return "'" + cell if cell.startswith(FORMULA_START) else cell


def csv_key(key: str) -> str:
    """The key URL-encoded, as S3 Batch Operations writes it.  Of the formula starts only `-` survives
    that encoding; it is written `%2D`, which decodes to the same key (unlike a `'` prefix)."""
    encoded = quote_plus(key, safe="/")
    return "%2D" + encoded[1:] if encoded.startswith("-") else encoded


def csv_row(outcome: Outcome, job_bucket: str) -> list[str]:
    """One row in REPORT_SCHEMA's order; the key URL-encoded, as S3 Batch Operations writes it, and no cell
    a spreadsheet would run (see `spreadsheet_safe`)."""
    ok = outcome.status != "failed"
    status = 200 if ok else HTTP_STATUS.get(outcome.error_code or "", CLIENT_ERROR_STATUS)
    if outcome.status == "skipped":
        message = f"skipped: {outcome.output_key} is up to date"
    else:
        message = outcome.output_key or "" if ok else outcome.error or ""
    row = [
        outcome.bucket or job_bucket,
        csv_key(outcome.key),
        outcome.version or "",
        "succeeded" if ok else "failed",
        str(status),
        "" if ok else outcome.error_code or "unknown",
        message,
    ]
    return [spreadsheet_safe(cell) for cell in row]


def report_manifest(bucket: str, csv_key: str, csv_md5: str, any_failed: bool, now: float) -> dict[str, Any]:
    """The `manifest.json` S3 Batch Operations writes beside its reports.  AWS splits succeeded and failed
    tasks into two files; ours is one file with both, marked `failed` when it holds a failed row."""
    created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
    return {
        "Format": REPORT_FORMAT,
        "ReportCreationDate": created,
        "Results": [
            {
                "TaskExecutionStatus": "failed" if any_failed else "succeeded",
                "Bucket": bucket,
                "MD5Checksum": csv_md5,
                "Key": csv_key,
            }
        ],
        "ReportSchema": ", ".join(REPORT_SCHEMA),
    }


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as data:
        while chunk := data.read(MD5_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class _Tally:
    stage_ms: defaultdict[str, list[float]]
    failures: Counter[str]


def _write_lines(store: JobStore, job: JobRecord, jsonl_path: Path, csv_path: Path) -> _Tally:
    job_bucket = job.source.removeprefix("s3://").partition("/")[0] if job.source.startswith("s3://") else ""
    tally = _Tally(defaultdict(list), Counter())
    with (
        jsonl_path.open("w", encoding="utf-8") as jsonl,
        csv_path.open("w", encoding="utf-8", newline="") as raw,
    ):
        table = csv.writer(raw)
        for outcome in store.iter_outcomes(job.job_id):
            jsonl.write(outcome.to_json() + "\n")
            table.writerow(csv_row(outcome, job_bucket))
            if outcome.status == "failed":
                tally.failures[outcome.error_code or "unknown"] += 1
            for stage, ms in outcome.timings_ms.items():
                tally.stage_ms[stage].append(ms)
    return tally


def write_report(store: JobStore, storage: Storage, job_id: str) -> str:
    """Stream every outcome into the JSONL and CSV reports, write the CSV's manifest and the summary,
    return the JSONL's key.

    Both go through temporary files so a million-line report never sits in memory.
    """
    job = store.get(job_id)
    if job is None:
        raise KeyError(f"job {job_id!r} not found (it may have expired)")
    keys = ReportKeys.for_job(storage.location.prefix, job_id)
    with tempfile.TemporaryDirectory(prefix="cutout-report-") as tmp:
        jsonl_path, csv_path = Path(tmp) / "report.jsonl", Path(tmp) / "report.csv"
        tally = _write_lines(store, job, jsonl_path, csv_path)
        storage.put_file(keys.jsonl, jsonl_path, content_type="application/x-ndjson")
        storage.put_file(keys.csv, csv_path, content_type="text/csv")
        manifest = report_manifest(
            storage.location.bucket, keys.csv, _md5(csv_path), bool(tally.failures), time.time()
        )
    _put_json(storage, keys.manifest, manifest, sort_keys=False)  # in AWS's order
    summary = summarize(job, tally.stage_ms, tally.failures)
    summary.update(report_key=keys.jsonl, csv_report_key=keys.csv, manifest_key=keys.manifest)
    _put_json(storage, keys.summary, summary)
    store.set_report(job_id, keys.jsonl)
    return keys.jsonl


def _put_json(storage: Storage, key: str, document: dict[str, Any], *, sort_keys: bool = True) -> None:
    body = json.dumps(document, indent=2, sort_keys=sort_keys).encode()
    storage.put(key, body, content_type="application/json", metadata={})
