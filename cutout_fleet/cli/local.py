"""Commands that run on this machine: run (embedded), worker, models."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from cutout_fleet.cli.common import build_options, image_options, location, reported, settings_or_exit
from cutout_fleet.cli.group import cli
from cutout_fleet.errors import ConfigError, InvalidOptions

if TYPE_CHECKING:
    from cutout_fleet.config.settings import Settings
    from cutout_fleet.embedded import EmbeddedResult
    from cutout_fleet.storage import Location


@cli.command()
@click.argument("source")
@click.option("--out", "out", required=True, help="Output folder or s3://BUCKET/PREFIX.")
@image_options
@click.option("--job-id", default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the job's final counts as JSON.")
def run(
    source: str, out: str, model: str | None, fmt: str, job_id: str | None, as_json: bool, **values: Any
) -> None:
    """Process SOURCE into --out on this machine: no Redis, no S3 server (folders or s3:// URIs).

    --out may not be SOURCE itself; a folder inside SOURCE is left out of the listing.
    """
    from cutout_fleet.embedded import run_embedded

    settings = settings_or_exit()
    options = build_options(settings, model, fmt, **values)
    src, dst = location(source, "SOURCE"), location(out, "--out")
    bar: Any = None

    def on_total(total: int) -> None:
        nonlocal bar
        bar = click.progressbar(length=max(total, 1), label="cutting out", file=sys.stderr, show_pos=True)
        bar.__enter__()

    try:
        with reported(ConfigError, InvalidOptions):  # a bad --job-id, --out over SOURCE: exit 2
            result = run_embedded(
                src,
                dst,
                options,
                settings,
                job_id=job_id,
                on_total=on_total,
                on_item=lambda n: bar.update(n) if bar else None,
            )
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    _print_run(result, dst, as_json)
    if result.job.failed:
        sys.exit(1)


def _print_run(result: EmbeddedResult, dst: Location, as_json: bool) -> None:
    job, not_listed = result.job, result.not_listed
    for file in not_listed.files:
        click.echo(f"cutout: left out {file.key}: {file.reason}", err=True)
    if not_listed.count > len(not_listed.files):
        click.echo(f"cutout: left out {not_listed.count - len(not_listed.files)} more such files", err=True)
    if as_json:
        left_out = {"count": not_listed.count, "files": [vars(file) for file in not_listed.files]}
        data = {**job.as_dict(), "report_key": result.report_key, "not_listed": left_out}
        click.echo(json.dumps(data, sort_keys=True))
        return
    counts = job.counts()
    click.echo(
        f"{counts['succeeded']} succeeded, {counts['failed']} failed, {counts['skipped']} skipped "
        f"({counts['ignored']} other files ignored"
        + (f", {not_listed.count} of them not regular files" if not_listed.count else "")
        + ")"
    )
    if result.report_key:
        click.echo(f"report: {dst.uri.rstrip('/')}/{result.report_key.removeprefix(dst.prefix).lstrip('/')}")


# One process owns a GPU: a second would load a second copy of the model into its memory and contend for it.
GPU_QUEUE_CONCURRENCY = 1


def worker_concurrency(settings: Settings, queues: list[str]) -> int:
    """A worker's processes when --concurrency is not given: CUTOUT_WORKER__CONCURRENCY when it is set,
    else 1 on the gpu queue and the setting's default elsewhere."""
    worker = settings.worker
    if settings.queues.gpu in queues and "concurrency" not in worker.model_fields_set:
        return GPU_QUEUE_CONCURRENCY
    return worker.concurrency


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--queue", "-Q", default="cpu", show_default=True, help="Queue(s) to consume, comma-separated.")
@click.option(
    "--concurrency",
    "-c",
    type=int,
    default=None,
    help="Processes [default: CUTOUT_WORKER__CONCURRENCY; on the gpu queue 1 unless that is set].",
)
@click.option("--hostname", "-n", default=None, help="Node name [default: QUEUE@%h].")
@click.option("--loglevel", "-l", default=None)
@click.pass_context
def worker(
    ctx: click.Context, queue: str, concurrency: int | None, hostname: str | None, loglevel: str | None
) -> None:
    """Start a Celery worker on a queue with the fleet's defaults (extra args go to celery).

    A worker whose CUTOUT_WORKER__MODELS include a gpu model refuses to start when that model's session does
    not get CUDA, unless CUTOUT_WORKER__ALLOW_CPU=true.
    """
    settings = settings_or_exit()
    from cutout_fleet.catalog import load_catalog
    from cutout_fleet.worker.sessions import check_models_installed

    with reported(ConfigError):
        check_models_installed(settings, load_catalog(settings))
    from cutout_fleet.worker.celery_app import app

    argv = [
        "worker",
        "--queues",
        queue,
        "--concurrency",
        str(concurrency or worker_concurrency(settings, queue.split(","))),
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
    from cutout_fleet.catalog import load_catalog
    from cutout_fleet.worker.models.pull import model_status

    settings = settings_or_exit()
    with reported(ConfigError):
        rows = model_status(settings, load_catalog(settings))
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
    """Download models into CUTOUT_MODEL_DIR, checking each against its published checksum.

    Where only a size and the start of a sha256 are published (ben2), the first pull records the file's
    full sha256 in the user catalogue (CUTOUT_MODEL_CATALOG, else CUTOUT_MODEL_DIR/pulled.toml), and every
    later load checks it.

    florence-2-large and llama-3.1-8b-instruct (the full safety workflow's caption and classifier) come
    from the Hugging Face Hub at the commit pinned in CUTOUT_SAFETY__CAPTION_MODEL /
    CUTOUT_SAFETY__CLASSIFIER_MODEL (HF_ENDPOINT and HF_TOKEN apply; needs the safety-full extra).
    """
    from cutout_fleet.catalog import load_catalog, user_catalog_path
    from cutout_fleet.worker.models.hub_pull import HUB_ROUTES, PULL_RECORD, pull_hub_model
    from cutout_fleet.worker.models.pull import pull_model

    settings = settings_or_exit()
    record_in = user_catalog_path(settings)
    with reported():
        catalog = load_catalog(settings)
        for name in names:
            if name in HUB_ROUTES:
                pin = getattr(settings.safety, HUB_ROUTES[name])
                pulled = pull_hub_model(
                    pin, settings.model_dir, progress=lambda line: click.echo(line, err=True), force=force
                )
                click.echo(
                    f"{name}: {pulled.path} ({pin.ref}: {len(pulled.files)} file(s), "
                    f"{pulled.size_bytes} bytes; their sha256 are recorded in {PULL_RECORD})"
                )
                continue
            spec = catalog.get(name)
            first_pull = spec.full_checksum() is None
            with click.progressbar(
                length=spec.size_bytes or 0, label=f"pulling {name}", file=sys.stderr
            ) as bar:

                def progress(done: int, total: int | None) -> None:
                    if total:
                        bar.length = total
                    bar.update(done - bar.pos)

                path = pull_model(
                    spec, settings.model_dir, progress=progress, force=force, record_in=record_in
                )
            if first_pull:
                click.echo(
                    f"{name}: {path} ({spec.checksum_rule()}, as published; its full sha256 is now recorded "
                    f"in {record_in}, and every load checks it)"
                )
            else:
                click.echo(f"{name}: {path} (checksum verified)")


@cli.command("presets")
@click.option("--json", "as_json", is_flag=True, help="Print every preset's options as JSON.")
def presets_command(as_json: bool) -> None:
    """List the catalog output presets (`--preset NAME`): built-in and CUTOUT_FRAMING__PRESETS_FILE's."""
    from cutout_fleet.options import FIELD_FLAGS
    from cutout_fleet.presets import load_presets

    settings = settings_or_exit()
    with reported(ConfigError):
        presets = load_presets(settings.framing.presets_file)
    listed = {
        name: {"description": preset.description, **{FIELD_FLAGS[k]: v for k, v in preset.options.items()}}
        for name, preset in sorted(presets.by_name.items())
    }
    if as_json:
        click.echo(json.dumps(listed, sort_keys=True, indent=2))
        return
    for name, values in listed.items():
        click.echo(f"{name}: {values.pop('description')}")
        flags = " ".join(f"--{flag.replace('_', '-')} {value}" for flag, value in values.items())
        click.echo(f"    {flags}")
