"""`cutout run`: the whole job on this machine, no Redis, no S3 server, the same pipeline code."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from cutout_fleet.catalog import load_catalog
from cutout_fleet.config.settings import Settings
from cutout_fleet.errors import TransientError
from cutout_fleet.messages import TaskMessage
from cutout_fleet.options import ImageOptions
from cutout_fleet.producer.enqueue import EnqueueRequest, enqueue_job
from cutout_fleet.producer.listing import iter_listing_chunks, output_inside
from cutout_fleet.reports import write_report
from cutout_fleet.state import JobRecord, MemoryJobStore
from cutout_fleet.storage import Location, Storage, open_storage, parse_location
from cutout_fleet.worker.batch import BatchRuntime, fail_remaining, run_batch
from cutout_fleet.worker.sessions import SessionPool, check_models_installed

EMBEDDED_QUEUE = "embedded"


@dataclass
class _CollectingPublisher:
    """Keeps the tasks the producer logic would have queued, to run them here, in order."""

    messages: list[TaskMessage] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)

    def publish(self, queue: str, messages: Sequence[TaskMessage]) -> None:
        self.messages.extend(messages)

    def job_complete(self, job_id: str, queue: str) -> None:
        self.completed.append(job_id)


@dataclass(frozen=True)
class EmbeddedResult:
    job: JobRecord
    report_key: str | None


def run_embedded(
    source: Location,
    out: Location,
    options: ImageOptions,
    settings: Settings,
    *,
    job_id: str | None = None,
    on_total: Callable[[int], None] | None = None,
    on_item: Callable[[int], None] | None = None,
) -> EmbeddedResult:
    """List SOURCE, process every image into OUT, write OUT/_reports/JOB.*; returns the job record."""
    settings = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"models": [options.model]})}
    )
    catalog = load_catalog(settings)
    catalog.get(options.model)
    check_models_installed(settings, catalog)
    store = MemoryJobStore()

    @lru_cache(maxsize=8)
    def storage_for(uri: str) -> Storage:
        return open_storage(parse_location(uri), settings.s3)

    publisher = _CollectingPublisher()
    source_storage = storage_for(source.uri)
    result = enqueue_job(
        EnqueueRequest(source, out, options, lambda _model: EMBEDDED_QUEUE, settings.items_per_task, job_id),
        store,
        iter_listing_chunks(source_storage, source.prefix, exclude_prefix=output_inside(source, out)),
        publisher,
    )
    if on_total:
        on_total(sum(len(m.keys) for m in publisher.messages))
    runtime = BatchRuntime(
        settings=settings,
        catalog=catalog,
        store=store,
        sessions=SessionPool(settings, catalog),
        open_storage=storage_for,
        on_job_complete=lambda job_id, queue: publisher.job_complete(job_id, queue),
    )
    for message in publisher.messages:
        try:
            run_batch(message, runtime, EMBEDDED_QUEUE)
        except TransientError as exc:
            # botocore already retried with backoff; here there is no queue to come back to later.
            fail_remaining(message, runtime, EMBEDDED_QUEUE, exc.code, str(exc))
        if on_item:
            on_item(len(message.keys))
    report_key = None
    if publisher.completed:
        report_key = write_report(store, storage_for(out.uri), result.job_id)
    job = store.get(result.job_id)
    assert job is not None
    return EmbeddedResult(job, report_key)
