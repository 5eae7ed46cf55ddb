"""Enqueue planning: what to enqueue and how, from plain arguments, before any job exists.

`plan_job` applies the rules a fleet job follows (S3 in and out, a valid job id, which output-key
mapping, a manifest validated whole) and returns the `EnqueueRequest` with its stream of items, ready
for `enqueue_job` or `dry_run`.  It refuses jobs that cannot work: outputs written over the sources, no
image at all, an output bucket the producer cannot write.  `check_fleet` then refuses a model that no
live worker of its queue has.  The CLI calls them; a library user can too.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

from cutout_fleet.catalog import load_catalog
from cutout_fleet.config.settings import Settings
from cutout_fleet.connections import celery_broker_options
from cutout_fleet.errors import AccessDenied, InvalidOptions, SourceMissing
from cutout_fleet.keys import IMAGE_EXTENSIONS, REPORTS_DIR, KeyMapping, join_key
from cutout_fleet.messages import InvalidJobId, validate_job_id
from cutout_fleet.notify import check_notify_url
from cutout_fleet.options import ImageOptions
from cutout_fleet.presets import load_presets
from cutout_fleet.producer.dryrun import DryRunReport, dry_run
from cutout_fleet.producer.enqueue import EnqueueRequest
from cutout_fleet.producer.fleet import QueueFleet, queue_fleet, safety_refusal, safety_warning
from cutout_fleet.producer.listing import (
    KeyFilter,
    ListingChunk,
    iter_listing_chunks,
    iter_manifest_chunks,
    output_inside,
)
from cutout_fleet.producer.manifest import LineOptions, ManifestFormat, iter_manifest, scan_manifest
from cutout_fleet.producer.manifest_lines import manifest_etag
from cutout_fleet.routing import queue_for_model
from cutout_fleet.safety import load_policy
from cutout_fleet.state import FailureGuard, RedisJobStore
from cutout_fleet.storage import Location, S3Storage, StorageOpener, parse_location

QueueFor = Callable[[str], str]  # model name -> the queue its workers consume
# Written and deleted under OUT before a job exists: proves the output bucket exists and takes reports.
PROBE_NAME = ".cutout-probe"


class InvalidJobRequest(InvalidOptions):
    """The arguments cannot make a fleet job (local folders, a bad job id); the message says what to give."""

    code = "invalid_job_request"


class JobRefused(InvalidOptions):
    """The arguments are well formed but the job cannot work (no image, no writable output, no worker
    with its model); the message says why and what to do."""

    code = "job_refused"


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
    models: tuple[str, ...]  # every model the job uses: the job's and a manifest's per-key ones


@dataclass(frozen=True)
class FleetCheck:
    """What the live fleet says about a planned job: its queue's pool processes and any warnings."""

    processes: int
    warnings: tuple[str, ...]


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
    allow_empty: bool = False,
    notify_url: str | None = None,
    queue_for: QueueFor | None = None,
    open_storage: StorageOpener | None = None,
) -> JobPlan:
    """Check the arguments, then open the listing or validate the manifest; nothing is enqueued yet.

    SOURCE is an `s3://BUCKET/PREFIX` location or a `Manifest`; OUT must be on S3. `include` and
    `exclude` are globs on the key below the prefix (the whole key for a manifest). Raises
    InvalidJobRequest for arguments no fleet job can have, JobRefused for a job that cannot work
    (no image unless `allow_empty`, an output bucket that is missing or not writable), and the
    storage's or the manifest's errors (a wrong bucket, a bad line) before any job exists.
    """
    check_job_arguments(source, out, job_id)
    notify = check_notify_url(notify_url) if notify_url else settings.notify.url
    route = queue_for or partial(queue_for_model, settings)
    opener = open_storage or StorageOpener(settings.s3)
    models: tuple[str, ...] = (options.model,)
    if isinstance(source, Manifest):
        location = parse_location(source.location)
        line_options = LineOptions(load_presets(settings.framing.presets_file), options)
        mapping, chunks, listed = _manifest_items(source, out, include, exclude, route, opener, line_options)
        models = tuple(sorted({options.model, *listed}))
    else:
        location, mapping = source, "relative"
        chunks = _listing_items(source, out, KeyFilter(tuple(include), tuple(exclude), source.prefix), opener)
    if not allow_empty:
        chunks = _with_an_image(chunks, location, bool(include or exclude))
    probe_output(out, opener)
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
        notify_url=notify,
    )
    return JobPlan(request, chunks, opener, models)


