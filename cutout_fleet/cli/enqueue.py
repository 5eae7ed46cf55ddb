"""`cutout enqueue`: parse the flags, plan the job (`producer.plan`), enqueue it or dry-run it, print."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from cutout_fleet.cli.common import (
    build_options,
    image_options,
    job_store,
    location,
    publisher,
    reported,
    settings_or_exit,
)
from cutout_fleet.cli.group import cli
from cutout_fleet.errors import InvalidOptions, JobExists

if TYPE_CHECKING:
    from cutout_fleet.producer.dryrun import DryRunReport
    from cutout_fleet.producer.enqueue import EnqueueResult
    from cutout_fleet.producer.manifest import ManifestFormat
    from cutout_fleet.producer.plan import Manifest
    from cutout_fleet.storage import Location


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
@click.option(
    "--allow-empty", is_flag=True, help="Create the job even when no key is an image (default: refuse)."
)
@click.option("--dry-run", is_flag=True, help="Show what would be enqueued and an estimate; enqueue nothing.")
@click.option("--job-id", default=None, help="Name the job (letters, digits, . _ -); default: time + random.")
@click.option(
    "--notify",
    "notify_url",
    default=None,
    metavar="URL",
    help="POST a signed completion notice here (http/https) [default: CUTOUT_NOTIFY__URL].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def enqueue(
    source: str | None,
    out: str,
    model: str | None,
    fmt: str,
    manifest: str | None,
    manifest_format: ManifestFormat | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    force: bool,
    allow_empty: bool,
    dry_run: bool,
    job_id: str | None,
    notify_url: str | None,
    as_json: bool,
    **values: Any,
) -> None:
    """Queue every image under SOURCE (s3://BUCKET/PREFIX), or every line of --manifest, for the workers.

    Refused (exit 2, nothing enqueued) when the job cannot work: --out is the source prefix, no key is an
    image (unless --allow-empty), the output bucket is missing or not writable, or live workers serve the
    model's queue and none has the model.
    """
    from cutout_fleet.producer.enqueue import enqueue_job
    from cutout_fleet.producer.plan import InvalidJobRequest, check_fleet, dry_run_plan, plan_job

    settings = settings_or_exit()
    options = build_options(settings, model, fmt, **values)
    dst = location(out, "--out")
    src = _job_source(source, manifest, manifest_format)
    with reported(JobExists, InvalidOptions):
        try:
            plan = plan_job(
                settings,
                src,
                dst,
                options,
                include=include,
                exclude=exclude,
                job_id=job_id,
                force=force,
                allow_empty=allow_empty,
                notify_url=notify_url,
            )
        except InvalidJobRequest as exc:
            raise click.UsageError(str(exc)) from exc
        fleet = check_fleet(settings, plan)
        for warning in fleet.warnings:
            click.echo(f"cutout: warning: {warning}", err=True)
        store = job_store(settings)
        if dry_run:
            _print_dry_run(dry_run_plan(settings, plan, store, fleet), as_json)
            return
        result = enqueue_job(plan.request, store, plan.chunks, publisher(settings))
    _print_result(result, as_json)


def _job_source(
    source: str | None, manifest: str | None, manifest_format: ManifestFormat | None
) -> Location | Manifest:
    """SOURCE or --manifest, exactly one of them, parsed."""
    from cutout_fleet.producer.plan import Manifest

    if source is not None and manifest is None:
        return location(source, "SOURCE")
    if manifest is not None and source is None:
        location(manifest, "--manifest")  # only a file or an s3:// URI
        return Manifest(manifest, manifest_format)
    raise click.UsageError("give either SOURCE (s3://BUCKET/PREFIX) or --manifest, not both or neither")


def _print_result(result: EnqueueResult, as_json: bool) -> None:
    queues = sorted(result.queues)
    if as_json:
        summary = {
            "job_id": result.job_id,
            "total": result.total,
            "ignored": result.ignored,
            "collisions": result.collisions,
            "already_enqueued": result.again,
            "tasks": result.tasks,
            "queues": queues,
        }
        click.echo(json.dumps(summary))
        return
    click.echo(result.job_id)
    click.echo(
        f"queued {result.total} images on {', '.join(queues) or '-'} in {result.tasks} tasks "
        f"({result.ignored} other keys ignored, {result.collisions} output collisions"
        + (f", {result.again} already in this job" if result.again else "")
        + ")",
        err=True,
    )


def _print_dry_run(report: DryRunReport, as_json: bool) -> None:
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
