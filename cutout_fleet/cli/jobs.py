"""Fleet commands: enqueue, status, report, jobs, retry, cancel, resume."""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Any

import click

from cutout_fleet.cli.common import (
    EXIT_USAGE,
    build_options,
    fail,
    image_options,
    job_store,
    location,
    publisher,
    queue_for,
    settings_or_exit,
)
from cutout_fleet.cli.group import cli
from cutout_fleet.errors import CutoutError, InvalidOptions
from cutout_fleet.messages import JOB_ID_PATTERN
from cutout_fleet.producer.listing import KeyFilter
from cutout_fleet.state import CANCELLED, DONE, RUNNING
from cutout_fleet.storage import parse_location

WATCH_REFRESH_S = 2.0


@cli.command()
@click.argument("source", required=False)
@click.option("--out", "out", required=True, help="Output location: s3://BUCKET/PREFIX.")
@image_options
@click.option(
    "--manifest", default=None, help="CSV (bucket,key[,version]) or JSONL manifest: a file or s3:// URI."
)
@click.option("--manifest-format", type=click.Choice(["csv", "jsonl"]), default=None)
@click.option("--include", multiple=True, help="Only keys matching this glob (below the prefix); repeatable.")
@click.option("--exclude", multiple=True, help="Skip keys matching this glob; repeatable.")
@click.option("--force", is_flag=True, help="Recompute even when an up-to-date output exists.")
@click.option("--dry-run", is_flag=True, help="Show what would be enqueued and an estimate; enqueue nothing.")
@click.option("--job-id", default=None, help="Name the job (letters, digits, . _ -); default: time + random.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def enqueue(
    source: str | None,
    out: str,
    model: str | None,
    fmt: str,
    manifest: str | None,
    manifest_format: str | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    force: bool,
    dry_run: bool,
    job_id: str | None,
    as_json: bool,
    **values: Any,
) -> None:
    """Queue every image under SOURCE (s3://BUCKET/PREFIX), or every line of --manifest, for the workers."""
    from cutout_fleet.errors import JobExists
    from cutout_fleet.producer.enqueue import EnqueueRequest, enqueue_job
    from cutout_fleet.state import FailureGuard

    settings = settings_or_exit()
    options = build_options(settings, model, fmt, **values)
    dst = location(out, "--out")
    if (source is None) == (manifest is None):
        raise click.UsageError("give either SOURCE (s3://BUCKET/PREFIX) or --manifest, not both or neither")
    src = location(source or manifest or "", "SOURCE" if source else "--manifest")
    if dst.scheme != "s3" or (source is not None and src.scheme != "s3"):
        raise click.UsageError(
            "the fleet reads and writes S3 (s3://BUCKET/PREFIX); for local folders use `cutout run`"
        )
    if job_id is not None and not re.match(JOB_ID_PATTERN, job_id):
        raise click.UsageError(f"--job-id {job_id!r}: use 1-64 letters, digits, '.', '_' or '-'")
    route = queue_for(settings)
    key_filter = KeyFilter(include, exclude, src.prefix if source else "")
    try:
        mapping, chunks = _job_items(settings, src, dst, manifest, manifest_format, key_filter, route)
        request = EnqueueRequest(
            src,
            dst,
            options,
            route,
            settings.items_per_task,
            job_id,
            mapping,
            force,
            FailureGuard(settings.guard.min_items, settings.guard.max_failure_ratio),
        )
        store = job_store(settings)
        if dry_run:
            _print_dry_run(settings, request, chunks, store, as_json)
            return
        result = enqueue_job(request, store, chunks, publisher(settings))
    except JobExists as exc:
        fail(str(exc), EXIT_USAGE)
    except InvalidOptions as exc:
        fail(str(exc), EXIT_USAGE)
    except CutoutError as exc:
        fail(str(exc))
    summary = {
        "job_id": result.job_id,
        "total": result.total,
        "ignored": result.ignored,
        "collisions": result.collisions,
        "already_enqueued": result.again,
        "tasks": result.tasks,
        "queues": sorted(result.queues),
    }
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(result.job_id)
    click.echo(
        f"queued {result.total} images on {', '.join(sorted(result.queues)) or '-'} in {result.tasks} tasks "
        f"({result.ignored} other keys ignored, {result.collisions} output collisions"
        + (f", {result.again} already in this job" if result.again else "")
        + ")",
        err=True,
    )


