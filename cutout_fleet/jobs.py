"""Job state: counts, per-key outcomes and output claims.  Redis for the fleet, memory for `cutout run`.

Counting is exact under redelivery because an outcome is recorded at most once per key (HSETNX in
one Lua script with the counters).  A job is done when its total is final and every item has an
outcome; exactly one caller (the last outcome, or the producer's finalize) is told "you completed it".
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import redis

from cutout_fleet.outcomes import Outcome

# Redis key layout, in one place.  {id} keeps a job's keys in one cluster hash slot.
KEY_PREFIX = "cf"
JOBS_INDEX = f"{KEY_PREFIX}:jobs"  # zset job_id -> created_at


def job_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{{{job_id}}}"


def items_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{{{job_id}}}:items"  # hash key -> final status


def claims_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{{{job_id}}}:claims"  # hash output key -> source key


def outcomes_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{{{job_id}}}:outcomes"  # list of Outcome JSON lines


def new_job_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


@dataclass(frozen=True)
class JobSpec:
    job_id: str
    source: str
    out: str
    model: str
    queue: str
    options: dict[str, object]


@dataclass
class JobRecord:
    job_id: str
    source: str
    out: str
    model: str
    queue: str
    options: dict[str, object]
    state: str  # running | done
    created_at: float
    finished_at: float | None = None
    final: bool = False
    total: int = 0  # items accepted so far; the job's total once `final`
    ignored: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    report_key: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

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
            "source": self.source,
            "out": self.out,
            "model": self.model,
            "queue": self.queue,
            "options": self.options,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "report_key": self.report_key,
        }


class JobStore(Protocol):
    def create(self, spec: JobSpec) -> None: ...
    def get(self, job_id: str) -> JobRecord | None: ...
    def claim_outputs(self, job_id: str, pairs: Sequence[tuple[str, str]]) -> list[str | None]: ...
    def add_items(self, job_id: str, accepted: int, ignored: int) -> None: ...
    def finalize(self, job_id: str) -> bool: ...
    def record(self, job_id: str, outcome: Outcome) -> tuple[bool, bool]: ...
    def is_recorded(self, job_id: str, key: str) -> bool: ...
    def iter_outcomes(self, job_id: str) -> Iterator[Outcome]: ...
    def set_report(self, job_id: str, report_key: str) -> None: ...


class JobExists(Exception):
    pass


# Returns {recorded, completed}: recorded=0 when this key already had an outcome (a redelivery).
_RECORD_LUA = """
local job, items, outcomes = KEYS[1], KEYS[2], KEYS[3]
local key, status, line, now, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
if redis.call('EXISTS', job) == 0 then return {0, 0} end
if redis.call('HSETNX', items, key, status) == 0 then return {0, 0} end
redis.call('HINCRBY', job, status, 1)
redis.call('RPUSH', outcomes, line)
redis.call('EXPIRE', job, ttl)
redis.call('EXPIRE', items, ttl)
redis.call('EXPIRE', outcomes, ttl)
local f = redis.call('HMGET', job, 'final', 'state', 'total', 'succeeded', 'failed', 'skipped')
local finished = tonumber(f[4] or 0) + tonumber(f[5] or 0) + tonumber(f[6] or 0)
if f[1] == '1' and f[2] == 'running' and finished >= tonumber(f[3] or 0) then
  redis.call('HSET', job, 'state', 'done', 'finished_at', now)
  return {1, 1}
end
return {1, 0}
"""

_FINALIZE_LUA = """
local job = KEYS[1]
local now = ARGV[1]
if redis.call('EXISTS', job) == 0 then return 0 end
redis.call('HSET', job, 'final', '1')
local f = redis.call('HMGET', job, 'state', 'total', 'succeeded', 'failed', 'skipped')
local finished = tonumber(f[3] or 0) + tonumber(f[4] or 0) + tonumber(f[5] or 0)
if f[1] == 'running' and finished >= tonumber(f[2] or 0) then
  redis.call('HSET', job, 'state', 'done', 'finished_at', now)
  return 1
