"""A job's Redis hash: the fields a new job starts with, and a `JobRecord` read back from them.

The Lua scripts (`*.lua`) read and write the same fields: counters, `final`, `state`, the failure
guard's limits and baseline, `fail:<code>` counters and `decision:<allow|review|block>` counters.
"""

from __future__ import annotations

import json

from redis.typing import EncodableT, FieldT

from cutout_fleet.state.records import RUNNING, JobRecord, JobSpec
from cutout_fleet.state.redis_keys import DECISION_PREFIX, FAIL_PREFIX


def text(value: bytes | str) -> str:
    """A Redis reply as text: our clients answer bytes (decode_responses is off), the types allow str."""
    return value.decode() if isinstance(value, bytes) else value


INT_FIELDS = ("total", "ignored", "succeeded", "failed", "skipped")


def new_job_fields(spec: JobSpec) -> dict[FieldT, EncodableT]:
    """The hash of a job just created: running, nothing counted, its total not final yet."""
    return {
        "source": spec.source,
        "out": spec.out,
        "model": spec.model,
        "queue": spec.queue,
        "options": json.dumps(spec.options, sort_keys=True),
        "force": int(spec.force),
        "mapping": spec.mapping,
        "state": RUNNING,
        "final": 0,
        "guard_min": spec.guard.min_items,
        "guard_ratio": repr(spec.guard.max_failure_ratio),
        **dict.fromkeys(INT_FIELDS, 0),
        **({"notify_url": spec.notify_url} if spec.notify_url else {}),
    }


def job_record(job_id: str, data: dict[str, str]) -> JobRecord:
    """The job's record from its hash (decoded to text); absent fields read as their defaults."""

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
        decisions={
            k.removeprefix(DECISION_PREFIX): int(v)
            for k, v in data.items()
            if k.startswith(DECISION_PREFIX) and int(v)
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
        notify_url=data.get("notify_url") or None,
        notify_status=data.get("notify_status") or None,
        notify_attempts=count("notify_attempts"),
        notify_error=data.get("notify_error") or None,
        notify_at=number("notify_at"),
    )
