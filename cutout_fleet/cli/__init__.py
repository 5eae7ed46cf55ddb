"""The `cutout` command: a thin click layer over functions a library user can call too."""

# Importing these modules registers their commands on the group.
from cutout_fleet.cli import enqueue, flower, lifecycle, local, status  # noqa: F401
from cutout_fleet.cli.group import cli, main

__all__ = ["cli", "main"]