def _job_items(settings, src, dst, manifest, manifest_format, key_filter, route):
    """(key mapping, chunk iterator) for a prefix or a manifest; a manifest is validated whole first."""
    from cutout_fleet.producer.listing import iter_listing_chunks, iter_manifest_chunks, output_inside
    from cutout_fleet.storage import open_storage, s3_client

    if manifest is None:
        storage = open_storage(src, settings.s3)
        # Fail on a wrong bucket or credentials before a job exists, not after.
        next(iter(storage.iter_objects(src.prefix)), None)
        return "relative", iter_listing_chunks(
            storage, src.prefix, exclude_prefix=output_inside(src, dst), key_filter=key_filter
        )
    from cutout_fleet.producer.manifest import iter_manifest, scan_manifest

    client = s3_client(settings.s3) if manifest.startswith("s3://") else None
    scan = scan_manifest(manifest, s3_client=client, fmt=manifest_format, default_bucket=dst.bucket)
    for model in scan.models:
        route(model)  # an unknown per-key model fails now, before anything is enqueued
    mapping = "bucket" if len(scan.buckets) > 1 else "full"
    entries = iter_manifest(manifest, s3_client=client, fmt=manifest_format, default_bucket=dst.bucket)
    return mapping, iter_manifest_chunks(entries, key_filter=key_filter)


def _print_dry_run(settings, request, chunks, store, as_json: bool) -> None:
    from functools import lru_cache

    from cutout_fleet.catalog import load_catalog
    from cutout_fleet.connections import celery_broker_options
    from cutout_fleet.producer.dryrun import dry_run
    from cutout_fleet.producer.fleet import live_worker_processes
    from cutout_fleet.storage import open_storage, parse_location, s3_client

    client = s3_client(settings.s3)

    @lru_cache(maxsize=64)
    def storage_for(uri: str):
        return open_storage(parse_location(uri), settings.s3, client)

    processes = live_worker_processes(
        settings.redis_url, request.queue_for(request.options.model), celery_broker_options(settings)
    )
    report = dry_run(request, chunks, store, storage_for, load_catalog(settings), live_processes=processes)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
        return
    unknown = f" (+{report.unknown_sizes} unknown)" if report.unknown_sizes else ""
    size = f"{report.total_bytes / 1e6:,.1f} MB{unknown}"
    click.echo(f"dry run: {report.images} images ({size}), {report.ignored} other keys ignored")
    click.echo(
        f"  would process {report.to_process}, skip {report.already_done} already up to date, "
        f"fail {report.collisions} output collisions"
    )
    for row in report.sample:
        click.echo(f"  {row['key']}  ->  {row['output_key']}")
    for row in report.collision_sample:
        click.echo(f"  collision: {row['key']} -> {row['output_key']} (already from {row['owner']})")
    if report.estimated_s is not None:
        click.echo(f"  estimated duration: {report.estimated_s / 60:.1f} min ({report.estimate_note})")
    else:
        click.echo(f"  estimated duration: unknown ({report.estimate_note})")


