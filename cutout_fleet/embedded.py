"""`cutout run`: the whole job on this machine, no Redis, no S3 server, the same pipeline code.

Three things differ from the fleet.  The output may not be the source itself (the cutouts would replace
their sources).  Files in a source folder that are not regular files are left out and reported.  And
each item's image pipeline runs in a child process (worker/isolated_cutter.py) that is killed at the
item's hard time limit, the limit a fleet worker's pool enforces.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cutout_fleet.catalog import load_catalog
from cutout_fleet.config.settings import Settings
from cutout_fleet.errors import TransientError
from cutout_fleet.messages import TaskMessage
from cutout_fleet.notify import notify_job
from cutout_fleet.options import ImageOptions
from cutout_fleet.producer.enqueue import EnqueueRequest, enqueue_job
from cutout_fleet.producer.listing import ListingChunk, iter_listing_chunks, output_inside
from cutout_fleet.producer.plan import InvalidJobRequest, same_place
from cutout_fleet.producer.publish import CollectingPublisher
from cutout_fleet.reports import write_report
from cutout_fleet.routing import task_time_limits
from cutout_fleet.state import JobRecord, MemoryJobStore
from cutout_fleet.storage import LocalStorage, Location, Storage, StorageOpener
from cutout_fleet.storage.local import NotListed
from cutout_fleet.worker.batch import BatchRuntime, fail_items, run_batch
from cutout_fleet.worker.isolated_cutter import IsolatedCutter
from cutout_fleet.worker.pipeline import Cutter
from cutout_fleet.worker.safety.capabilities import full_problem, install_hint, safety_levels
from cutout_fleet.worker.sessions import SessionPool, check_gpu_models, check_models_installed

EMBEDDED_QUEUE = "embedded"
# A local job touches two locations (source and output).
EMBEDDED_STORAGES_KEPT = 8


@dataclass(frozen=True)
class EmbeddedResult:
    job: JobRecord
    report_key: str | None
    # Entries of a source folder that are not regular files (FIFOs, broken symlinks...): left out.
    not_listed: NotListed


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
    Raises InvalidJobRequest, before any work, when OUT is SOURCE or would be listed as part of it.
    """
    source, out = _real_folder(source), _real_folder(out)
    check_output_place(source, out)
    if options.safety not in safety_levels(settings):
        why = full_problem(settings) if options.safety == "full" else None
        raise InvalidJobRequest(f"--safety {options.safety}: {why or install_hint(options.safety)}")
    # Sessions for the job's model only: the worker settings' list names the fleet's models.
    settings = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"models": [options.model]})}
    )
    store = MemoryJobStore()
    open_storage = StorageOpener(settings.s3, max_kept=EMBEDDED_STORAGES_KEPT)
    publisher = CollectingPublisher()
    # One item may run this long in the child process; there is no soft limit to catch first.
    with IsolatedCutter(settings, task_time_limits(settings.worker, 1).hard_s) as cutter:
        runtime = _local_runtime(settings, options.model, store, open_storage, publisher.job_complete, cutter)
        request = EnqueueRequest(
            source, out, options, lambda _model: EMBEDDED_QUEUE, settings.items_per_task, job_id
        )
        source_storage = open_storage(source.uri)
        chunks = iter_listing_chunks(source_storage, source.prefix, exclude_prefix=output_inside(source, out))
        job_id = enqueue_job(request, store, _counting_not_listed(chunks, source_storage), publisher).job_id
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
    not_listed = source_storage.not_listed if isinstance(source_storage, LocalStorage) else NotListed()
    return EmbeddedResult(job, report_key, not_listed)


def check_output_place(source: Location, out: Location) -> None:
    """Refuse an output that is the source itself (the rule `cutout enqueue` applies), or a folder inside
    the source folder that its listing would not leave out: reached another way than by its real path (a
    bind mount, a case-insensitive file system), its cutouts would be listed as new sources."""
    overlap = _folder_overlap(source, out) if source.scheme == out.scheme == "file" else None
    if same_place(source, out) or overlap == "same":
        raise InvalidJobRequest(
            f"--out {out.uri} is the source itself: each cutout would replace its source (a PNG its own "
            f"file) and the reports would land among the sources; give --out another folder or prefix, "
            f"such as {source.uri.rstrip('/')}/cutouts (left out of the listing) or one beside the source"
        )
    if overlap == "inside" and output_inside(source, out) is None:
        raise InvalidJobRequest(
            f"--out {out.uri} lies inside the source {source.uri} by another path than its real one, so "
            "the listing could not leave it out and its cutouts would be read as new sources; give --out "
            "a folder outside the source, or the output folder by its path inside the source"
        )


def _real_folder(location: Location) -> Location:
    """A folder by its real path: `SRC/.`, `SRC/../SRC` and a symlink to SRC all become SRC."""
    if location.scheme != "file":
        return location
    return Location("file", os.path.realpath(location.bucket), location.prefix)


def _folder_overlap(source: Location, out: Location) -> str | None:
    """Whether OUT is the SOURCE folder ("same") or a folder above OUT is ("inside"), by identity (device
    and inode) rather than by name; None when neither."""
    try:
        folder = os.stat(source.bucket)
    except OSError:
        return None  # a missing source fails when it is listed
    out_path = Path(out.uri)
    for depth, path in enumerate([out_path, *out_path.parents]):
        try:
            found = os.stat(path)
        except OSError:
            continue  # a folder not created yet
        if (found.st_dev, found.st_ino) == (folder.st_dev, folder.st_ino):
            return "same" if depth == 0 else "inside"
    return None


def _counting_not_listed(chunks: Iterator[ListingChunk], storage: Storage) -> Iterator[ListingChunk]:
    """The chunks, then the files a folder's listing left out (not regular files) as ignored keys."""
    yield from chunks
    if isinstance(storage, LocalStorage) and storage.not_listed.count:
        yield ListingChunk(ignored=storage.not_listed.count)


def _local_runtime(
    settings: Settings,
    model: str,
    store: MemoryJobStore,
    open_storage: StorageOpener,
    on_job_complete: Callable[[str, str], None],
    cutter: Cutter,
) -> BatchRuntime:
    """The worker's collaborators for the job's model, the one in `settings.worker.models` (refused here
    if it is not installed); `cutter` runs the image pipeline."""
    catalog = load_catalog(settings)
    catalog.get(model)
    check_models_installed(settings, catalog)
    # A gpu model (BEN2) without CUDA: refused before any work, as a gpu worker refuses to start.
    check_gpu_models(settings, catalog, ())
    return BatchRuntime(
        settings=settings,
        catalog=catalog,
        store=store,
        sessions=SessionPool(settings, catalog),
        open_storage=open_storage,
        on_job_complete=on_job_complete,
        local_folders=True,
        cutter=cutter,
    )


def _run_here(message: TaskMessage, runtime: BatchRuntime) -> None:
    """Run one task in this process; an item a worker would try again later fails now.

    botocore already retried with backoff, and here there is no queue to come back to later (nor
    a soft time limit: the cutter fails an item that passes its hard one, so nothing is handed back).
    """
    result = run_batch(message, runtime, EMBEDDED_QUEUE)
    if result.retry:
        error = result.retry_error or TransientError("a passing fault")
        fail_items(message, runtime, EMBEDDED_QUEUE, result.retry, error.code, str(error))
