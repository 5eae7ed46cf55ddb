"""Helpers shared by the `cutout` commands: settings, failures, the image options, locations."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

from cutout_fleet.config.settings import Settings, load_settings
from cutout_fleet.errors import ConfigError, InvalidOptions
from cutout_fleet.options import (
    MASK_BLUR_RANGE_PX,
    MASK_OFFSET_RANGE_PX,
    ImageOptions,
    make_options,
    parse_background,
)
from cutout_fleet.storage import Location, parse_location

EXIT_USAGE = 2


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"cutout: {message}", err=True)
    sys.exit(code)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)


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


def build_options(settings: Settings, model: str | None, fmt: str, **values: Any) -> ImageOptions:
    from cutout_fleet.catalog import load_catalog

    name = model or settings.default_model
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


def job_store(settings: Settings):
    from cutout_fleet.connections import redis_client
    from cutout_fleet.state import RedisJobStore

    return RedisJobStore(redis_client(settings), settings.job_ttl_s)


def publisher(settings: Settings):
    from cutout_fleet.connections import celery_broker_options, redis_client
    from cutout_fleet.producer.publish import CeleryPublisher, producer_app

    worker = settings.worker
    return CeleryPublisher(
        producer_app(settings.redis_url, celery_broker_options(settings)),
        worker.item_time_limit_s,
        worker.hard_limit_grace_s,
        client=redis_client(settings),
    )


def queue_for(settings: Settings):
    """model name -> the queue its workers consume (from the model's spec)."""
    from cutout_fleet.catalog import load_catalog

    catalog = load_catalog(settings)

    def lookup(model: str) -> str:
        return settings.queues.cpu if catalog.get(model).queue == "cpu" else settings.queues.gpu

    return lookup