@cli.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (with --watch: one per refresh).")
@click.option("--wait", is_flag=True, help="Block with a progress bar until the job ends.")
@click.option(
    "--watch", is_flag=True, help="Refresh counts, rate, ETA, queue depths and failures until it ends."
)
@click.option(
    "--recount", is_flag=True, help="First rebuild the counters from per-key state (after a Redis restart)."
)
def status(job_id: str, as_json: bool, wait: bool, watch: bool, recount: bool) -> None:
    """Counts and state of a job (exit 0 when done, 1 when cancelled or stopped, 3 while running)."""
    from cutout_fleet.errors import JobNotFound
    from cutout_fleet.producer.status import (
        RateMeter,
        format_live,
        job_status,
        live_status,
        wait_for_job,
    )

    settings = settings_or_exit()
    store = job_store(settings)
    queues = [settings.queues.cpu, settings.queues.gpu]
    meter = RateMeter()
    try:
        if recount:
            store.rebuild_counts(job_id)
        job = job_status(store, job_id)
        if watch:
            while True:
                live = live_status(store, job_id, queues, meter)
                if as_json:
                    click.echo(json.dumps(live.as_dict(), sort_keys=True))
                else:
                    if sys.stdout.isatty():
                        click.clear()
                    click.echo(format_live(live))
                if live.job.state != RUNNING:
                    break
                time.sleep(max(settings.status_poll_s, WATCH_REFRESH_S))
            job = live.job
        elif wait and job.state == RUNNING:
            with click.progressbar(
                length=max(job.total, 1), label=f"job {job_id}", file=sys.stderr, show_pos=True
            ) as bar:

                def update(current: Any) -> None:
                    bar.length = max(current.total, 1)
                    bar.update(current.finished - bar.pos)

                job = wait_for_job(store, job_id, poll_s=settings.status_poll_s, on_update=update)
        if not watch:
            live = live_status(store, job_id, queues, meter)
            click.echo(json.dumps(live.as_dict(), sort_keys=True) if as_json else format_live(live))
    except JobNotFound as exc:
        fail(str(exc))
    sys.exit({DONE: 0, RUNNING: 3}.get(job.state, 1) if (wait or watch) else 0)


@cli.command()
@click.argument("job_id")
def cancel(job_id: str) -> None:
    """Stop a job for good: workers drop its queued items without working on them."""
    from cutout_fleet.producer.lifecycle import cancel_job

    settings = settings_or_exit()
    try:
        job = cancel_job(job_store(settings), publisher(settings), job_id)
    except CutoutError as exc:
        fail(str(exc))
    click.echo(
        f"job {job_id} cancelled: {job.finished} of {job.total} items had finished; {job.queued} dropped"
    )


@cli.command()
@click.argument("job_id")
def resume(job_id: str) -> None:
    """Continue a job that was stopped (by its failure guard), once the cause is fixed."""
    from cutout_fleet.producer.lifecycle import resume_job

    settings = settings_or_exit()
    try:
        result = resume_job(job_store(settings), publisher(settings), job_id, queue_for(settings))
    except CutoutError as exc:
        fail(str(exc))
    click.echo(f"job {job_id} {result.job.state}: {result.republished} held items back on the queue")


@cli.command()
@click.argument("job_id")
def retry(job_id: str) -> None:
    """Enqueue only the failed items of a job again (and a stopped job's held items)."""
    from cutout_fleet.producer.lifecycle import retry_job

    settings = settings_or_exit()
    try:
        result = retry_job(
            job_store(settings),
            publisher(settings),
            job_id,
            items_per_task=settings.items_per_task,
            queue_for=queue_for(settings),
        )
    except CutoutError as exc:
        fail(str(exc))
    click.echo(
        f"job {job_id}: {result.retried} failed items and {result.republished} held items enqueued again "
        f"(state {result.job.state})"
    )


@cli.command()
@click.argument("job_id")
def report(job_id: str) -> None:
    """Print where a finished job's report is, writing it first if it is missing."""
    from cutout_fleet.errors import JobNotFound
    from cutout_fleet.producer.status import job_status
    from cutout_fleet.reports import write_report
    from cutout_fleet.storage import open_storage

    settings = settings_or_exit()
    store = job_store(settings)
    try:
        job = job_status(store, job_id)
    except JobNotFound as exc:
        fail(str(exc))
    if job.state not in (DONE, CANCELLED):
        fail(
            f"job {job_id} is still {job.state} ({job.queued} items queued); "
            "the report is written when it ends"
        )
    out = parse_location(job.out)
    key = job.report_key or write_report(store, open_storage(out, settings.s3), job_id)
    base = f"s3://{out.bucket}/" if out.scheme == "s3" else out.bucket.rstrip("/") + "/"
    click.echo(base + key)
    click.echo(base + key.removesuffix(".jsonl") + ".summary.json")


@cli.command()
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def jobs(limit: int, as_json: bool) -> None:
    """Recent jobs with their state and counts."""
    from cutout_fleet.producer.status import format_status

    records = job_store(settings_or_exit()).recent(limit)
    for job in records:
        click.echo(json.dumps(job.as_dict(), sort_keys=True) if as_json else format_status(job))
