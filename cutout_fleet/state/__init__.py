"""Job state: counts, per-key outcomes, claims, lifecycle.  Redis for the fleet, memory for `cutout run`.

Counting is exact under redelivery because an outcome is recorded at most once per key (HSETNX of
the key's outcome line, in one Lua script with the counters).  A job is done when its total is
final and every item has an outcome; exactly one caller (the last outcome, the producer's finalize,
or a resume) is told "you completed it", and that caller has the report written.

States: running -> done | cancelled | stopped (failure guard; `resume` -> running).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

import redis

from cutout_fleet.errors import JobExists
from cutout_fleet.outcomes import Outcome

# Redis key layout, in one place.  {id} keeps a job's keys in one cluster hash slot.
KEY_PREFIX = "cf"
JOBS_INDEX = f"{KEY_PREFIX}:jobs"  # zset job_id -> created_at
REJECTED_KEY = f"{KEY_PREFIX}:rejected"  # list of refused task messages (JSON), newest first
REJECTED_KEEP = 1000
FAIL_PREFIX = "fail:"  # job hash fields counting failures by error code

RUNNING, DONE, CANCELLED, STOPPED = "running", "done", "cancelled", "stopped"


def _text(value: bytes | str) -> str:
    """A Redis reply as text: our clients answer bytes (decode_responses is off), the types allow str."""
    return value.decode() if isinstance(value, bytes) else value


def job_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{{{job_id}}}"


def outcomes_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{{{job_id}}}:outcomes"  # hash key -> Outcome JSON (once per key)


def claims_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{{{job_id}}}:claims"  # hash output key -> source key


def attempts_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{{{job_id}}}:attempts"  # hash key -> times work on it began


def dead_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{{{job_id}}}:dead"  # list of poison items (JSON), the dead-letter record


def parked_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{{{job_id}}}:parked"  # list of task payloads held while stopped


def job_keys(job_id: str) -> list[str]:
    return [
        job_key(job_id),
        outcomes_key(job_id),
        claims_key(job_id),
        parked_key(job_id),
        attempts_key(job_id),
        dead_key(job_id),
    ]


@dataclass(frozen=True)
class ItemStart:
    """What a worker learns before it starts a key: the job's state, and whether/how often it ran."""

    state: str | None  # None: the job is unknown or expired
    recorded: bool
    attempt: int  # 1 on the first try; counted before the work, so a kill still counts


def rate_key(model: str) -> str:
    return f"{KEY_PREFIX}:rate:{model}"  # recent per-item milliseconds on this fleet


RATE_SAMPLES = 200
RATE_TTL_S = 7 * 24 * 3600


def new_job_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


class Claim(Enum):
    NEW = "new"  # first time this job sees the key: count and enqueue it
    AGAIN = "again"  # the same key was enqueued before (a second enqueue of the job): skip silently
    COLLISION = "collision"  # another key already maps to this output


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
        }


class JobStore(Protocol):
    def create(self, spec: JobSpec) -> None: ...
    def get(self, job_id: str) -> JobRecord | None: ...
    def claim_outputs(
        self, job_id: str, pairs: Sequence[tuple[str, str]], ignored: int = 0
    ) -> list[tuple[Claim, str | None]]: ...
    def finalize(self, job_id: str) -> bool: ...
    def record(self, job_id: str, outcome: Outcome) -> tuple[bool, bool]: ...
    def is_recorded(self, job_id: str, key: str) -> bool: ...
    def begin_item(self, job_id: str, key: str) -> ItemStart: ...
    def add_dead_letter(self, job_id: str, key: str, attempts: int, reason: str) -> None: ...
    def forget_attempt(self, job_id: str, key: str) -> None: ...
    def add_rejected(self, task_id: str, reason: str, payload: str) -> None: ...
    def add_rate_sample(self, model: str, item_ms: float) -> None: ...
    def park(self, job_id: str, payload: str) -> None: ...
    def iter_outcomes(self, job_id: str) -> Iterator[Outcome]: ...
    def set_report(self, job_id: str, report_key: str) -> None: ...


