"""`cutout run`: the whole job on this machine, no Redis, no S3 server, the same pipeline code."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cutout_fleet.catalog import load_catalog
from cutout_fleet.config.settings import Settings
from cutout_fleet.errors import TransientError
from cutout_fleet.messages import TaskMessage
from cutout_fleet.notify import notify_job
from cutout_fleet.options import ImageOptions
from cutout_fleet.producer.enqueue import EnqueueRequest, enqueue_job
from cutout_fleet.producer.listing import iter_listing_chunks, output_inside
from cutout_fleet.producer.publish import CollectingPublisher
from cutout_fleet.reports import write_report
from cutout_fleet.state import JobRecord, MemoryJobStore
from cutout_fleet.storage import Location, StorageOpener
from cutout_fleet.worker.batch import BatchRuntime, fail_items, run_batch
from cutout_fleet.worker.sessions import SessionPool, check_models_installed

EMBEDDED_QUEUE = "embedded"
# A local job touches two locations (source and output).
EMBEDDED_STORAGES_KEPT = 8


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
    notify_url: str | None = None,
) -> EmbeddedResult:
    """List SOURCE, process every image into OUT, write OUT/_reports/JOB.*; returns the job record.

    `on_total` hears the number of images once they are listed; `on_item` hears each finished batch.
    The completion notice goes to `notify_url`, else CUTOUT_NOTIFY__URL, when either is set.
    """
    store = MemoryJobStore()
    open_storage = StorageOpener(settings.s3, max_kept=EMBEDDED_STORAGES_KEPT)
    publisher = CollectingPublisher()
    runtime = _local_runtime(settings, options.model, store, open_storage, publisher.job_complete)
    request = EnqueueRequest(
        source, out, options, lambda _model: EMBEDDED_QUEUE, settings.items_per_task, job_id
    )
    chunks = iter_listing_chunks(
        open_storage(source.uri), source.prefix, exclude_prefix=output_inside(source, out)
    )
    job_id = enqueue_job(request, store, chunks, publisher).job_id
    if on_total:
        on_total(sum(len(message.keys) for message in publisher.messages))
    for message in publisher.messages:
        _run_here(message, runtime)
        if on_item:
            on_item(len(message.keys))
    report_key = write_report(store, open_storage(out.uri), job_id) if publisher.completed else None
    if report_key:
        notify_job(store, job_id, settings.notify, notify_url)
    job = store.get(job_id)
    assert job is not None  # a memory store forgets nothing
    return EmbeddedResult(job, report_key)


def _local_runtime(
    settings: Settings,
    model: str,
    store: MemoryJobStore,
    open_storage: StorageOpener,
    on_job_complete: Callable[[str, str], None],
) -> BatchRuntime:
    """The worker's collaborators, in this process, for one model (refused here if it is not installed)."""
    # Sessions for the job's model only: the worker settings' list names the fleet's models.
    settings = settings.model_copy(update={"worker": settings.worker.model_copy(update={"models": [model]})})
    catalog = load_catalog(settings)
    catalog.get(model)
    check_models_installed(settings, catalog)
    return BatchRuntime(
        settings=settings,
        catalog=catalog,
        store=store,
        sessions=SessionPool(settings, catalog),
        open_storage=open_storage,
        on_job_complete=on_job_complete,
    )


def _run_here(message: TaskMessage, runtime: BatchRuntime) -> None:
    """Run one task in this process; an item a worker would try again later fails now.

    botocore already retried with backoff, and here there is no queue to come back to later (nor
    a time limit, so nothing is handed back to be sent again).
    """
    result = run_batch(message, runtime, EMBEDDED_QUEUE)
    if result.retry:
        error = result.retry_error or TransientError("a passing fault")
        fail_items(message, runtime, EMBEDDED_QUEUE, result.retry, error.code, str(error))
