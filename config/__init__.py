"""Configuration: the one settings class and the built-in model catalogue (models.toml)."""

from cutout_fleet.config.settings import Settings, load_settings

__all__ = ["Settings", "load_settings"]
