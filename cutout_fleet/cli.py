"""The `cutout` command: a thin click layer over functions a library user can call too."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click

from cutout_fleet.config.settings import Settings, load_settings
from cutout_fleet.errors import ConfigError, CutoutError, InvalidOptions
from cutout_fleet.options import (
    MASK_BLUR_RANGE_PX,
    MASK_OFFSET_RANGE_PX,
    ImageOptions,
    make_options,
    parse_background,
)
from cutout_fleet.storage import Location, parse_location

EXIT_USAGE = 2


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"cutout: {message}", err=True)
    sys.exit(code)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        _fail(str(exc), EXIT_USAGE)


def _check_background(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        parse_background(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    return value


def image_options(func: Any) -> Any:
    """The options that change the pixels, shared by `enqueue` and `run`."""
    decorators = [
        click.option(
            "--model",
            default=None,
            help="Model name from `cutout models list` [default: CUTOUT_DEFAULT_MODEL].",
        ),
        click.option(
            "--background",
            default="none",
            show_default=True,
            callback=_check_background,
            help="none (transparent), white, black or #RRGGBB.",
        ),
        click.option(
            "--sensitivity",
            type=click.FloatRange(0.0, 1.0),
            default=1.0,
            show_default=True,
            help="0..1; the mask is scaled by (2 - s): lower keeps more faint edges.",
        ),
        click.option(
            "--mask-blur",
            "mask_blur_px",
            type=click.IntRange(*MASK_BLUR_RANGE_PX),
            default=0,
            show_default=True,
            help="Gaussian blur radius in pixels of the original image.",
        ),
        click.option(
            "--mask-offset",
            "mask_offset_px",
            type=click.IntRange(*MASK_OFFSET_RANGE_PX),
            default=0,
            show_default=True,
            help="Grow (+) or shrink (-) the mask by this many pixels, after the blur.",
        ),
        click.option("--format", "fmt", type=click.Choice(["png", "webp"]), default="png", show_default=True),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def _build_options(settings: Settings, model: str | None, fmt: str, **values: Any) -> ImageOptions:
    from cutout_fleet.worker.models.catalog import load_catalog

    name = model or settings.default_model
    try:
        load_catalog(settings).get(name)
        return make_options(model=name, format=fmt, **values)
    except (ConfigError, InvalidOptions) as exc:
        raise click.UsageError(str(exc)) from exc


def _location(text: str, what: str) -> Location:
    try:
        return parse_location(text)
    except ConfigError as exc:
        raise click.UsageError(f"{what}: {exc}") from exc


def _job_store(settings: Settings):  # type: ignore[no-untyped-def]
    from cutout_fleet.jobs import RedisJobStore

    return RedisJobStore.from_url(settings.redis_url, settings.job_ttl_s)


@click.group()
@click.version_option(package_name="cutout-fleet")
def cli() -> None:
    """Remove backgrounds from catalog photos at scale: S3 prefix -> Redis -> Celery workers -> S3."""


def main() -> None:
    """Console entry point: service outages become one readable line, not a traceback."""
    import kombu.exceptions
    import redis.exceptions

    try:
        cli()
    except (
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        kombu.exceptions.OperationalError,
    ) as exc:
        _fail(f"cannot reach Redis (CUTOUT_REDIS_URL): {exc}")


@cli.command()
@click.argument("source")
@click.option("--out", "out", required=True, help="Output location: s3://BUCKET/PREFIX.")
@image_options
@click.option("--job-id", default=None, help="Name the job (letters, digits, . _ -); default: time + random.")
@click.option("--json", "as_json", is_flag=True, help="Print {job_id, total, ...} as JSON.")
def enqueue(
    source: str, out: str, model: str | None, fmt: str, job_id: str | None, as_json: bool, **values: Any
) -> None:
    """List every image under SOURCE (s3://BUCKET/PREFIX) and queue it for the workers."""
    import re

    from cutout_fleet.jobs import JobExists
    from cutout_fleet.messages import JOB_ID_PATTERN
    from cutout_fleet.producer.enqueue import EnqueueRequest, enqueue_job
    from cutout_fleet.producer.publish import CeleryPublisher, producer_app
    from cutout_fleet.storage import open_storage
    from cutout_fleet.worker.models.catalog import load_catalog

    settings = _settings()
    options = _build_options(settings, model, fmt, **values)
    src, dst = _location(source, "SOURCE"), _location(out, "--out")
    if src.scheme != "s3" or dst.scheme != "s3":
        raise click.UsageError(
            "the fleet reads and writes S3 (s3://BUCKET/PREFIX); for local folders use `cutout run`"
        )
    if job_id is not None and not re.match(JOB_ID_PATTERN, job_id):
        raise click.UsageError(f"--job-id {job_id!r}: use 1-64 letters, digits, '.', '_' or '-'")
    spec = load_catalog(settings).get(options.model)
    queue = settings.queues.cpu if spec.queue == "cpu" else settings.queues.gpu
    request = EnqueueRequest(src, dst, options, queue, settings.items_per_task, job_id)
    publisher = CeleryPublisher(producer_app(settings.redis_url), settings.worker.item_time_limit_s)
    try:
        result = enqueue_job(request, _job_store(settings), open_storage(src, settings.s3), publisher)
    except JobExists as exc:
        _fail(str(exc), EXIT_USAGE)
    except CutoutError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "job_id": result.job_id,
                    "total": result.total,
                    "ignored": result.ignored,
                    "collisions": result.collisions,
                    "tasks": result.tasks,
                    "queue": queue,
                }
            )
        )
    else:
        click.echo(result.job_id)
        click.echo(
            f"queued {result.total} images on {queue!r} in {result.tasks} tasks "
            f"({result.ignored} other keys ignored, {result.collisions} output collisions)",
            err=True,
        )


