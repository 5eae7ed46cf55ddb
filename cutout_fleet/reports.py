"""The completion report: `_reports/JOB.jsonl` (one line per key) and `_reports/JOB.summary.json`."""

from __future__ import annotations

import json
import statistics
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from cutout_fleet.jobs import JobRecord, JobStore
from cutout_fleet.keys import report_keys
from cutout_fleet.storage import Storage


def summarize(job: JobRecord, stage_ms: dict[str, list[float]], failures: Counter[str]) -> dict[str, Any]:
    duration_s = (job.finished_at or job.created_at) - job.created_at
    processed = job.succeeded + job.failed
    return {
        "job_id": job.job_id,
        "state": job.state,
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


def write_report(store: JobStore, storage: Storage, job_id: str) -> str:
    """Stream every outcome into the JSONL report, write the summary, return the report's key.

    The JSONL goes through a temporary file so a million-line report never sits in memory.
    """
    job = store.get(job_id)
    if job is None:
        raise KeyError(f"job {job_id!r} not found (it may have expired)")
    jsonl_key, summary_key = report_keys(storage.location.prefix, job_id)
    stage_ms: dict[str, list[float]] = defaultdict(list)
    failures: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="cutout-report-") as tmp:
        path = Path(tmp) / "report.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for outcome in store.iter_outcomes(job_id):
                handle.write(outcome.to_json() + "\n")
                if outcome.status == "failed":
                    failures[outcome.error_code or "unknown"] += 1
                for stage, ms in outcome.timings_ms.items():
                    stage_ms[stage].append(ms)
        storage.put_file(jsonl_key, path, content_type="application/x-ndjson")
    summary = summarize(job, stage_ms, failures)
    summary["report_key"] = jsonl_key
    storage.put(
        summary_key,
        json.dumps(summary, indent=2, sort_keys=True).encode(),
        content_type="application/json",
        metadata={},
    )
    store.set_report(job_id, jsonl_key)
    return jsonl_key
