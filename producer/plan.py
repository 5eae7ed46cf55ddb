"""Enqueue planning: what to enqueue and how, from plain arguments, before any job exists.

`plan_job` applies the rules a fleet job follows (S3 in and out, a valid job id, which output-key
mapping, a manifest validated whole) and returns the `EnqueueRequest` with its stream of items, ready
for `enqueue_job` or `dry_run`.  The CLI calls it; a library user can too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

from cutout_fleet.catalog import load_catalog
from cutout_fleet.config.settings import Settings
from cutout_fleet.connections import celery_broker_options
from cutout_fleet.errors import InvalidOptions
from cutout_fleet.keys import KeyMapping
from cutout_fleet.messages import JOB_ID_PATTERN
from cutout_fleet.options import ImageOptions
from cutout_fleet.producer.dryrun import DryRunReport, dry_run
from cutout_fleet.producer.enqueue import EnqueueRequest
from cutout_fleet.producer.fleet import live_worker_processes
from cutout_fleet.producer.listing import (
    KeyFilter,
    ListingChunk,
    iter_listing_chunks,
    iter_manifest_chunks,
    output_inside,
)
from cutout_fleet.producer.manifest import ManifestFormat, iter_manifest, scan_manifest
from cutout_fleet.routing import queue_for_model
from cutout_fleet.state import FailureGuard, RedisJobStore
from cutout_fleet.storage import Location, StorageOpener, parse_location

QueueFor = Callable[[str], str]  # model name -> the queue its workers consume


class InvalidJobRequest(InvalidOptions):
    """The arguments cannot make a fleet job (local folders, a bad job id); the message says what to give."""

    code = "invalid_job_request"


@dataclass(frozen=True)
class Manifest:
    """A manifest to enqueue instead of a prefix: a local file or `s3://BUCKET/KEY`, CSV or JSONL."""

    location: str
    format: ManifestFormat | None = None  # None: from the extension


@dataclass(frozen=True)
class JobPlan:
    """A job ready to enqueue: the request, its items in chunks (a one-pass stream), and the storages."""

    request: EnqueueRequest
    chunks: Iterator[ListingChunk]
    open_storage: StorageOpener


def plan_job(
    settings: Settings,
    source: Location | Manifest,
    out: Location,
    options: ImageOptions,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    job_id: str | None = None,
    force: bool = False,
    queue_for: QueueFor | None = None,
    open_storage: StorageOpener | None = None,
) -> JobPlan:
    """Check the arguments, then open the listing or validate the manifest; nothing is enqueued yet.

    SOURCE is an `s3://BUCKET/PREFIX` location or a `Manifest`; OUT must be on S3. `include` and
    `exclude` are globs on the key below the prefix (the whole key for a manifest). Raises
    InvalidJobRequest for arguments no fleet job can have, and the storage's or the manifest's
    errors (a wrong bucket, a bad line) before any job exists.
    """
    check_job_arguments(source, out, job_id)
    route = queue_for or partial(queue_for_model, settings)
    opener = open_storage or StorageOpener(settings.s3)
    if isinstance(source, Manifest):
        location = parse_location(source.location)
        mapping, chunks = _manifest_items(source, out, include, exclude, route, opener)
    else:
        location, mapping = source, "relative"
        chunks = _listing_items(source, out, KeyFilter(tuple(include), tuple(exclude), source.prefix), opener)
    request = EnqueueRequest(
        source=location,
        out=out,
        options=options,
        queue_for=route,
        items_per_task=settings.items_per_task,
        job_id=job_id,
        mapping=mapping,
        force=force,
        guard=FailureGuard(settings.guard.min_items, settings.guard.max_failure_ratio),
    )
    return JobPlan(request, chunks, opener)


def dry_run_plan(settings: Settings, plan: JobPlan, store: RedisJobStore) -> DryRunReport:
    """What enqueueing `plan` would do, enqueueing nothing: collisions, outputs already up to date, and
    an estimate from the fleet's recorded per-item times and the worker processes that answer now."""
    request = plan.request
    queue = request.queue_for(request.options.model)
    processes = live_worker_processes(settings.redis_url, queue, celery_broker_options(settings))
    catalog = load_catalog(settings)
    return dry_run(request, plan.chunks, store, plan.open_storage, catalog, live_processes=processes)


def check_job_arguments(source: Location | Manifest, out: Location, job_id: str | None) -> None:
    """Refuse what no fleet job can have: local folders (workers read and write S3), a bad job id."""
    if out.scheme != "s3" or (isinstance(source, Location) and source.scheme != "s3"):
        raise InvalidJobRequest(
            "the fleet reads and writes S3 (s3://BUCKET/PREFIX); for local folders use `cutout run`"
        )
    if job_id is not None and not re.match(JOB_ID_PATTERN, job_id):
        raise InvalidJobRequest(f"--job-id {job_id!r}: use 1-64 letters, digits, '.', '_' or '-'")


def _listing_items(
    source: Location, out: Location, key_filter: KeyFilter, open_storage: StorageOpener
) -> Iterator[ListingChunk]:
    storage = open_storage(source.uri)
    # Fail on a wrong bucket or credentials before a job exists, not after.
    next(iter(storage.iter_objects(source.prefix)), None)
    return iter_listing_chunks(
        storage, source.prefix, exclude_prefix=output_inside(source, out), key_filter=key_filter
    )


def _manifest_items(
    manifest: Manifest,
    out: Location,
    include: Sequence[str],
    exclude: Sequence[str],
    queue_for: QueueFor,
    open_storage: StorageOpener,
) -> tuple[KeyMapping, Iterator[ListingChunk]]:
    """The key mapping and the chunks of a manifest, read twice: validated whole first, then streamed.

    Lines without a bucket take the output's. Keys from several buckets keep their bucket in the
    output key ("bucket" mapping), so two buckets' `a.jpg` cannot collide; otherwise the full key.
    """
    client = open_storage.s3_client if manifest.location.startswith("s3://") else None
    scan = scan_manifest(manifest.location, s3_client=client, fmt=manifest.format, default_bucket=out.bucket)
    for model in scan.models:
        queue_for(model)  # an unknown per-key model fails now, before anything is enqueued
    mapping: KeyMapping = "bucket" if len(scan.buckets) > 1 else "full"
    entries = iter_manifest(
        manifest.location, s3_client=client, fmt=manifest.format, default_bucket=out.bucket
    )
    return mapping, iter_manifest_chunks(entries, key_filter=KeyFilter(tuple(include), tuple(exclude)))