# ARGV: key, status, line, now, ttl, error code.  Returns {recorded, completed, stopped}.
_RECORD_LUA = """
local job, outcomes = KEYS[1], KEYS[2]
local key, status, line, now, ttl, code = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
if redis.call('EXISTS', job) == 0 then return {0, 0, 0} end
if redis.call('HSETNX', outcomes, key, line) == 0 then return {0, 0, 0} end
redis.call('HINCRBY', job, status, 1)
if status == 'failed' then redis.call('HINCRBY', job, 'fail:' .. code, 1) end
redis.call('HSETNX', job, 'first_outcome_at', now)
redis.call('EXPIRE', job, ttl)
redis.call('EXPIRE', outcomes, ttl)
local f = redis.call('HMGET', job, 'final', 'state', 'total', 'succeeded', 'failed', 'skipped',
                      'guard_min', 'guard_ratio', 'guard_base_processed', 'guard_base_failed')
local succeeded, failed, skipped = tonumber(f[4] or 0), tonumber(f[5] or 0), tonumber(f[6] or 0)
if f[2] ~= 'running' then return {1, 0, 0} end
-- The guard looks at items processed since the last resume, so a fixed cause gets a fresh start.
local processed = succeeded + failed - tonumber(f[9] or 0)
local failed_since = failed - tonumber(f[10] or 0)
local guard_min, guard_ratio = tonumber(f[7] or 0), tonumber(f[8] or 1)
local tripped = guard_min > 0 and processed >= guard_min and failed_since / processed > guard_ratio
if status == 'failed' and tripped then
  redis.call('HSET', job, 'state', 'stopped', 'stop_reason',
    string.format('failure guard: %d of %d processed items failed (over %d%%); ' ..
                  'fix the cause, then `cutout resume`',
                  failed_since, processed, math.floor(guard_ratio * 100)))
  return {1, 0, 1}
end
if f[1] == '1' and succeeded + failed + skipped >= tonumber(f[3] or 0) then
  redis.call('HSET', job, 'state', 'done', 'finished_at', now)
  return {1, 1, 0}
end
return {1, 0, 0}
"""

# Mark the total final (or re-check after a resume); completes the job when nothing is left.
_FINALIZE_LUA = """
local job, now = KEYS[1], ARGV[1]
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

# Forget the failed outcomes of the given keys so they can be processed again (retry).
_UNRECORD_FAILED_LUA = """
local job, outcomes = KEYS[1], KEYS[2]
local n = 0
for i = 1, #ARGV do
  local line = redis.call('HGET', outcomes, ARGV[i])
  if line then
    local outcome = cjson.decode(line)
    if outcome['status'] == 'failed' then
      redis.call('HDEL', outcomes, ARGV[i])
      redis.call('HINCRBY', job, 'failed', -1)
      redis.call('HINCRBY', job, 'fail:' .. (outcome['error_code'] or 'unknown'), -1)
      n = n + 1
    end
  end
end
if n > 0 then
  redis.call('HSET', job, 'state', 'running')
  redis.call('HDEL', job, 'finished_at', 'report_key', 'stop_reason')
