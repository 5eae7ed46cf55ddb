"""What a job is and what the stores answer: specs, records, claim results, states."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from enum import Enum

RUNNING, DONE, CANCELLED, STOPPED = "running", "done", "cancelled", "stopped"


def new_job_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


@dataclass(frozen=True)
class ItemStart:
    """What a worker learns before it starts an item: the job's state, and whether/how often it ran."""

    state: str | None  # None: the job is unknown or expired
    recorded: bool
    attempt: int  # 1 on the first try; counted before the work, so a kill still counts


class Claim(Enum):
    NEW = "new"  # first time this job sees the item: count and enqueue it
    AGAIN = "again"  # the same item was enqueued before (a second enqueue of the job): skip silently
    COLLISION = "collision"  # another item already maps to this output


@dataclass(frozen=True)
class FailureGuard:
    """Stop a job whose failure rate passes `max_failure_ratio` after `min_items` processed items."""

    min_items: int = 1000
    max_failure_ratio: float = 0.5


@dataclass(frozen=True)
class JobSpec:
    job_id: str
    source: str
    out: str
    model: str
    queue: str
    options: dict[str, object]
    force: bool = False
    mapping: str = "relative"  # how output keys are made: see keys.map_output_key
    guard: FailureGuard = field(default_factory=FailureGuard)
    notify_url: str | None = None  # POST a completion notice here (cutout_fleet.notify)


@dataclass(frozen=True)
class Notice:
    """How a job's completion notice went: delivered or failed, after how many attempts, and why."""

    status: str  # delivered | failed
    attempts: int
    error: str | None
    at: float  # when the last attempt ended


@dataclass
class JobRecord:
    job_id: str
    source: str
    out: str
    model: str
    queue: str
    options: dict[str, object]
    state: str
    created_at: float
    force: bool = False
    mapping: str = "relative"
    finished_at: float | None = None
    first_outcome_at: float | None = None
    final: bool = False
    total: int = 0  # items accepted so far; the job's total once `final`
    ignored: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    report_key: str | None = None
    stop_reason: str | None = None
    failures_by_code: dict[str, int] = field(default_factory=dict)
    decisions: dict[str, int] = field(default_factory=dict)  # safety gate: allow / review / block
    notify_url: str | None = None
    notify_status: str | None = None  # delivered | failed; None: not sent (yet)
    notify_attempts: int = 0
    notify_error: str | None = None
    notify_at: float | None = None  # when the last notice attempt ended

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.skipped

    @property
    def queued(self) -> int:
        return max(self.total - self.finished, 0)

    def counts(self) -> dict[str, int]:
        return {
            "total": self.total,
            "queued": self.queued,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "skipped": self.skipped,
            "ignored": self.ignored,
        }

    def as_dict(self) -> dict[str, object]:
        return {
            "job_id": self.job_id,
            "state": self.state,
            "final": self.final,
            **self.counts(),
            "failures_by_code": self.failures_by_code,
            "decisions": self.decisions,
            "source": self.source,
            "out": self.out,
            "model": self.model,
            "queue": self.queue,
            "options": self.options,
            "force": self.force,
            "mapping": self.mapping,
            "created_at": self.created_at,
            "first_outcome_at": self.first_outcome_at,
            "finished_at": self.finished_at,
            "report_key": self.report_key,
            "stop_reason": self.stop_reason,
            "notify_url": self.notify_url,
            "notify_status": self.notify_status,
            "notify_attempts": self.notify_attempts,
            "notify_error": self.notify_error,
            "notify_at": self.notify_at,
        }
