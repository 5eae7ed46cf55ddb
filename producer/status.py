"""Job status for people and scripts, and waiting for a job to finish."""

from __future__ import annotations

import time
from collections.abc import Callable

from cutout_fleet.jobs import JobRecord, JobStore


class JobNotFound(LookupError):
    pass


def job_status(store: JobStore, job_id: str) -> JobRecord:
    job = store.get(job_id)
    if job is None:
        raise JobNotFound(f"job {job_id!r} not found: check the id (`cutout jobs`), or it expired")
    return job


def wait_for_job(
    store: JobStore,
    job_id: str,
    *,
    poll_s: float,
    on_update: Callable[[JobRecord], None] | None = None,
    timeout_s: float | None = None,
) -> JobRecord:
    """Poll until the job is done (or `timeout_s` passes); calls `on_update` after each poll."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        job = job_status(store, job_id)
        if on_update:
            on_update(job)
        if job.state == "done":
            return job
        if deadline is not None and time.monotonic() > deadline:
            return job
        time.sleep(poll_s)


def format_status(job: JobRecord) -> str:
    counts = job.counts()
    parts = [f"{name} {counts[name]}" for name in ("total", "queued", "succeeded", "failed", "skipped")]
    total_note = "" if job.final else " (listing still running)"
    return f"job {job.job_id}: {job.state}{total_note} | " + ", ".join(parts)
