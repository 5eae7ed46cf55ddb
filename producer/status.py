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


def format_job_line(job: JobRecord) -> str:
    """One job in `cutout jobs`: its state and counts, then where it reads from and writes to."""
    return f"{format_status(job)} | {job.source} -> {job.out}"


RATE_WINDOW_S = 120.0
# A rate measured over less time than this is noise (two items that end 10 ms apart are not 12,000/min).
MIN_RATE_SPAN_S = 2.0


@dataclass(frozen=True)
class Rates:
    """How fast a job moves.  Only cutouts count as images: failed and skipped items take next to no time,
    and a job where everything fails would otherwise report thousands of images per minute."""

    images_per_min: float | None  # succeeded items
    items_per_min: float | None  # every outcome: how fast the queue drains, which is what the ETA needs


@dataclass
class RateMeter:
    """Rates over a sliding window of polls (falls back to the job's average)."""

    samples: deque[tuple[float, int, int]] = field(default_factory=deque)  # (time, succeeded, finished)

    def rates(self, job: JobRecord, now: float) -> Rates:
        self.samples.append((now, job.succeeded, job.finished))
        while self.samples and now - self.samples[0][0] > RATE_WINDOW_S:
            self.samples.popleft()
        return Rates(self._per_min(job, now, 1, job.succeeded), self._per_min(job, now, 2, job.finished))

    def _per_min(self, job: JobRecord, now: float, column: int, count: int) -> float | None:
        first = self.samples[0]
        if now - first[0] >= MIN_RATE_SPAN_S and count > first[column]:
            return (count - first[column]) / (now - first[0]) * 60.0
        if not count:
            return None
        end = job.finished_at or now
        start = job.first_outcome_at or job.created_at
        if end - start < MIN_RATE_SPAN_S:  # the first outcomes came together: time the whole job
            start = job.created_at
        return count / (end - start) * 60.0 if end > start else None


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
    rate_per_min: float | None  # images cut out (see Rates)
    eta_s: float | None
    queue_depths: dict[str, int]
    stalled: list[StalledTask] = field(default_factory=list)
    items_per_min: float | None = None  # every outcome, failed and skipped too

    def as_dict(self) -> dict[str, object]:
        return {
            **self.job.as_dict(),
            "rate_per_min": None if self.rate_per_min is None else round(self.rate_per_min, 1),
            "items_per_min": None if self.items_per_min is None else round(self.items_per_min, 1),
            "eta_s": None if self.eta_s is None else round(self.eta_s),
            "queue_depths": self.queue_depths,
            "stalled": [task.as_dict() for task in self.stalled],
        }


def live_status(
    store: RedisJobStore, job_id: str, queues: list[str], meter: RateMeter, board: LeaseBoard | None = None
) -> LiveStatus:
    job = job_status(store, job_id)
    rates = meter.rates(job, time.time())
    stalled = stalled_tasks(store, board, job_id) if board is not None and job.state == "running" else []
    # Stalled items wait for their lease, not for the fleet's rate: the ETA counts the others.
    moving = max(job.queued - sum(task.items for task in stalled), 0)
    drain = rates.items_per_min
    eta = moving / drain * 60.0 if drain and job.state == "running" else None
    depths = store.queue_depths(queues)
    return LiveStatus(job, rates.images_per_min, eta, depths, stalled, rates.items_per_min)


def format_live(status: LiveStatus) -> str:
    job = status.job
    lines = [format_status(job)]
    rate = _rate(status)
    eta = "-" if status.eta_s is None else _duration(status.eta_s)
    depths = ", ".join(f"{q} {n}" for q, n in status.queue_depths.items())
    lines.append(f"  rate {rate} | ETA {eta} | queue depth: {depths}")
    if job.failures_by_code:
        reasons = ", ".join(
            f"{code} {n}" for code, n in sorted(job.failures_by_code.items(), key=lambda x: -x[1])
        )
        lines.append(f"  failures by reason: {reasons}")
    if job.decisions:
        decided = ", ".join(f"{name} {n}" for name, n in sorted(job.decisions.items()))
        lines.append(f"  safety decisions: {decided}")
    if job.stop_reason:
        lines.append(f"  stopped: {job.stop_reason}")
    for task in status.stalled:
        keys = ", ".join(task.keys) + (", ..." if task.items > len(task.keys) else "")
        lines.append(
            f"  stalled: {task.items} items held by {task.holder}, silent for {_duration(task.silent_s)};"
            f" sent again within {_duration(task.resend_in_s)} (now: `cutout requeue {job.job_id}`): {keys}"
        )
    return "\n".join(lines)


def _rate(status: LiveStatus) -> str:
    if status.rate_per_min is not None:
        return f"{status.rate_per_min:.1f} images/min"
    return "- (no image cut out yet)" if status.job.finished else "-"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
