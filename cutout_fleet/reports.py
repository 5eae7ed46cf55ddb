"""The completion report: `_reports/JOB.jsonl` (one line per item: a key, with its bucket and version
when it has them), `_reports/JOB.csv` and `_reports/JOB.summary.json`."""

from __future__ import annotations

import csv
import json
import statistics
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

from cutout_fleet.keys import report_keys
from cutout_fleet.outcomes import Outcome
from cutout_fleet.state import JobRecord, JobStore
from cutout_fleet.storage import Storage


def summarize(job: JobRecord, stage_ms: dict[str, list[float]], failures: Counter[str]) -> dict[str, Any]:
    duration_s = (job.finished_at or job.created_at) - job.created_at
    processed = job.succeeded + job.failed
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
        "images_per_s": round(processed / duration_s, 3) if duration_s > 0 else None,
        "failures_by_code": dict(sorted(failures.items())),
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


def csv_row(outcome: Outcome, job_bucket: str) -> list[str]:
    """bucket, key (URL-encoded, as S3 Batch Operations writes it), version, task status, error code,
    HTTP status, result message."""
    ok = outcome.status != "failed"
    status = 200 if ok else HTTP_STATUS.get(outcome.error_code or "", CLIENT_ERROR_STATUS)
    if outcome.status == "skipped":
        message = f"skipped: {outcome.output_key} is up to date"
    else:
        message = outcome.output_key or "" if ok else outcome.error or ""
    return [
        outcome.bucket or job_bucket,
        quote_plus(outcome.key, safe="/"),
        outcome.version or "",
        "succeeded" if ok else "failed",
        "" if ok else outcome.error_code or "unknown",
        str(status),
        message,
    ]


def write_report(store: JobStore, storage: Storage, job_id: str) -> str:
    """Stream every outcome into the JSONL and CSV reports, write the summary, return the JSONL's key.

    Both go through temporary files so a million-line report never sits in memory.
    """
    job = store.get(job_id)
    if job is None:
        raise KeyError(f"job {job_id!r} not found (it may have expired)")
    jsonl_key, summary_key = report_keys(storage.location.prefix, job_id)
    csv_key = jsonl_key.removesuffix(".jsonl") + ".csv"
    job_bucket = job.source.removeprefix("s3://").partition("/")[0] if job.source.startswith("s3://") else ""
    stage_ms: dict[str, list[float]] = defaultdict(list)
    failures: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="cutout-report-") as tmp:
        jsonl_path, csv_path = Path(tmp) / "report.jsonl", Path(tmp) / "report.csv"
        with (
            jsonl_path.open("w", encoding="utf-8") as jsonl,
            csv_path.open("w", encoding="utf-8", newline="") as raw,
        ):
            table = csv.writer(raw)
            for outcome in store.iter_outcomes(job_id):
                jsonl.write(outcome.to_json() + "\n")
                table.writerow(csv_row(outcome, job_bucket))
                if outcome.status == "failed":
                    failures[outcome.error_code or "unknown"] += 1
                for stage, ms in outcome.timings_ms.items():
                    stage_ms[stage].append(ms)
        storage.put_file(jsonl_key, jsonl_path, content_type="application/x-ndjson")
        storage.put_file(csv_key, csv_path, content_type="text/csv")
    summary = summarize(job, stage_ms, failures)
    summary["report_key"] = jsonl_key
    summary["csv_report_key"] = csv_key
    storage.put(
        summary_key,
        json.dumps(summary, indent=2, sort_keys=True).encode(),
        content_type="application/json",
        metadata={},
    )
    store.set_report(job_id, jsonl_key)
    return jsonl_key