def dry_run_plan(
    settings: Settings, plan: JobPlan, store: RedisJobStore, fleet: FleetCheck | None = None
) -> DryRunReport:
    """What enqueueing `plan` would do, enqueueing nothing: collisions, outputs already up to date, and
    an estimate from the fleet's recorded per-item times and the worker processes that answer now.
    Raises JobRefused, as enqueueing would, when no live worker has the job's model."""
    fleet = fleet or check_fleet(settings, plan)
    catalog = load_catalog(settings)
    report = dry_run(
        plan.request,
        plan.chunks,
        store,
        plan.open_storage,
        catalog,
        live_processes=fleet.processes,
        policy=load_policy(settings.safety.policy_file),
        hub_pins=settings.safety.hub_pins(),
    )
    report.warnings = list(fleet.warnings)
    return report


def check_fleet(settings: Settings, plan: JobPlan) -> FleetCheck:
    """Refuse a model that the live workers of its queue do not have; only warn when no worker of that
    queue answers (a fleet that scales to zero still takes jobs)."""
    options = celery_broker_options(settings)
    fleets: dict[str, QueueFleet] = {}
    warnings: list[str] = []
    for model in plan.models:
        queue = plan.request.queue_for(model)
        if queue not in fleets:
            fleets[queue] = queue_fleet(settings.redis_url, queue, options)
        fleet = fleets[queue]
        if not fleet.may_serve(model):
            have = ", ".join(fleet.models()) or "none"
            raise JobRefused(
                f"model {model!r}: none of the {len(fleet.workers)} live workers on queue {queue!r} has it "
                f"installed (they have: {have}); install it on a worker (`cutout models pull {model}`, add "
                "it to CUTOUT_WORKER__MODELS, restart) or choose another --model"
            )
        if not fleet.workers and not fleet.unknown:
            warnings.append(
                f"no live worker serves queue {queue!r}: the job waits until a worker with model "
                f"{model!r} starts"
            )
    main_queue = plan.request.queue_for(plan.request.options.model)
    level = plan.request.options.safety
    # The job's safety level, on its main queue (a manifest line's own level is not checked here: a
    # worker without its stages records them as missing, and the gate's policy decides).
    if refusal := safety_refusal(fleets[main_queue], level):
        raise JobRefused(refusal)
    if warning := safety_warning(fleets[main_queue], level):
        warnings.append(warning)
    return FleetCheck(fleets[main_queue].processes, tuple(warnings))


def probe_output(out: Location, open_storage: StorageOpener) -> None:
    """Write and delete `OUT/_reports/.cutout-probe`: the output bucket exists and this producer can write
    reports there.  It proves nothing about the workers' credentials for the outputs themselves."""
    storage = open_storage(out.uri)
    if not isinstance(storage, S3Storage):
        return
    key = join_key(out.prefix, f"{REPORTS_DIR}/{PROBE_NAME}")
    try:
        storage.probe_write(key)
    except SourceMissing as exc:
        raise JobRefused(
            f"--out {out.uri}: the bucket {out.bucket!r} does not exist; create it or fix --out"
        ) from exc
    except AccessDenied as exc:
        raise JobRefused(
            f"--out {out.uri}: this producer cannot write there ({exc}); the output bucket must allow "
            f"s3:PutObject under {join_key(out.prefix, REPORTS_DIR)}/ (check the bucket and the IAM policy)"
        ) from exc


