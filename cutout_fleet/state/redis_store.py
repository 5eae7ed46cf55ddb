"""`RedisJobStore`: job state for the fleet, shared by the producer and every worker.

Counting is exact under redelivery because an outcome is recorded at most once per item (HSETNX of
the item's outcome line, in one Lua script with the counters).  A job is done when its total is
final and every item has an outcome; exactly one caller (the last outcome, the producer's finalize,
or a resume) is told "you completed it", and that caller has the report written.

States: running -> done | cancelled | stopped (failure guard; `resume` -> running).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator, Sequence

import redis
from redis.typing import EncodableT, FieldT

from cutout_fleet.errors import JobExists
from cutout_fleet.outcomes import Outcome
from cutout_fleet.state.job_hash import job_record, new_job_fields, text
from cutout_fleet.state.records import (
    CANCELLED,
    DONE,
    RUNNING,
    Claim,
    ItemStart,
    JobRecord,
    JobSpec,
    Notice,
)
from cutout_fleet.state.redis_keys import (
    JOBS_INDEX,
    RATE_SAMPLES,
    RATE_TTL_S,
    REJECTED_KEEP,
    REJECTED_KEY,
    attempts_key,
    claim_call_key,
    claims_key,
    dead_key,
    job_key,
    job_keys,
    outcomes_key,
    parked_key,
    rate_key,
)
from cutout_fleet.state.scripts import JobScripts


class RedisJobStore:
    """Job state in Redis.  Every key of a job expires `ttl_s` after its last write."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self._redis = client
        self.ttl_s = ttl_s
        self._scripts = JobScripts.register(client)

    @classmethod
    def from_url(cls, url: str, ttl_s: int) -> RedisJobStore:
        client = redis.Redis.from_url(url, health_check_interval=30, socket_keepalive=True)
        return cls(client, ttl_s)

    # -- creation and reading -------------------------------------------------------------------
    def create(self, spec: JobSpec) -> None:
        """Create the job; creating it again with the same definition is allowed (a second enqueue)."""
        key = job_key(spec.job_id)
        now = time.time()
        if not self._redis.hsetnx(key, "created_at", repr(now)):
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
        pipe = self._redis.pipeline()
        pipe.hset(key, mapping=new_job_fields(spec))
        pipe.expire(key, self.ttl_s)
        pipe.zadd(JOBS_INDEX, {spec.job_id: now})
        # The index would grow forever otherwise; a job older than the TTL has expired anyway.
        pipe.zremrangebyscore(JOBS_INDEX, "-inf", now - self.ttl_s)
        pipe.execute()

    def get(self, job_id: str) -> JobRecord | None:
        raw = self._redis.hgetall(job_key(job_id))
        if not raw or b"source" not in raw:
            return None
        return job_record(job_id, {text(k): text(v) for k, v in raw.items()})

    def recent(self, limit: int = 20) -> list[JobRecord]:
        # Without scores every member is a plain id; redis-py's return type also allows scored pairs.
        ids = [text(i) for i in self._redis.zrevrange(JOBS_INDEX, 0, limit - 1) if isinstance(i, bytes | str)]
        records = [self.get(job_id) for job_id in ids]
        return [r for r in records if r is not None]

    def state(self, job_id: str) -> str | None:
        value = self._redis.hget(job_key(job_id), "state")
        return text(value) if value is not None else None

    def delete_job(self, job_id: str) -> None:
        """Remove every key of the job and its index entry (a dry run's scratch job)."""
        replays = list(self._redis.scan_iter(match=claim_call_key(job_id, "*"), count=1000))
        pipe = self._redis.pipeline()
        pipe.delete(*job_keys(job_id), *replays)
        pipe.zrem(JOBS_INDEX, job_id)
        pipe.execute()

    # -- enqueueing -------------------------------------------------------------------------------
    def claim_outputs(
        self, job_id: str, pairs: Sequence[tuple[str, str]], ignored: int = 0, *, count: bool = True
    ) -> list[tuple[Claim, str | None]]:
        """Claim each output key for its (item id, output key) pair and count the job's new items:
        one script call.  A collision names the item id that owns the output.  `count` False claims
        further outputs of items already counted (a mask beside its cutout)."""
        args: list[str | int] = [self.ttl_s, ignored, "1" if count else "0"]
        for item, out_key in pairs:
            args += [out_key, item]
        call_key = claim_call_key(job_id, secrets.token_hex(8))  # the same on redis-py's retries
        losers = self._scripts.claim(keys=[claims_key(job_id), job_key(job_id), call_key], args=args)
        results: list[tuple[Claim, str | None]] = [(Claim.NEW, None)] * len(pairs)
        for index, owner_raw in zip(losers[::2], losers[1::2], strict=True):
            i = int(index) - 1
            owner = text(owner_raw)
            results[i] = (Claim.AGAIN, None) if owner == pairs[i][0] else (Claim.COLLISION, owner)
        return results

    def finalize(self, job_id: str) -> bool:
        return bool(self._scripts.finalize(keys=[job_key(job_id)], args=[repr(time.time())]))

    # -- items and outcomes -----------------------------------------------------------------------
    def begin_item(self, job_id: str, item: str) -> ItemStart:
        state, recorded, attempt = self._scripts.begin_item(
            keys=[job_key(job_id), outcomes_key(job_id), attempts_key(job_id)], args=[item, self.ttl_s]
        )
        return ItemStart(text(state) if state else None, bool(recorded), int(attempt))

    def record(self, job_id: str, outcome: Outcome) -> tuple[bool, bool]:
        """(recorded, completed): recorded is False for an item that already had its outcome."""
        recorded, completed, _stopped = self._scripts.record(
            keys=[job_key(job_id), outcomes_key(job_id)],
            args=[
                outcome.item_id,
                outcome.status,
                outcome.to_json(),
                repr(time.time()),
                self.ttl_s,
                outcome.error_code or "unknown",
                outcome.decision or "",
            ],
        )
        return bool(recorded), bool(completed)

    def is_recorded(self, job_id: str, item: str) -> bool:
        return bool(self._redis.hexists(outcomes_key(job_id), item))

    def forget_attempt(self, job_id: str, item: str) -> None:
        self._redis.hincrby(attempts_key(job_id), item, -1)

    def add_dead_letter(self, job_id: str, item: str, attempts: int, reason: str) -> None:
        entry = json.dumps({"item": item, "attempts": attempts, "reason": reason, "at": time.time()})
        pipe = self._redis.pipeline()
        pipe.rpush(dead_key(job_id), entry)
        pipe.expire(dead_key(job_id), self.ttl_s)
        pipe.execute()

    def attempts(self, job_id: str) -> dict[str, int]:
        """Item id -> times work on it began (operators: which items keep killing workers)."""
        raw = self._redis.hgetall(attempts_key(job_id))
        return {text(item): int(count) for item, count in raw.items()}

    def close(self) -> None:
        self._redis.close()

    def dead_letters(self, job_id: str) -> list[dict[str, object]]:
        """The job's poison items: {"item": item id, "attempts", "reason", "at"}, oldest first."""
        return [json.loads(entry) for entry in self._redis.lrange(dead_key(job_id), 0, -1)]

    def iter_outcomes(self, job_id: str) -> Iterator[Outcome]:
        for _item, line in self._redis.hscan_iter(outcomes_key(job_id), count=1000):
            yield Outcome.from_json(line)

    def failed_outcomes(self, job_id: str) -> Iterator[Outcome]:
        for outcome in self.iter_outcomes(job_id):
            if outcome.status == "failed":
                yield outcome

    def unrecord_failed(self, job_id: str, items: Sequence[str]) -> int:
        """Forget these items' failed outcomes so they can run again; returns how many were forgotten."""
        keys = [job_key(job_id), outcomes_key(job_id)]
        return int(self._scripts.unrecord_failed(keys=keys, args=list(items)))

    def rebuild_counts(self, job_id: str) -> bool:
        """Recount the job from its per-item outcomes and claims; False when the job does not exist."""
        keys = [job_key(job_id), outcomes_key(job_id), claims_key(job_id)]
        return bool(self._scripts.rebuild(keys=keys))

    def set_report(self, job_id: str, report_key: str) -> None:
        self._redis.hset(job_key(job_id), "report_key", report_key)

    def set_notice(self, job_id: str, notice: Notice) -> None:
        """Record how the job's completion notice went (`cutout status` shows it)."""
        fields: dict[FieldT, EncodableT] = {
            "notify_status": notice.status,
            "notify_attempts": notice.attempts,
            "notify_error": notice.error or "",
            "notify_at": repr(notice.at),
        }
        self._redis.hset(job_key(job_id), mapping=fields)

    # -- lifecycle --------------------------------------------------------------------------------
    def set_state(
        self, job_id: str, state: str, *, only_from: Sequence[str], reason: str | None = None
    ) -> bool:
        """Move to `state` if the job is in one of `only_from` (checked and set atomically)."""
        key = job_key(job_id)
        with self._redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]  # redis-py leaves Pipeline.watch untyped
                    current = pipe.hget(key, "state")
                    if current is None or text(current) not in only_from:
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

    def disable_guard(self, job_id: str) -> None:
        """Turn the failure guard off for the rest of this job (`cutout resume --no-guard`)."""
        self._redis.hset(job_key(job_id), "guard_min", 0)

    def park(self, job_id: str, payload: str) -> None:
        """Hold a task of a stopped job until `resume` or `retry` re-publishes it."""
        pipe = self._redis.pipeline()
        pipe.rpush(parked_key(job_id), payload)
        pipe.expire(parked_key(job_id), self.ttl_s)
        pipe.execute()

    def take_parked(self, job_id: str, chunk: int = 500) -> Iterator[str]:
        while True:
            items = self._redis.lpop(parked_key(job_id), chunk)
            if not items:
                return
            assert isinstance(items, list)  # with a count, LPOP answers a list (never one bare item)
            for item in items:
                yield text(item)

    # -- fleet-wide records -----------------------------------------------------------------------
    def add_rejected(self, task_id: str, reason: str, payload: str) -> None:
        """Keep the last REJECTED_KEEP refused task messages for operators (never executed)."""
        entry = json.dumps(
            {"task_id": task_id, "reason": reason[:2000], "payload": payload[:500], "at": time.time()}
        )
        pipe = self._redis.pipeline()
        pipe.lpush(REJECTED_KEY, entry)
        pipe.ltrim(REJECTED_KEY, 0, REJECTED_KEEP - 1)
        pipe.execute()

    def rejected(self) -> list[dict[str, object]]:
        return [json.loads(entry) for entry in self._redis.lrange(REJECTED_KEY, 0, -1)]

    def add_rate_sample(self, model: str, item_ms: float) -> None:
        """Remember how long an item took on this fleet, for dry-run estimates."""
        key = rate_key(model)
        pipe = self._redis.pipeline(transaction=False)
        pipe.lpush(key, round(item_ms, 1))
        pipe.ltrim(key, 0, RATE_SAMPLES - 1)
        pipe.expire(key, RATE_TTL_S)
        pipe.execute()

    def median_item_ms(self, model: str) -> float | None:
        samples = sorted(float(v) for v in self._redis.lrange(rate_key(model), 0, -1))
        return samples[len(samples) // 2] if samples else None

    def queue_depths(self, queues: Sequence[str]) -> dict[str, int]:
        """Messages waiting in each Celery queue: the broker lists live in this same Redis."""
        pipe = self._redis.pipeline(transaction=False)
        for queue in queues:
            pipe.llen(queue)
        return {queue: int(depth) for queue, depth in zip(queues, pipe.execute(), strict=True)}
