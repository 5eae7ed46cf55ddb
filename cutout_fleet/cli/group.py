"""The `cutout` command group and its console entry point."""

from __future__ import annotations

import click

from cutout_fleet.cli.common import env_file_option, fail


@click.group()
@click.version_option(package_name="cutout-fleet")
@env_file_option
def cli() -> None:
    """Remove backgrounds from catalog photos at scale: S3 prefix -> Redis -> Celery workers -> S3."""


def main() -> None:
    """Console entry point: service outages become one readable line, not a traceback."""
    try:
        cli()
    except Exception as exc:
        # Imported only now: a command that never talks to Redis (`--help`) does not load them.
        import kombu.exceptions
        import redis.exceptions

        outage = (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            kombu.exceptions.OperationalError,
        )
        if isinstance(exc, outage):
            fail(f"cannot reach Redis (CUTOUT_REDIS_URL): {exc}")
        raise
