"""Job state: counts, per-item outcomes, claims, lifecycle.  Redis for the fleet, memory for `cutout run`.

- `records`: what a job is (`JobSpec`, `JobRecord`, states) and what the stores answer.
- `protocol`: `JobStore`, the interface the producer, workers and reports use.
- `redis_keys`: every Redis key name; `job_hash`: the fields of a job's hash.
- `scripts` and `*.lua`: the atomic steps of the accounting.
- `redis_store`: `RedisJobStore`; `memory_store`: `MemoryJobStore`, the same semantics in memory.

Every item is named by its item id (`cutout_fleet.items.item_id`) in claims, outcomes, attempts
and dead letters.
"""

from cutout_fleet.errors import JobExists
from cutout_fleet.state.memory_store import MemoryJobStore
from cutout_fleet.state.protocol import JobStore
from cutout_fleet.state.records import (
    CANCELLED,
    DONE,
    RUNNING,
    STOPPED,
    Claim,
    FailureGuard,
    ItemStart,
    JobRecord,
    JobSpec,
    new_job_id,
)
from cutout_fleet.state.redis_keys import (
    FAIL_PREFIX,
    JOBS_INDEX,
    KEY_PREFIX,
    RATE_SAMPLES,
    RATE_TTL_S,
    REJECTED_KEEP,
    REJECTED_KEY,
    attempts_key,
    claims_key,
    dead_key,
    job_key,
    job_keys,
    outcomes_key,
    parked_key,
    rate_key,
)
from cutout_fleet.state.redis_store import RedisJobStore

__all__ = [
    "CANCELLED",
    "DONE",
    "FAIL_PREFIX",
    "JOBS_INDEX",
    "KEY_PREFIX",
    "RATE_SAMPLES",
    "RATE_TTL_S",
    "REJECTED_KEEP",
    "REJECTED_KEY",
    "RUNNING",
    "STOPPED",
    "Claim",
    "FailureGuard",
    "ItemStart",
    "JobExists",
    "JobRecord",
    "JobSpec",
    "JobStore",
    "MemoryJobStore",
    "RedisJobStore",
    "attempts_key",
    "claims_key",
    "dead_key",
    "job_key",
    "job_keys",
    "new_job_id",
    "outcomes_key",
    "parked_key",
    "rate_key",
]