end
return 0
"""

_INT_FIELDS = ("total", "ignored", "succeeded", "failed", "skipped")


class RedisJobStore:
    """Job state in Redis.  Every key of a job expires `ttl_s` after its last write."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.r = client
        self.ttl_s = ttl_s
        self._record = client.register_script(_RECORD_LUA)
        self._finalize = client.register_script(_FINALIZE_LUA)

    @classmethod
    def from_url(cls, url: str, ttl_s: int) -> RedisJobStore:
        client = redis.Redis.from_url(url, health_check_interval=30, socket_keepalive=True)
        return cls(client, ttl_s)

    def create(self, spec: JobSpec) -> None:
        key = job_key(spec.job_id)
        now = time.time()
        fields = {
            "source": spec.source,
            "out": spec.out,
            "model": spec.model,
            "queue": spec.queue,
            "options": json.dumps(spec.options, sort_keys=True),
            "state": "running",
            "final": "0",
            "created_at": repr(now),
            **{name: 0 for name in _INT_FIELDS},
        }
        if not self.r.hsetnx(key, "created_at", repr(now)):
            raise JobExists(f"job {spec.job_id!r} already exists; pick another --job-id")
        pipe = self.r.pipeline()
        pipe.hset(key, mapping=fields)
        pipe.expire(key, self.ttl_s)
        pipe.zadd(JOBS_INDEX, {spec.job_id: now})
        # The index would grow forever otherwise; a job older than the TTL has expired anyway.
        pipe.zremrangebyscore(JOBS_INDEX, "-inf", now - self.ttl_s)
        pipe.execute()

    def get(self, job_id: str) -> JobRecord | None:
        raw = self.r.hgetall(job_key(job_id))
        if not raw:
            return None
        data = {k.decode(): v.decode() for k, v in raw.items()}
        finished_at = data.get("finished_at")
        return JobRecord(
            job_id=job_id,
            source=data.get("source", ""),
            out=data.get("out", ""),
            model=data.get("model", ""),
            queue=data.get("queue", ""),
            options=json.loads(data.get("options", "{}")),
            state=data.get("state", "running"),
            created_at=float(data.get("created_at", 0)),
            finished_at=float(finished_at) if finished_at else None,
            final=data.get("final") == "1",
            report_key=data.get("report_key") or None,
            **{name: int(data.get(name, 0)) for name in _INT_FIELDS},
        )

    def claim_outputs(self, job_id: str, pairs: Sequence[tuple[str, str]]) -> list[str | None]:
        """Claim each output key for its source key; returns the other source key where one won first."""
        key = claims_key(job_id)
        pipe = self.r.pipeline(transaction=False)
        for source_key, out_key in pairs:
            pipe.hsetnx(key, out_key, source_key)
        claimed = pipe.execute()
        losers = [i for i, ok in enumerate(claimed) if not ok]
        owners: list[str | None] = [None] * len(pairs)
        if losers:
            values = self.r.hmget(key, [pairs[i][1] for i in losers])
            for i, value in zip(losers, values, strict=True):
                owner = value.decode() if value is not None else None
                # Re-enqueueing the same key is not a collision with itself.
                owners[i] = owner if owner != pairs[i][0] else None
        self.r.expire(key, self.ttl_s)
        return owners

    def add_items(self, job_id: str, accepted: int, ignored: int) -> None:
        pipe = self.r.pipeline()
        pipe.hincrby(job_key(job_id), "total", accepted)
        pipe.hincrby(job_key(job_id), "ignored", ignored)
        pipe.execute()

    def finalize(self, job_id: str) -> bool:
        return bool(self._finalize(keys=[job_key(job_id)], args=[repr(time.time())]))

    def record(self, job_id: str, outcome: Outcome) -> tuple[bool, bool]:
        keys = [job_key(job_id), items_key(job_id), outcomes_key(job_id)]
        args = [outcome.key, outcome.status, outcome.to_json(), repr(time.time()), self.ttl_s]
        recorded, completed = self._record(keys=keys, args=args)
        return bool(recorded), bool(completed)

    def is_recorded(self, job_id: str, key: str) -> bool:
        return bool(self.r.hexists(items_key(job_id), key))

    def iter_outcomes(self, job_id: str, chunk: int = 1000) -> Iterator[Outcome]:
        start = 0
        while True:
            lines = self.r.lrange(outcomes_key(job_id), start, start + chunk - 1)
            if not lines:
                return
            for line in lines:
                yield Outcome.from_json(line)
            start += len(lines)

    def set_report(self, job_id: str, report_key: str) -> None:
        self.r.hset(job_key(job_id), "report_key", report_key)

    def recent(self, limit: int = 20) -> list[JobRecord]:
        ids = [i.decode() for i in self.r.zrevrange(JOBS_INDEX, 0, limit - 1)]
        records = [self.get(job_id) for job_id in ids]
        return [r for r in records if r is not None]


class MemoryJobStore:
    """The same semantics in process memory, for embedded `cutout run`."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobRecord] = {}
        self.items: dict[str, dict[str, str]] = {}
        self.claims: dict[str, dict[str, str]] = {}
        self.outcomes: dict[str, list[Outcome]] = {}

    def create(self, spec: JobSpec) -> None:
        if spec.job_id in self.jobs:
            raise JobExists(f"job {spec.job_id!r} already exists")
        self.jobs[spec.job_id] = JobRecord(
            spec.job_id, spec.source, spec.out, spec.model, spec.queue, spec.options, "running", time.time()
        )
        self.items[spec.job_id], self.claims[spec.job_id], self.outcomes[spec.job_id] = {}, {}, []

    def get(self, job_id: str) -> JobRecord | None:
        return self.jobs.get(job_id)

    def claim_outputs(self, job_id: str, pairs: Sequence[tuple[str, str]]) -> list[str | None]:
        claims = self.claims[job_id]
        owners: list[str | None] = []
        for source_key, out_key in pairs:
            owner = claims.setdefault(out_key, source_key)
            owners.append(owner if owner != source_key else None)
        return owners

    def add_items(self, job_id: str, accepted: int, ignored: int) -> None:
        self.jobs[job_id].total += accepted
        self.jobs[job_id].ignored += ignored

    def _complete_if_done(self, job: JobRecord) -> bool:
        if job.final and job.state == "running" and job.finished >= job.total:
            job.state, job.finished_at = "done", time.time()
            return True
        return False

    def finalize(self, job_id: str) -> bool:
        job = self.jobs[job_id]
        job.final = True
        return self._complete_if_done(job)

    def record(self, job_id: str, outcome: Outcome) -> tuple[bool, bool]:
        items = self.items[job_id]
        if outcome.key in items:
            return False, False
        items[outcome.key] = outcome.status
        job = self.jobs[job_id]
        setattr(job, outcome.status, getattr(job, outcome.status) + 1)
        self.outcomes[job_id].append(outcome)
        return True, self._complete_if_done(job)

    def is_recorded(self, job_id: str, key: str) -> bool:
        return key in self.items[job_id]

    def iter_outcomes(self, job_id: str) -> Iterator[Outcome]:
        yield from self.outcomes[job_id]

    def set_report(self, job_id: str, report_key: str) -> None:
        self.jobs[job_id].report_key = report_key