end
return n
"""

# The attempt is counted only for a running job and a key without an outcome: before the work, in
# Redis, so a worker killed by this very key still leaves a trace.  Returns {state, recorded, attempt}.
_BEGIN_ITEM_LUA = """
local job, outcomes, attempts = KEYS[1], KEYS[2], KEYS[3]
local key, ttl = ARGV[1], tonumber(ARGV[2])
local state = redis.call('HGET', job, 'state')
if not state then return {false, 0, 0} end
if redis.call('HEXISTS', outcomes, key) == 1 then return {state, 1, 0} end
if state ~= 'running' then return {state, 0, 0} end
local attempt = redis.call('HINCRBY', attempts, key, 1)
redis.call('EXPIRE', attempts, ttl)
return {state, 0, attempt}
"""

# Recount from per-key state (the outcomes and claims hashes): after a Redis restart whose AOF lost
# its last second, or whenever the counters are in doubt.
_REBUILD_LUA = """
local job, outcomes, claims = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', job) == 0 then return 0 end
local counts = {succeeded = 0, failed = 0, skipped = 0}
local fails, collisions = {}, 0
local cursor = '0'
repeat
  local page = redis.call('HSCAN', outcomes, cursor, 'COUNT', 1000)
  cursor = page[1]
  for i = 2, #page[2], 2 do
    local outcome = cjson.decode(page[2][i])
    counts[outcome['status']] = counts[outcome['status']] + 1
    if outcome['status'] == 'failed' then
      local code = outcome['error_code'] or 'unknown'
      fails[code] = (fails[code] or 0) + 1
      if code == 'output_collision' then collisions = collisions + 1 end
    end
  end
until cursor == '0'
for _, field in ipairs(redis.call('HKEYS', job)) do
  if string.sub(field, 1, 5) == 'fail:' then redis.call('HDEL', job, field) end
end
for code, n in pairs(fails) do redis.call('HSET', job, 'fail:' .. code, n) end
local total = redis.call('HLEN', claims) + collisions
redis.call('HSET', job, 'succeeded', counts['succeeded'], 'failed', counts['failed'],
           'skipped', counts['skipped'])
