"""Helpers shared by the `cutout` commands: settings, failures, the image options, locations, clients."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from cutout_fleet.config.settings import ENV_FILE_ENV, Settings, env_file, load_settings
from cutout_fleet.errors import ConfigError, CutoutError, InvalidOptions
from cutout_fleet.options import (
    MASK_BLUR_RANGE_PX,
    MASK_OFFSET_RANGE_PX,
    ImageOptions,
    make_options,
    parse_background,
)
from cutout_fleet.storage import Location, parse_location

if TYPE_CHECKING:
    from cutout_fleet.producer.publish import CeleryPublisher
    from cutout_fleet.state import RedisJobStore
    from cutout_fleet.state.leases import LeaseBoard

EXIT_FAILED = 1
EXIT_USAGE = 2

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"cutout: {message}", err=True)
    sys.exit(code)


@contextmanager
def reported(*usage_errors: type[CutoutError]) -> Iterator[None]:
    """A CutoutError in the block ends the command with `cutout: MESSAGE`: exit 2 for the kinds in
    `usage_errors` (the user's input is wrong), else exit 1."""
    try:
        yield
    except CutoutError as exc:
        fail(str(exc), EXIT_USAGE if isinstance(exc, usage_errors) else EXIT_FAILED)


def settings_or_exit() -> Settings:
    """The settings, or exit 2 naming the bad variable; says on stderr which settings file was read."""
    with reported(ConfigError):
        settings, path = load_settings(), env_file()
    if path is not None:
        click.echo(f"cutout: settings read from {path} ({ENV_FILE_ENV})", err=True)
    return settings


def _use_env_file(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    # Through the environment, so the processes a command starts (a worker's pool) read the same file.
    if value is not None:
        os.environ[ENV_FILE_ENV] = value


env_file_option = click.option(
    "--env-file",
    type=click.Path(exists=True, dir_okay=False, resolve_path=True),
    expose_value=False,
    is_eager=True,
    callback=_use_env_file,
    help=f"Read settings from this KEY=VALUE file too [default: ${ENV_FILE_ENV}]; "
    "a .env in the working directory is never read on its own.",
)


def _check_background(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        parse_background(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    return value


def _pixels_option(flag: str, name: str, bounds: tuple[int, int], help_text: str) -> Callable[[F], F]:
    return click.option(
        flag, name, type=click.IntRange(*bounds), default=0, show_default=True, help=help_text
    )


def image_options(func: F) -> F:
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
        _pixels_option(
            "--mask-blur",
            "mask_blur_px",
            MASK_BLUR_RANGE_PX,
            "Gaussian blur radius in pixels of the original image.",
        ),
        _pixels_option(
            "--mask-offset",
            "mask_offset_px",
            MASK_OFFSET_RANGE_PX,
            "Grow (+) or shrink (-) the mask by this many pixels, after the blur.",
        ),
        click.option("--format", "fmt", type=click.Choice(["png", "webp"]), default="png", show_default=True),
        click.option(
            "--safety",
            type=click.Choice(["none", "light", "full"]),
            default="none",
            show_default=True,
            help="light: NudeNet's detections and the gate decide allow / review / block for each image, "
            "written as OUTPUT_STEM.verdict.json beside the cutout (needs the safety-light extra); "
            "full: the same as --workflow full.",
        ),
        click.option(
            "--on-block",
            type=click.Choice(["drop", "quarantine", "write"]),
            default=None,
            help="What a `block` decision does with the cutout [default: CUTOUT_SAFETY__ON_BLOCK, drop].",
        ),
        click.option(
            "--on-review",
            type=click.Choice(["quarantine", "write"]),
            default=None,
            help="What a `review` decision does with it [default: CUTOUT_SAFETY__ON_REVIEW, quarantine].",
        ),
        click.option(
            "--workflow",
            type=click.Choice(["simple", "full"]),
            default="simple",
            show_default=True,
            help="simple: the cutout and the --safety level; full: the cutout, then NudeNet, a Florence-2 "
            "caption and the Llama classifier feed the gate (needs the safety-full extra and both Hub "
            "models on the worker; meant for the gpu queue).",
        ),
        click.option(
            "--attributes",
            default="",
            metavar="LIST",
            help="With --workflow full: catalog attributes the classifier adds to each verdict, comma-"
            "separated, from product_type, colors, material.",
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def build_options(settings: Settings, model: str | None, fmt: str, **values: Any) -> ImageOptions:
    """The job's ImageOptions from the flags; an unknown model or a bad value is a usage error."""
    from cutout_fleet.catalog import load_catalog

    name = model or settings.default_model
    values["on_block"] = values.get("on_block") or settings.safety.on_block
    values["on_review"] = values.get("on_review") or settings.safety.on_review
    try:
        load_catalog(settings).get(name)
        return make_options(model=name, format=fmt, **values)
    except (ConfigError, InvalidOptions) as exc:
        raise click.UsageError(str(exc)) from exc


def location(text: str, what: str) -> Location:
    try:
        return parse_location(text)
    except ConfigError as exc:
        raise click.UsageError(f"{what}: {exc}") from exc


def job_store(settings: Settings) -> RedisJobStore:
    from cutout_fleet.connections import redis_client
    from cutout_fleet.state import RedisJobStore

    return RedisJobStore(redis_client(settings), settings.job_ttl_s)


def lease_board(settings: Settings) -> LeaseBoard:
    from cutout_fleet.connections import redis_client
    from cutout_fleet.state.leases import LeaseBoard

    return LeaseBoard(redis_client(settings), settings.worker.lease_s)


def publisher(settings: Settings) -> CeleryPublisher:
    from cutout_fleet.connections import celery_broker_options, redis_client
    from cutout_fleet.producer.publish import CeleryPublisher, producer_app

    return CeleryPublisher(
        producer_app(settings.redis_url, celery_broker_options(settings)),
        settings.worker,
        client=redis_client(settings),
    )


def queue_for(settings: Settings) -> Callable[[str], str]:
    """model name -> the queue its workers consume (see `cutout_fleet.routing.queue_for_model`)."""
    from cutout_fleet.routing import queue_for_model

    return partial(queue_for_model, settings)
