"""The model catalogue: the built-in TOML plus an optional user file (custom and test models), and the
records of first pulls (catalog/pulled.py)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cutout_fleet.catalog.pulled import PULLED_FILE, PULLED_TABLE, PulledRecord, apply_records, parse_records
from cutout_fleet.catalog.spec import ModelSpec
from cutout_fleet.config.settings import Settings
from cutout_fleet.errors import ConfigError

BUILTIN_CATALOG = "models.toml"


@dataclass(frozen=True)
class Catalog:
    specs: dict[str, ModelSpec]

    def get(self, name: str) -> ModelSpec:
        try:
            return self.specs[name]
        except KeyError:
            known = ", ".join(sorted(self.specs))
            raise ConfigError(f"unknown model {name!r}; known models: {known}") from None

    def names(self) -> list[str]:
        return sorted(self.specs)


def _load_toml(text: str, origin: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"model catalogue {origin} is not valid TOML: {exc}") from exc


def _tables(data: dict[str, Any], origin: str) -> dict[str, dict[str, Any]]:
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError(f"model catalogue {origin}: [models] must be a table of tables")
    return models


def parse_catalog(*sources: tuple[str, str]) -> Catalog:
    """Merge (text, origin) TOML sources; a later source overrides a model of the same name whole, and
    its [pulled.NAME] records (catalog/pulled.py) complete the checksums of prefix-only models."""
    merged: dict[str, dict[str, Any]] = {}
    origins: dict[str, str] = {}
    records: dict[str, tuple[PulledRecord, str]] = {}
    for text, origin in sources:
        data = _load_toml(text, origin)
        for name, table in _tables(data, origin).items():
            merged[name] = table
            origins[name] = origin
        for name, record in parse_records(data.get(PULLED_TABLE, {}), origin).items():
            records[name] = (record, origin)
    specs: dict[str, ModelSpec] = {}
    for name, table in merged.items():
        # Both would otherwise escape as a bare TypeError from ModelSpec(**table) instead of a ConfigError.
        if not isinstance(table, dict) or "name" in table:
            raise ConfigError(
                f"model {name!r} in {origins[name]}: expected a table [models.{name}] without a 'name' key "
                "(the table's name is the model's name)"
            )
        try:
            specs[name] = ModelSpec(name=name, **table)
        except ValidationError as exc:
            raise ConfigError(f"model {name!r} in {origins[name]}: {exc}") from exc
    apply_records(specs, records)
    return Catalog(specs)


def load_catalog(settings: Settings) -> Catalog:
    """The built-in catalogue merged with CUTOUT_MODEL_CATALOG (else with MODEL_DIR/pulled.toml, which
    holds only the records of pulls), parsed once per process.

    The cache key includes the user file's size and mtime, so an edited file is read again.
    """
    if settings.model_catalog is None:
        records = settings.model_dir / PULLED_FILE
        try:
            stat = records.stat()
        except OSError:
            return _load(None, None)
        return _load(str(records), (stat.st_size, stat.st_mtime_ns), records_only=True)
    path = Path(settings.model_catalog)
    try:
        stat = path.stat()
    except OSError:
        raise ConfigError(f"CUTOUT_MODEL_CATALOG: {path} does not exist") from None
    if not path.is_file():
        raise ConfigError(f"CUTOUT_MODEL_CATALOG: {path} is not a file")
    return _load(str(path), (stat.st_size, stat.st_mtime_ns))


@lru_cache(maxsize=8)
def _load(user_file: str | None, _version: tuple[int, int] | None, *, records_only: bool = False) -> Catalog:
    builtin = resources.files("cutout_fleet.config").joinpath(BUILTIN_CATALOG).read_text("utf-8")
    sources = [(builtin, "the built-in catalogue")]
    if user_file is not None:
        text = Path(user_file).read_text("utf-8")
        if records_only and set(_load_toml(text, user_file)) - {PULLED_TABLE}:
            raise ConfigError(
                f"{user_file} may hold only [{PULLED_TABLE}.NAME] records of `cutout models pull`; put model "
                "tables in a file named by CUTOUT_MODEL_CATALOG"
            )
        sources.append((text, user_file))
    return parse_catalog(*sources)