redis.call('HSET', job, 'total', total)
return 1
"""

# ARGV: ttl, then (output key, source key) pairs.  Returns {index, owner} for each key already claimed.
_CLAIM_LUA = """
local claims, job = KEYS[1], KEYS[2]
local losers = {}
local added = 0
for i = 3, #ARGV, 2 do
  if redis.call('HSETNX', claims, ARGV[i], ARGV[i + 1]) == 1 then
    added = added + 1
  else
    local owner = redis.call('HGET', claims, ARGV[i])
    if owner ~= ARGV[i + 1] then added = added + 1 end  -- a collision is an item of the job too
    losers[#losers + 1] = (i - 1) / 2
    losers[#losers + 1] = owner
  end
end
-- Counted in the same script as the claims: a call retried after a dropped reply adds nothing twice.
redis.call('HINCRBY', job, 'total', added)
redis.call('HINCRBY', job, 'ignored', tonumber(ARGV[2]))
redis.call('EXPIRE', claims, tonumber(ARGV[1]))
return losers
"""

_INT_FIELDS = ("total", "ignored", "succeeded", "failed", "skipped")


class RedisJobStore:
    """Job state in Redis.  Every key of a job expires `ttl_s` after its last write."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.r = client
        self.ttl_s = ttl_s
        self._record = client.register_script(_RECORD_LUA)
        self._finalize = client.register_script(_FINALIZE_LUA)
        self._unrecord_failed = client.register_script(_UNRECORD_FAILED_LUA)
        self._claim = client.register_script(_CLAIM_LUA)
        self._begin_item = client.register_script(_BEGIN_ITEM_LUA)
        self._rebuild = client.register_script(_REBUILD_LUA)

    @classmethod
    def from_url(cls, url: str, ttl_s: int) -> RedisJobStore:
        client = redis.Redis.from_url(url, health_check_interval=30, socket_keepalive=True)
        return cls(client, ttl_s)

    # -- creation and reading -------------------------------------------------------------------
    def create(self, spec: JobSpec) -> None:
        """Create the job; creating it again with the same definition is allowed (a second enqueue)."""
        key = job_key(spec.job_id)
        now = time.time()
        options = json.dumps(spec.options, sort_keys=True)
        if not self.r.hsetnx(key, "created_at", repr(now)):
            existing = self.get(spec.job_id)
            if existing and (existing.source, existing.out, existing.options) == (
                spec.source,
                spec.out,
                spec.options,
            ):
                return
            raise JobExists(
                f"job {spec.job_id!r} already exists with other inputs or options; pick another --job-id"
            )
        pipe = self.r.pipeline()
        pipe.hset(
            key,
            mapping={
                "source": spec.source,
                "out": spec.out,
                "model": spec.model,
                "queue": spec.queue,
                "options": options,
                "force": int(spec.force),
                "mapping": spec.mapping,
                "state": RUNNING,
                "final": 0,
                "guard_min": spec.guard.min_items,
                "guard_ratio": repr(spec.guard.max_failure_ratio),
                **dict.fromkeys(_INT_FIELDS, 0),
            },
        )
        pipe.expire(key, self.ttl_s)
        pipe.zadd(JOBS_INDEX, {spec.job_id: now})
        # The index would grow forever otherwise; a job older than the TTL has expired anyway.
        pipe.zremrangebyscore(JOBS_INDEX, "-inf", now - self.ttl_s)
        pipe.execute()

    def get(self, job_id: str) -> JobRecord | None:
        raw = self.r.hgetall(job_key(job_id))
        if not raw or b"source" not in raw:
            return None
        data = {_text(k): _text(v) for k, v in raw.items()}

        def number(name: str) -> float | None:
            return float(data[name]) if data.get(name) else None

        def count(name: str) -> int:
            return int(data.get(name, 0))

        return JobRecord(
            job_id=job_id,
            options=json.loads(data.get("options", "{}")),
            created_at=float(data.get("created_at", 0)),
            finished_at=number("finished_at"),
            first_outcome_at=number("first_outcome_at"),
            final=data.get("final") == "1",
            force=data.get("force") == "1",
            failures_by_code={
                k.removeprefix(FAIL_PREFIX): int(v)
                for k, v in data.items()
                if k.startswith(FAIL_PREFIX) and int(v)
            },
            report_key=data.get("report_key") or None,
            stop_reason=data.get("stop_reason") or None,
            mapping=data.get("mapping", "relative"),
            source=data.get("source", ""),
            out=data.get("out", ""),
            model=data.get("model", ""),
            queue=data.get("queue", ""),
            state=data.get("state", ""),
            total=count("total"),
            ignored=count("ignored"),
            succeeded=count("succeeded"),
            failed=count("failed"),
            skipped=count("skipped"),
        )

    def recent(self, limit: int = 20) -> list[JobRecord]:
        # Without scores every member is a plain id; redis-py's return type also allows scored pairs.
        ids = [_text(i) for i in self.r.zrevrange(JOBS_INDEX, 0, limit - 1) if isinstance(i, bytes | str)]
        records = [self.get(job_id) for job_id in ids]
        return [r for r in records if r is not None]

    # -- enqueueing -------------------------------------------------------------------------------
    def claim_outputs(
        self, job_id: str, pairs: Sequence[tuple[str, str]], ignored: int = 0
    ) -> list[tuple[Claim, str | None]]:
        """Claim each output key for its source key and count the job's new items: one script call."""
        args: list[str | int] = [self.ttl_s, ignored]
        for source_key, out_key in pairs:
            args += [out_key, source_key]
        losers = self._claim(keys=[claims_key(job_id), job_key(job_id)], args=args)
        results: list[tuple[Claim, str | None]] = [(Claim.NEW, None)] * len(pairs)
        for index, owner_raw in zip(losers[::2], losers[1::2], strict=True):
            i = int(index) - 1
            owner = _text(owner_raw)
            results[i] = (Claim.AGAIN, None) if owner == pairs[i][0] else (Claim.COLLISION, owner)
        return results

    def finalize(self, job_id: str) -> bool:
        return bool(self._finalize(keys=[job_key(job_id)], args=[repr(time.time())]))

    # -- outcomes ---------------------------------------------------------------------------------
    def record(self, job_id: str, outcome: Outcome) -> tuple[bool, bool]:
        """(recorded, completed): recorded is False for a key that already had its outcome."""
        recorded, completed, _stopped = self._record(
            keys=[job_key(job_id), outcomes_key(job_id)],
            args=[
                outcome.key,
                outcome.status,
                outcome.to_json(),
                repr(time.time()),
                self.ttl_s,
                outcome.error_code or "unknown",
            ],
        )
        return bool(recorded), bool(completed)

    def is_recorded(self, job_id: str, key: str) -> bool:
        return bool(self.r.hexists(outcomes_key(job_id), key))

    def begin_item(self, job_id: str, key: str) -> ItemStart:
        state, recorded, attempt = self._begin_item(
            keys=[job_key(job_id), outcomes_key(job_id), attempts_key(job_id)], args=[key, self.ttl_s]
        )
        return ItemStart(_text(state) if state else None, bool(recorded), int(attempt))

    def add_dead_letter(self, job_id: str, key: str, attempts: int, reason: str) -> None:
        entry = json.dumps({"key": key, "attempts": attempts, "reason": reason, "at": time.time()})
        pipe = self.r.pipeline()
        pipe.rpush(dead_key(job_id), entry)
        pipe.expire(dead_key(job_id), self.ttl_s)
        pipe.execute()

    def forget_attempt(self, job_id: str, key: str) -> None:
        self.r.hincrby(attempts_key(job_id), key, -1)

    def add_rejected(self, task_id: str, reason: str, payload: str) -> None:
        """Keep the last REJECTED_KEEP refused task messages for operators (never executed)."""
        entry = json.dumps(
            {"task_id": task_id, "reason": reason[:2000], "payload": payload[:500], "at": time.time()}
        )
        pipe = self.r.pipeline()
        pipe.lpush(REJECTED_KEY, entry)
        pipe.ltrim(REJECTED_KEY, 0, REJECTED_KEEP - 1)
        pipe.execute()

    def rejected(self) -> list[dict[str, object]]:
        return [json.loads(entry) for entry in self.r.lrange(REJECTED_KEY, 0, -1)]

    def dead_letters(self, job_id: str) -> list[dict[str, object]]:
        return [json.loads(entry) for entry in self.r.lrange(dead_key(job_id), 0, -1)]

    def rebuild_counts(self, job_id: str) -> bool:
        """Recount the job from its per-key outcomes and claims; False when the job does not exist."""
        return bool(self._rebuild(keys=[job_key(job_id), outcomes_key(job_id), claims_key(job_id)]))

    def state(self, job_id: str) -> str | None:
        value = self.r.hget(job_key(job_id), "state")
        return _text(value) if value is not None else None

    def add_rate_sample(self, model: str, item_ms: float) -> None:
        """Remember how long an item took on this fleet, for dry-run estimates."""
        key = rate_key(model)
        pipe = self.r.pipeline(transaction=False)
        pipe.lpush(key, round(item_ms, 1))
        pipe.ltrim(key, 0, RATE_SAMPLES - 1)
        pipe.expire(key, RATE_TTL_S)
        pipe.execute()

    def median_item_ms(self, model: str) -> float | None:
        samples = sorted(float(v) for v in self.r.lrange(rate_key(model), 0, -1))
        return samples[len(samples) // 2] if samples else None

    def iter_outcomes(self, job_id: str) -> Iterator[Outcome]:
        for _key, line in self.r.hscan_iter(outcomes_key(job_id), count=1000):
            yield Outcome.from_json(line)

    def set_report(self, job_id: str, report_key: str) -> None:
        self.r.hset(job_key(job_id), "report_key", report_key)

    # -- lifecycle --------------------------------------------------------------------------------
    def set_state(
        self, job_id: str, state: str, *, only_from: Sequence[str], reason: str | None = None
    ) -> bool:
        """Move to `state` if the job is in one of `only_from` (checked and set atomically)."""
        key = job_key(job_id)
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    current = pipe.hget(key, "state")
                    if current is None or _text(current) not in only_from:
                        pipe.reset()
                        return False
                    counts = pipe.hmget(key, "succeeded", "failed")
                    pipe.multi()
                    pipe.hset(key, "state", state)
                    if reason is not None:
                        pipe.hset(key, "stop_reason", reason)
                    if state in (DONE, CANCELLED):
                        pipe.hset(key, "finished_at", repr(time.time()))
                    if state == RUNNING:
                        # Re-arm the failure guard: only items processed from now on count.
                        succeeded, failed = (int(v or 0) for v in counts)
                        pipe.hset(
                            key,
                            mapping={"guard_base_processed": succeeded + failed, "guard_base_failed": failed},
                        )
                        pipe.hdel(key, "stop_reason")
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    def unrecord_failed(self, job_id: str, keys: Sequence[str]) -> int:
        """Forget these keys' failed outcomes so they can run again; returns how many were forgotten."""
        return int(self._unrecord_failed(keys=[job_key(job_id), outcomes_key(job_id)], args=list(keys)))

    def failed_keys(self, job_id: str) -> Iterator[Outcome]:
        for outcome in self.iter_outcomes(job_id):
            if outcome.status == "failed":
                yield outcome

    def park(self, job_id: str, payload: str) -> None:
        """Hold a task of a stopped job until `resume` or `retry` re-publishes it."""
        pipe = self.r.pipeline()
        pipe.rpush(parked_key(job_id), payload)
        pipe.expire(parked_key(job_id), self.ttl_s)
        pipe.execute()

    def take_parked(self, job_id: str, chunk: int = 500) -> Iterator[str]:
        while True:
            items = self.r.lpop(parked_key(job_id), chunk)
            if not items:
                return
            assert isinstance(items, list)  # with a count, LPOP answers a list (never one bare item)
            for item in items:
                yield _text(item)


class MemoryJobStore:
    """The same semantics in process memory, for embedded `cutout run`."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobRecord] = {}
        self.claims: dict[str, dict[str, str]] = {}
        self.outcomes: dict[str, dict[str, Outcome]] = {}

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
        )
        self.claims[spec.job_id], self.outcomes[spec.job_id] = {}, {}

    def get(self, job_id: str) -> JobRecord | None:
        return self.jobs.get(job_id)

    def claim_outputs(
        self, job_id: str, pairs: Sequence[tuple[str, str]], ignored: int = 0
    ) -> list[tuple[Claim, str | None]]:
        claims = self.claims[job_id]
        results: list[tuple[Claim, str | None]] = []
        for source_key, out_key in pairs:
            owner = claims.get(out_key)
            if owner is None:
                claims[out_key] = source_key
                results.append((Claim.NEW, None))
            elif owner == source_key:
                results.append((Claim.AGAIN, None))
            else:
                results.append((Claim.COLLISION, owner))
        job = self.jobs[job_id]
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
        if outcome.key in outcomes:
            return False, False
        outcomes[outcome.key] = outcome
        job = self.jobs[job_id]
        setattr(job, outcome.status, getattr(job, outcome.status) + 1)
        if outcome.status == "failed":
            code = outcome.error_code or "unknown"
            job.failures_by_code[code] = job.failures_by_code.get(code, 0) + 1
        job.first_outcome_at = job.first_outcome_at or time.time()
        return True, self._complete_if_done(job)

    def is_recorded(self, job_id: str, key: str) -> bool:
        return key in self.outcomes[job_id]

    def begin_item(self, job_id: str, key: str) -> ItemStart:
        job = self.jobs.get(job_id)
        if job is None:
            return ItemStart(None, False, 0)
        if key in self.outcomes[job_id]:
            return ItemStart(job.state, True, 0)
        return ItemStart(job.state, False, 1)  # one process, no redelivery: every key runs once

    def add_dead_letter(self, job_id: str, key: str, attempts: int, reason: str) -> None:
        """Embedded runs have no redelivery, so nothing can become poison."""

    def forget_attempt(self, job_id: str, key: str) -> None:
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
