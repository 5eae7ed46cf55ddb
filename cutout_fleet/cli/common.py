"""Helpers shared by the `cutout` commands: settings, failures, the image options, locations, clients.

Nothing heavy is imported here at module level (no settings models, pydantic, boto3 or Redis): `cutout
--help` and a command's `--help` stay fast.  Each helper imports what it uses when it is called.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from cutout_fleet.config.env import ENV_FILE_ENV, env_file
from cutout_fleet.errors import ConfigError, CutoutError, InvalidOptions
from cutout_fleet.option_ranges import MASK_BLUR_RANGE_PX, MASK_OFFSET_RANGE_PX

if TYPE_CHECKING:
    from cutout_fleet.config.settings import Settings
    from cutout_fleet.options import ImageOptions
    from cutout_fleet.producer.publish import CeleryPublisher
    from cutout_fleet.state import RedisJobStore
    from cutout_fleet.state.leases import LeaseBoard
    from cutout_fleet.storage import Location

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
    from cutout_fleet.config.settings import load_settings

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
    from cutout_fleet.options import parse_background

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
        click.option(
            "--format",
            "fmt",
            type=click.Choice(["png", "webp", "jpeg"]),
            default="png",
            show_default=True,
            help="jpeg has no transparency: it needs --background white or #RRGGBB.",
        ),
        click.option(
            "--quality",
            type=click.IntRange(1, 100),
            default=None,
            help="JPEG and lossy WebP quality [default: CUTOUT_LIMITS__JPEG_QUALITY / WEBP_QUALITY, 90].",
        ),
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
        *_catalog_output_options(),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def _catalog_output_options() -> list[Callable[[F], F]]:
    """Crop, canvas, mask and shadow (README.md, "Catalog-ready outputs")."""
    return [
        click.option(
            "--preset",
            default=None,
            metavar="NAME",
            help="A named bundle of these options (`cutout presets` lists them); options given beside "
            "it win.",
        ),
        click.option(
            "--output",
            type=click.Choice(["cutout", "mask", "both"]),
            default="cutout",
            show_default=True,
            help="mask: the mask alone, an 8-bit grayscale PNG at OUTPUT_STEM.mask.png; both: the cutout "
            "and its mask.",
        ),
        click.option(
            "--crop",
            type=click.Choice(["none", "subject"]),
            default="none",
            show_default=True,
            help="subject: crop to the product's box (alpha >= --visible-threshold, specks ignored).",
        ),
        click.option(
            "--margin",
            default="0",
            show_default=True,
            help="Around the product: '5%' (of the canvas's shorter side; of the product's longer side "
            "without --canvas) or '40px' (output pixels).  With --fill, a minimum border.",
        ),
        click.option(
            "--canvas",
            default="none",
            show_default=True,
            help="WIDTHxHEIGHT, or 'square' (the longer side of the crop, capped at "
            "CUTOUT_FRAMING__MAX_SQUARE_PX): the product is scaled to fit and placed on it.",
        ),
        click.option(
            "--fill",
            type=click.FloatRange(0.0, 1.0, min_open=True),
            default=None,
            help="With --canvas: the product's box spans this share of the canvas along its limiting "
            "side (0.85: the usual marketplace rule).",
        ),
        click.option(
            "--align",
            type=click.Choice(["center", "bottom"]),
            default="center",
            show_default=True,
            help="Where the product sits on the canvas; bottom for products that stand on the ground.",
        ),
        click.option(
            "--shadow",
            type=click.Choice(["none", "drop"]),
            default="none",
            show_default=True,
            help="drop: a soft shadow under the product (in the alpha channel when transparent).",
        ),
        click.option(
            "--on-no-subject",
            type=click.Choice(["fail", "keep"]),
            default="fail",
            show_default=True,
            help="With --crop subject, when the mask shows no product: fail the item (no_subject), "
            "or write it uncropped and mark its report line.",
        ),
        click.option(
            "--visible-threshold",
            type=click.IntRange(1, 255),
            default=None,
            help="Alpha at or above which a pixel counts as product for --crop "
            "[default: CUTOUT_FRAMING__VISIBLE_THRESHOLD, 128].",
        ),
        click.option(
            "--max-upscale",
            type=click.FloatRange(1.0, 16.0),
            default=None,
            help="The most a product is enlarged to reach --fill [default: CUTOUT_FRAMING__MAX_UPSCALE, 4].",
        ),
    ]


def build_options(
    settings: Settings, model: str | None, fmt: str, preset: str | None = None, **values: Any
) -> ImageOptions:
    """The job's ImageOptions from the flags: the settings' defaults, then the preset, then the flags
    given on the command line.  An unknown model or preset, or a bad value, is a usage error."""
    from cutout_fleet.catalog import load_catalog
    from cutout_fleet.options import make_options
    from cutout_fleet.presets import load_presets

    name = model or settings.default_model
    flags = {"format": fmt, **values}
    given = {field: value for field, value in flags.items() if _given(field) and value is not None}
    defaults = {field: value for field, value in flags.items() if value is not None}
    defaults |= settings.framing.option_defaults()
    defaults["on_block"] = settings.safety.on_block
    defaults["on_review"] = settings.safety.on_review
    try:
        from_preset = load_presets(settings.framing.presets_file).expand(preset) if preset else {}
        load_catalog(settings).get(name)
        return make_options(**{**defaults, **from_preset, **given, "model": name})
    except (ConfigError, InvalidOptions) as exc:
        raise click.UsageError(str(exc)) from exc


# ImageOptions fields whose command-line parameter has another name.
_PARAMETERS = {"format": "fmt"}


def _given(field: str) -> bool:
    """True when the user wrote the flag (not a default): only those override a preset."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return True
    source = ctx.get_parameter_source(_PARAMETERS.get(field, field))
    return source not in (None, click.core.ParameterSource.DEFAULT, click.core.ParameterSource.DEFAULT_MAP)


def location(text: str, what: str) -> Location:
    from cutout_fleet.storage import parse_location

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
