"""What the producer can learn about the live fleet from Celery's control channel."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import Celery

INSPECT_TIMEOUT_S = 1.0


def live_worker_processes(redis_url: str, queue: str, broker_options: Mapping[str, Any] | None = None) -> int:
    """Pool processes of the workers that answer now and consume `queue` (0 when none answer)."""
    app = Celery(broker=redis_url)
    app.conf.update(
        accept_content=["json"], task_serializer="json", result_serializer="json", **(broker_options or {})
    )
    try:
        inspect = app.control.inspect(timeout=INSPECT_TIMEOUT_S)
        queues = inspect.active_queues() or {}
        stats = inspect.stats() or {}
    finally:
        app.close()
    total = 0
    for worker, consumed in queues.items():
        if any(q.get("name") == queue for q in consumed):
            total += int(stats.get(worker, {}).get("pool", {}).get("max-concurrency", 1))
    return total
