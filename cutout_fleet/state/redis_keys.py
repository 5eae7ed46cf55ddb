"""Every Redis key name this project writes, in one place (Celery's queues are named in settings).

A job's keys share the `{job_id}` hash tag, so a Redis Cluster keeps them in one slot and one Lua
script may touch them all.  Fields inside a job's hashes are item ids (`cutout_fleet.items.item_id`),
except the claims hash, which maps an output key to the item id that owns it.
"""

from __future__ import annotations

KEY_PREFIX = "cf"
JOBS_INDEX = f"{KEY_PREFIX}:jobs"  # zset job_id -> created_at
REJECTED_KEY = f"{KEY_PREFIX}:rejected"  # list of refused task messages (JSON), newest first
REJECTED_KEEP = 1000
FAIL_PREFIX = "fail:"  # job hash fields counting failures by error code (the Lua scripts spell it too)
DECISION_PREFIX = "decision:"  # job-hash counter per safety decision: decision:<allow|review|block>

RATE_SAMPLES = 200
RATE_TTL_S = 7 * 24 * 3600

# Leases (dead-worker recovery): who is alive, and which tasks each holds.
WORKERS_KEY = f"{KEY_PREFIX}:workers"  # zset holder id -> last heartbeat (Redis server time, seconds)
HELD_KEY = f"{KEY_PREFIX}:held"  # hash task id -> HeldTask JSON (holder, job, queue, payload, since)
MAINTENANCE_LOCK = f"{KEY_PREFIX}:maintenance"  # one recovery pass at a time, fleet-wide

# kombu's Redis transport (not ours; read by `cutout requeue`): delivery tag -> [message, exchange,
# routing key] for every message a worker has reserved and not acked yet.
KOMBU_UNACKED_KEY = "unacked"

ENVELOPE_PROBE_PREFIX = f"{KEY_PREFIX}:envelope-probe:"  # scratch queue for reading Celery's envelope
DRY_RUN_JOB_PREFIX = "dryrun-"  # job id of a dry run's scratch claims, deleted when it ends


def job_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{{{job_id}}}"  # hash: definition, state, counters


def outcomes_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{{{job_id}}}:outcomes"  # hash item id -> Outcome JSON (once per item)


def claims_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{{{job_id}}}:claims"  # hash output key -> item id of its owner


def claim_call_key(job_id: str, call_id: str) -> str:
    return f"{KEY_PREFIX}:job:{{{job_id}}}:claim-call:{call_id}"  # one claim call's answer, 10 min


def attempts_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{{{job_id}}}:attempts"  # hash item id -> times work on it began


def dead_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{{{job_id}}}:dead"  # list of poison items (JSON), the dead-letter record


def parked_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{{{job_id}}}:parked"  # list of task payloads held while stopped


def job_keys(job_id: str) -> list[str]:
    """Every key one job owns."""
    return [
        job_key(job_id),
        outcomes_key(job_id),
        claims_key(job_id),
        parked_key(job_id),
        attempts_key(job_id),
        dead_key(job_id),
    ]


def rate_key(model: str) -> str:
    return f"{KEY_PREFIX}:rate:{model}"  # recent per-item milliseconds on this fleet


def envelope_probe_keys(probe_queue: str) -> list[str]:
    """The probe queue and the binding sets kombu creates beside it: all removed after the probe."""
    return [probe_queue, f"_kombu.binding.{probe_queue}", f"_kombu.binding_permanent.{probe_queue}"]