@cli.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
@click.option("--wait", is_flag=True, help="Block with a progress bar until the job is done.")
def status(job_id: str, as_json: bool, wait: bool) -> None:
    """Counts and state of a job."""
    from cutout_fleet.producer.status import JobNotFound, format_status, job_status, wait_for_job

    settings = _settings()
    store = _job_store(settings)
    try:
        job = job_status(store, job_id)
        if wait and job.state != "done":
            with click.progressbar(
                length=max(job.total, 1), label=f"job {job_id}", file=sys.stderr, show_pos=True
            ) as bar:

                def update(current: Any) -> None:
                    bar.length = max(current.total, 1)
                    bar.update(current.finished - bar.pos)

                job = wait_for_job(store, job_id, poll_s=settings.status_poll_s, on_update=update)
    except JobNotFound as exc:
        _fail(str(exc))
    click.echo(json.dumps(job.as_dict(), sort_keys=True) if as_json else format_status(job))


@cli.command()
@click.argument("job_id")
def report(job_id: str) -> None:
    """Print where a finished job's report is, writing it first if it is missing."""
    from cutout_fleet.producer.status import JobNotFound, job_status
    from cutout_fleet.reports import write_report
    from cutout_fleet.storage import open_storage

    settings = _settings()
    store = _job_store(settings)
    try:
        job = job_status(store, job_id)
    except JobNotFound as exc:
        _fail(str(exc))
    if job.state != "done":
        _fail(
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

    records = _job_store(_settings()).recent(limit)
    for job in records:
        click.echo(json.dumps(job.as_dict(), sort_keys=True) if as_json else format_status(job))


@cli.command()
@click.argument("source")
@click.option("--out", "out", required=True, help="Output folder or s3://BUCKET/PREFIX.")
@image_options
@click.option("--job-id", default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the job's final counts as JSON.")
def run(
    source: str, out: str, model: str | None, fmt: str, job_id: str | None, as_json: bool, **values: Any
) -> None:
    """Process SOURCE into --out on this machine: no Redis, no S3 server (folders or s3:// URIs)."""
    from cutout_fleet.embedded import run_embedded

    settings = _settings()
    options = _build_options(settings, model, fmt, **values)
    src, dst = _location(source, "SOURCE"), _location(out, "--out")
    bar: Any = None

    def on_total(total: int) -> None:
        nonlocal bar
        bar = click.progressbar(length=max(total, 1), label="cutting out", file=sys.stderr, show_pos=True)
        bar.__enter__()

    try:
        result = run_embedded(
            src,
            dst,
            options,
            settings,
            job_id=job_id,
            on_total=on_total,
            on_item=lambda n: bar.update(n) if bar else None,
        )
    except CutoutError as exc:
        _fail(str(exc), EXIT_USAGE if isinstance(exc, ConfigError) else 1)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    job = result.job
    if as_json:
        click.echo(json.dumps({**job.as_dict(), "report_key": result.report_key}, sort_keys=True))
    else:
        counts = job.counts()
        click.echo(
            f"{counts['succeeded']} succeeded, {counts['failed']} failed, {counts['skipped']} skipped "
            f"({counts['ignored']} other files ignored)"
        )
        if result.report_key:
            click.echo(
                f"report: {dst.uri.rstrip('/')}/{result.report_key.removeprefix(dst.prefix).lstrip('/')}"
            )
    if job.failed:
        sys.exit(1)


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--queue", "-Q", default="cpu", show_default=True, help="Queue(s) to consume, comma-separated.")
@click.option(
    "--concurrency", "-c", type=int, default=None, help="Processes [default: CUTOUT_WORKER__CONCURRENCY]."
)
@click.option("--hostname", "-n", default=None, help="Node name [default: QUEUE@%h].")
@click.option("--loglevel", "-l", default=None)
@click.pass_context
def worker(
    ctx: click.Context, queue: str, concurrency: int | None, hostname: str | None, loglevel: str | None
) -> None:
    """Start a Celery worker on a queue with the fleet's defaults (extra args go to celery)."""
    settings = _settings()
    from cutout_fleet.worker.models.catalog import load_catalog
    from cutout_fleet.worker.sessions import check_models_installed

    try:
        check_models_installed(settings, load_catalog(settings))
    except ConfigError as exc:
        _fail(str(exc), EXIT_USAGE)
    from cutout_fleet.worker.celery_app import app

    argv = [
        "worker",
        "--queues",
        queue,
        "--concurrency",
        str(concurrency or settings.worker.concurrency),
        "--loglevel",
        loglevel or settings.worker.loglevel,
        "--hostname",
        hostname or f"{queue.replace(',', '-')}@%h",
        "--task-events",
        *ctx.args,
    ]
    app.worker_main(argv)


@cli.group()
def models() -> None:
    """List and fetch model files."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True)
def models_list(as_json: bool) -> None:
    """Each model in the catalogue and whether its file is present in CUTOUT_MODEL_DIR."""
    from cutout_fleet.worker.models.catalog import load_catalog
    from cutout_fleet.worker.models.pull import model_status

    settings = _settings()
    try:
        rows = model_status(settings, load_catalog(settings))
    except ConfigError as exc:
        _fail(str(exc), EXIT_USAGE)
    if as_json:
        click.echo(json.dumps([{**row.__dict__, "path": str(row.path)} for row in rows], indent=2))
        return
    click.echo(f"model dir: {settings.model_dir}")
    for row in rows:
        mark = "present" if row.present else "missing"
        click.echo(f"  {row.name:<20} {row.queue:<4} {mark:<8} {row.file}")


@models.command("pull")
@click.argument("names", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Download again even if a verified copy is present.")
def models_pull(names: tuple[str, ...], force: bool) -> None:
    """Download models into CUTOUT_MODEL_DIR, checking each against its published checksum."""
    from cutout_fleet.worker.models.catalog import load_catalog
    from cutout_fleet.worker.models.pull import pull_model

    settings = _settings()
    try:
        catalog = load_catalog(settings)
        for name in names:
            spec = catalog.get(name)
            with click.progressbar(
                length=spec.size_bytes or 0, label=f"pulling {name}", file=sys.stderr
            ) as bar:

                def progress(done: int, total: int | None) -> None:
                    if total:
                        bar.length = total
                    bar.update(done - bar.pos)

                path = pull_model(spec, settings.model_dir, progress=progress, force=force)
            click.echo(f"{name}: {path} (checksum verified)")
    except ConfigError as exc:
        _fail(str(exc))


if __name__ == "__main__":
    main()
