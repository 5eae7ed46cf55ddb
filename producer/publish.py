"""Publishing task messages to the Celery queues (JSON), reusing one broker connection per call."""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery

from cutout_fleet.messages import TASK_FINALIZE_JOB, TASK_PROCESS_BATCH, TaskMessage

# Hard limit = soft limit + this grace, so the soft limit can record a clean "timeout" outcome.
HARD_LIMIT_GRACE_S = 60.0


class CeleryPublisher:
    def __init__(self, app: Celery, item_time_limit_s: float) -> None:
        self.app = app
        self.item_time_limit_s = item_time_limit_s

    def publish(self, queue: str, messages: Sequence[TaskMessage]) -> None:
        with self.app.producer_or_acquire() as producer:
            for message in messages:
                soft = self.item_time_limit_s * len(message.keys)
                self.app.send_task(
                    TASK_PROCESS_BATCH,
                    args=[message.model_dump(mode="json")],
                    queue=queue,
                    soft_time_limit=soft,
                    time_limit=soft + HARD_LIMIT_GRACE_S,
                    producer=producer,
                )

    def job_complete(self, job_id: str, queue: str) -> None:
        self.app.send_task(TASK_FINALIZE_JOB, args=[job_id], queue=queue)


def producer_app(redis_url: str) -> Celery:
    """A light Celery app for sending only: the producer never imports the worker or its models."""
    app = Celery("cutout_fleet.producer")
    app.conf.update(
        broker_url=redis_url,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        task_send_sent_event=True,
    )
    return app
