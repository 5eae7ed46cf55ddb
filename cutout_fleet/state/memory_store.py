"""`MemoryJobStore`: the `JobStore` semantics in process memory, for embedded `cutout run`.

One process and no redelivery: attempts are not counted, nothing becomes poison, nothing is parked.
Items are named by item id as in Redis, so counting and completion behave the same.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from cutout_fleet.errors import JobExists
from cutout_fleet.outcomes import Outcome
from cutout_fleet.state.records import DONE, RUNNING, Claim, ItemStart, JobRecord, JobSpec, Notice


class MemoryJobStore:
    """The same semantics in process memory, for embedded `cutout run`."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobRecord] = {}
        self.claims: dict[str, dict[str, str]] = {}  # job id -> output key -> item id of its owner
        self.outcomes: dict[str, dict[str, Outcome]] = {}  # job id -> item id -> outcome

    def create(self, spec: JobSpec) -> None:
        existing = self.jobs.get(spec.job_id)
        if existing is not None:
            if (existing.source, existing.out, existing.options) == (spec.source, spec.out, spec.options):
                return
            raise JobExists(f"job {spec.job_id!r} already exists with other inputs or options")
        self.jobs[spec.job_id] = JobRecord(
            spec.job_id,
            spec.source,
            spec.out,
            spec.model,
            spec.queue,
            spec.options,
            RUNNING,
            time.time(),
            force=spec.force,
            mapping=spec.mapping,
            notify_url=spec.notify_url,
        )
        self.claims[spec.job_id], self.outcomes[spec.job_id] = {}, {}

    def get(self, job_id: str) -> JobRecord | None:
        return self.jobs.get(job_id)

    def claim_outputs(
        self, job_id: str, pairs: Sequence[tuple[str, str]], ignored: int = 0, *, count: bool = True
    ) -> list[tuple[Claim, str | None]]:
        claims = self.claims[job_id]
        results: list[tuple[Claim, str | None]] = []
        for item, out_key in pairs:
            owner = claims.get(out_key)
            if owner is None:
                claims[out_key] = item
                results.append((Claim.NEW, None))
            elif owner == item:
                results.append((Claim.AGAIN, None))
            else:
                results.append((Claim.COLLISION, owner))
        job = self.jobs[job_id]
        if count:
            job.total += sum(claim is not Claim.AGAIN for claim, _ in results)
        job.ignored += ignored
        return results

    def _complete_if_done(self, job: JobRecord) -> bool:
        if job.final and job.state == RUNNING and job.finished >= job.total:
            job.state, job.finished_at = DONE, time.time()
            return True
        return False

    def finalize(self, job_id: str) -> bool:
        job = self.jobs[job_id]
        job.final = True
        return self._complete_if_done(job)

    def record(self, job_id: str, outcome: Outcome) -> tuple[bool, bool]:
        outcomes = self.outcomes[job_id]
        if outcome.item_id in outcomes:
            return False, False
        outcomes[outcome.item_id] = outcome
        job = self.jobs[job_id]
        setattr(job, outcome.status, getattr(job, outcome.status) + 1)
        if outcome.status == "failed":
            code = outcome.error_code or "unknown"
            job.failures_by_code[code] = job.failures_by_code.get(code, 0) + 1
        if outcome.decision:
            job.decisions[outcome.decision] = job.decisions.get(outcome.decision, 0) + 1
        job.first_outcome_at = job.first_outcome_at or time.time()
        return True, self._complete_if_done(job)

    def is_recorded(self, job_id: str, item: str) -> bool:
        return item in self.outcomes[job_id]

    def begin_item(self, job_id: str, item: str) -> ItemStart:
        job = self.jobs.get(job_id)
        if job is None:
            return ItemStart(None, False, 0)
        if item in self.outcomes[job_id]:
            return ItemStart(job.state, True, 0)
        return ItemStart(job.state, False, 1)  # one process, no redelivery: every item runs once

    def add_dead_letter(self, job_id: str, item: str, attempts: int, reason: str) -> None:
        """Embedded runs have no redelivery, so nothing can become poison."""

    def forget_attempt(self, job_id: str, item: str) -> None:
        """Attempts are not counted in memory (see begin_item)."""

    def add_rejected(self, task_id: str, reason: str, payload: str) -> None:
        raise RuntimeError(f"embedded run refused its own task: {reason}")

    def add_rate_sample(self, model: str, item_ms: float) -> None:
        """Embedded runs are not the fleet: their speed says nothing about the workers'."""

    def park(self, job_id: str, payload: str) -> None:
        raise RuntimeError("embedded jobs are never stopped")

    def iter_outcomes(self, job_id: str) -> Iterator[Outcome]:
        yield from self.outcomes[job_id].values()

    def set_report(self, job_id: str, report_key: str) -> None:
        self.jobs[job_id].report_key = report_key

    def set_notice(self, job_id: str, notice: Notice) -> None:
        job = self.jobs[job_id]
        job.notify_status, job.notify_attempts = notice.status, notice.attempts
        job.notify_error, job.notify_at = notice.error, notice.at
