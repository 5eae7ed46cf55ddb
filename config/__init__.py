"""Configuration: the one settings class and the built-in model catalogue (models.toml).

`Settings` and `load_settings` are imported on first use: pydantic-settings costs ~0.1 s, which a
command that never reads a setting (`cutout --help`) should not pay.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cutout_fleet.config.settings import Settings, load_settings

__all__ = ["Settings", "load_settings"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("cutout_fleet.config.settings"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
