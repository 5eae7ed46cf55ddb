"""Job status for people and scripts, and waiting for a job to finish."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from cutout_fleet.errors import JobNotFound
from cutout_fleet.recovery import unfinished
from cutout_fleet.state import JobRecord, JobStore, RedisJobStore
from cutout_fleet.state.leases import BEATS_PER_LEASE, LeaseBoard

# A holder that missed this many heartbeats is shown as not answering (its lease may not be over yet).
MISSED_BEATS_SHOWN = 2
KEYS_SHOWN = 5


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
        if job.state in ("done", "cancelled", "stopped"):
            return job
        if deadline is not None and time.monotonic() > deadline:
            return job
        time.sleep(poll_s)


def format_status(job: JobRecord) -> str:
    counts = job.counts()
    parts = [f"{name} {counts[name]}" for name in ("total", "queued", "succeeded", "failed", "skipped")]
    total_note = "" if job.final else " (listing still running)"
    return f"job {job.job_id}: {job.state}{total_note} | " + ", ".join(parts)


RATE_WINDOW_S = 120.0


@dataclass
class RateMeter:
    """Images per minute over a sliding window of polls (falls back to the job's average)."""

    samples: deque[tuple[float, int]] = field(default_factory=deque)

    def rate_per_min(self, job: JobRecord, now: float) -> float | None:
        self.samples.append((now, job.finished))
        while self.samples and now - self.samples[0][0] > RATE_WINDOW_S:
            self.samples.popleft()
        first_t, first_n = self.samples[0]
        if now - first_t >= 2.0 and job.finished > first_n:
            return (job.finished - first_n) / (now - first_t) * 60.0
        if job.first_outcome_at and job.finished:
            elapsed = (job.finished_at or now) - job.first_outcome_at
            return job.finished / elapsed * 60.0 if elapsed > 0 else None
        return None


@dataclass(frozen=True)
class StalledTask:
    """Items held by a worker process that stopped answering, and when the fleet sends them again."""

    holder: str
    items: int  # without an outcome
    keys: list[str]  # the first few
    silent_s: float  # since its last heartbeat
    resend_in_s: float  # at the latest (the lease, then the next recovery pass)

    def as_dict(self) -> dict[str, object]:
        return {
            "holder": self.holder,
            "items": self.items,
            "keys": self.keys,
            "silent_s": round(self.silent_s),
            "resend_in_s": round(self.resend_in_s),
        }


def stalled_tasks(store: JobStore, board: LeaseBoard, job_id: str) -> list[StalledTask]:
    beat_s = board.lease_s / BEATS_PER_LEASE
    beats, now = board.last_beats(), board.server_time()
    found = []
    for task in board.held(job_id):
        last = beats.get(task.holder, task.since)
        if now - last < MISSED_BEATS_SHOWN * beat_s:
            continue
        message = unfinished(store, task.payload)
        if message is not None:
            resend_in_s = max(0.0, last + board.lease_s - now) + beat_s
            found.append(
                StalledTask(
                    task.holder, len(message.keys), message.keys[:KEYS_SHOWN], now - last, resend_in_s
                )
            )
    return found


@dataclass(frozen=True)
class LiveStatus:
    job: JobRecord
    rate_per_min: float | None
    eta_s: float | None
    queue_depths: dict[str, int]
    stalled: list[StalledTask] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            **self.job.as_dict(),
            "rate_per_min": None if self.rate_per_min is None else round(self.rate_per_min, 1),
            "eta_s": None if self.eta_s is None else round(self.eta_s),
            "queue_depths": self.queue_depths,
            "stalled": [task.as_dict() for task in self.stalled],
        }


def live_status(
    store: RedisJobStore, job_id: str, queues: list[str], meter: RateMeter, board: LeaseBoard | None = None
) -> LiveStatus:
    job = job_status(store, job_id)
    rate = meter.rate_per_min(job, time.time())
    stalled = stalled_tasks(store, board, job_id) if board is not None and job.state == "running" else []
    # Stalled items wait for their lease, not for the fleet's rate: the ETA counts the others.
    moving = max(job.queued - sum(task.items for task in stalled), 0)
    eta = moving / rate * 60.0 if rate and job.state == "running" else None
    depths = store.queue_depths(queues)
    return LiveStatus(job, rate, eta, depths, stalled)


def format_live(status: LiveStatus) -> str:
    job = status.job
    lines = [format_status(job)]
    rate = "-" if status.rate_per_min is None else f"{status.rate_per_min:.1f} images/min"
    eta = "-" if status.eta_s is None else _duration(status.eta_s)
    depths = ", ".join(f"{q} {n}" for q, n in status.queue_depths.items())
    lines.append(f"  rate {rate} | ETA {eta} | queue depth: {depths}")
    if job.failures_by_code:
        reasons = ", ".join(
            f"{code} {n}" for code, n in sorted(job.failures_by_code.items(), key=lambda x: -x[1])
        )
        lines.append(f"  failures by reason: {reasons}")
    if job.stop_reason:
        lines.append(f"  stopped: {job.stop_reason}")
    for task in status.stalled:
        keys = ", ".join(task.keys) + (", ..." if task.items > len(task.keys) else "")
        lines.append(
            f"  stalled: {task.items} items held by {task.holder}, silent for {_duration(task.silent_s)};"
            f" sent again within {_duration(task.resend_in_s)} (now: `cutout requeue {job.job_id}`): {keys}"
        )
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
