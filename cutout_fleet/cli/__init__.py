"""The `cutout` command: a thin click layer over functions a library user can call too."""

from cutout_fleet.cli import jobs, local  # noqa: F401  (they register their commands on the group)
from cutout_fleet.cli.group import cli, main

__all__ = ["cli", "main"]
