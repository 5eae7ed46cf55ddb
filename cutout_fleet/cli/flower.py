"""`cutout flower`: Flower on the fleet's broker, on the loopback by default, never without a login.

Flower's own `celery flower` takes its login from `--basic-auth=user:password` (visible in `ps` to
every user of the machine) or FLOWER_BASIC_AUTH, and without either serves everything to anyone.  This
command takes the login from the settings (CUTOUT_FLOWER__USERNAME / __PASSWORD, or their files in the
secrets directory) and hands it to Flower inside this process: it appears on no command line.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import TYPE_CHECKING

import click

from cutout_fleet.cli.common import EXIT_USAGE, fail, settings_or_exit
from cutout_fleet.cli.group import cli

if TYPE_CHECKING:
    from celery import Celery

    from cutout_fleet.config.settings import Settings

# Flower reads these from the environment after we set its options; they would replace our login
# (FLOWER_BASIC_AUTH) or load another configuration, so the fleet's settings stay the one source.
_OVERRIDING_FLOWER_ENV = ("FLOWER_BASIC_AUTH", "FLOWER_CONF")

MISSING_LOGIN = (
    "Flower is never served without a login: set CUTOUT_FLOWER__USERNAME and CUTOUT_FLOWER__PASSWORD "
    "(or put them in the files cutout_flower__username and cutout_flower__password in the secrets "
    "directory, $CUTOUT_SECRETS_DIR or /run/secrets/cutout)"
)
MISSING_FLOWER = "Flower is not installed here: pip install 'cutout-fleet[monitor]'"


def basic_auth(settings: Settings) -> str | None:
    """`user:password` for Flower's basic auth, or None when either half is missing or empty."""
    flower = settings.flower
    password = flower.password.get_secret_value() if flower.password is not None else ""
    if not flower.username or not password:
        return None
    return f"{flower.username}:{password}"


def monitor_app(settings: Settings) -> Celery:
    """A Celery app that only watches: the fleet's broker and its TLS options, no tasks.  Flower learns
    the queues from the live workers."""
    from celery import Celery

    from cutout_fleet.connections import celery_broker_options

    app = Celery("cutout_fleet.monitor")
    app.conf.update(
        broker_url=settings.redis_url,
        accept_content=["json"],
        event_serializer="json",
        task_serializer="json",
        broker_connection_retry_on_startup=True,
        **celery_broker_options(settings),
    )
    return app


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
@click.option(
    "--address", default=None, help="Address to listen on [default: CUTOUT_FLOWER__ADDRESS, 127.0.0.1]."
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="[default: CUTOUT_FLOWER__PORT, 5555]."
)
def flower(ctx: click.Context, address: str | None, port: int | None) -> None:
    """Start Flower on the fleet's Redis, behind basic auth, on 127.0.0.1 unless told otherwise.

    Other Flower options (e.g. --url_prefix=flower) are passed on; --basic-auth is not accepted there.

    Flower's /healthcheck and /metrics answer without the login: keep the port off untrusted networks.
    """
    settings = settings_or_exit()
    login = basic_auth(settings)
    if login is None:
        fail(MISSING_LOGIN, EXIT_USAGE)
    if importlib.util.find_spec("flower") is None:
        fail(MISSING_FLOWER, EXIT_USAGE)

    # Importing it defines Flower's options on tornado's global registry (Flower ships no types).
    options = importlib.import_module("flower.options").options
    options.basic_auth = [login]
    for name in _OVERRIDING_FLOWER_ENV:
        os.environ.pop(name, None)
    monitor_app(settings).start(
        [
            "flower",
            f"--address={address or settings.flower.address}",
            f"--port={port or settings.flower.port}",
            # An empty configuration: a stray flowerconfig.py in the working folder is not read.
            f"--conf={os.devnull}",
            *_passed_on(ctx.args),
        ]
    )


def _passed_on(args: list[str]) -> list[str]:
    """Flower options given after ours; the login comes only from the settings."""
    if any(arg.startswith(("--basic-auth", "--basic_auth", "--auth")) for arg in args):
        fail(
            "cutout flower: the login comes from CUTOUT_FLOWER__USERNAME/__PASSWORD, not --basic-auth",
            EXIT_USAGE,
        )
    return list(args)
