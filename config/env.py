"""The names of the environment variables that steer settings, and the settings file: light enough for
the CLI to use before it knows whether a command needs the settings at all."""

from __future__ import annotations

import os
from pathlib import Path

from cutout_fleet.errors import ConfigError

ENV_PREFIX = "CUTOUT_"
ENV_NESTED_DELIMITER = "__"
SECRETS_DIR_ENV = "CUTOUT_SECRETS_DIR"
ENV_FILE_ENV = "CUTOUT_ENV_FILE"


def env_file() -> Path | None:
    """The settings file named by $CUTOUT_ENV_FILE (which must be a file), else None."""
    value = os.environ.get(ENV_FILE_ENV)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(f"{ENV_FILE_ENV}={value} is not a file; fix the path or unset the variable")
    return path