def check_job_arguments(source: Location | Manifest, out: Location, job_id: str | None) -> None:
    """Refuse what no fleet job can have: local folders (workers read and write S3), a bad job id."""
    if out.scheme != "s3" or (isinstance(source, Location) and source.scheme != "s3"):
        raise InvalidJobRequest(
            "the fleet reads and writes S3 (s3://BUCKET/PREFIX); for local folders use `cutout run`"
        )
    if job_id is not None:
        try:
            validate_job_id(job_id)
        except InvalidJobId as exc:
            raise InvalidJobRequest(f"--job-id: {exc}") from exc
    if isinstance(source, Location) and same_place(source, out):
        raise InvalidJobRequest(
            f"--out {out.uri} is the source prefix itself: outputs and reports would land among the "
            "sources (and a PNG could replace its own source); give --out another prefix, such as "
            f"s3://{out.bucket}/cutouts, or a folder below the source"
        )


def same_place(source: Location, out: Location) -> bool:
    """Same bucket (or folder) and the same prefix, folder slashes aside (`in`, `in/` and `/in/` are one
    place).  `cutout run` refuses the same outputs by this rule."""
    return (source.bucket, source.prefix.strip("/")) == (out.bucket, out.prefix.strip("/"))


def _with_an_image(chunks: Iterator[ListingChunk], where: Location, filtered: bool) -> Iterator[ListingChunk]:
    """The same chunks, once one holds an image; JobRefused when none does (read ahead until one does:
    chunks before it only count ignored keys)."""
    ahead: list[ListingChunk] = []
    for chunk in chunks:
        ahead.append(chunk)
        if chunk.images:
            return itertools.chain(ahead, chunks)
    ignored = sum(chunk.ignored for chunk in ahead)
    hint = " and --include/--exclude" if filtered else ""
    raise JobRefused(
        f"{where.uri}: no image to process ({ignored} other keys ignored; images are "
        f"{' '.join(sorted(ext.lstrip('.') for ext in IMAGE_EXTENSIONS))}); check the location{hint}, "
        "or pass --allow-empty to create an empty job anyway"
    )


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
    line_options: LineOptions,
) -> tuple[KeyMapping, Iterator[ListingChunk], frozenset[str]]:
    """The key mapping, the chunks and the per-key models of a manifest, read twice: validated whole
    first, then streamed.

    Lines without a bucket take the output's. Keys from several buckets keep their bucket in the
    output key ("bucket" mapping), so two buckets' `a.jpg` cannot collide; otherwise the full key,
    which must then not land on the sources themselves (an empty --out prefix in their bucket).
    """
    client = open_storage.s3_client if manifest.location.startswith("s3://") else None
    # Every read is of the object validated first, even if someone replaces it in between.
    etag = manifest_etag(manifest.location, client)
    where = manifest.location
    fmt, bucket = manifest.format, out.bucket
    scan = scan_manifest(
        where, s3_client=client, fmt=fmt, default_bucket=bucket, etag=etag, line_options=line_options
    )
    for model in scan.models:
        queue_for(model)  # an unknown per-key model fails now, before anything is enqueued
    mapping: KeyMapping = "bucket" if len(scan.buckets) > 1 else "full"
    if mapping == "full" and not out.prefix.strip("/") and out.bucket in scan.buckets:
        raise InvalidJobRequest(
            f"--out {out.uri}: the manifest's keys are in that bucket, and each output keeps its source "
            "key, so outputs would land among the sources; give --out a prefix (s3://BUCKET/cutouts)"
        )
    entries = iter_manifest(
        where, s3_client=client, fmt=fmt, default_bucket=bucket, etag=etag, line_options=line_options
    )
    chunks = iter_manifest_chunks(entries, key_filter=KeyFilter(tuple(include), tuple(exclude)))
    return mapping, chunks, frozenset(scan.models)
