"""Named bundles of options (`--preset NAME`): the built-in config/presets.toml plus an operator's file.

A preset is expanded into its options before anything is hashed or queued, so the options hash, the
job record and every task see only the options, never the preset's name.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cutout_fleet.errors import ConfigError, InvalidOptions
from cutout_fleet.options import FIELD_FLAGS, FLAG_FIELDS, ImageOptions

BUILTIN_PRESETS = "presets.toml"
# A preset sets how the image looks and what is written, not which model or safety checks run.
NOT_IN_PRESETS = frozenset({"model", "safety", "workflow", "on_block", "on_review", "attributes"})


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    options: Mapping[str, object]  # ImageOptions field names -> values, as validated


class UnknownPreset(InvalidOptions):
    code = "unknown_preset"


@dataclass(frozen=True)
class Presets:
    by_name: Mapping[str, Preset]

    def get(self, name: str) -> Preset:
        try:
            return self.by_name[name]
        except KeyError:
            known = ", ".join(sorted(self.by_name)) or "none"
            raise UnknownPreset(
                f"no preset named {name!r}; known presets: {known} (`cutout presets` lists them; "
                "operators add their own with CUTOUT_FRAMING__PRESETS_FILE)"
            ) from None

    def expand(self, name: str, given: Mapping[str, object] | None = None) -> dict[str, object]:
        """The preset's options with `given` (ImageOptions field names) on top: what was spelled out wins."""
        return {**self.get(name).options, **(given or {})}


def load_presets(presets_file: Path | None = None) -> Presets:
    """The built-in presets, then those of `presets_file` (a preset of the same name replaces one)."""
    return _load(presets_file)


@lru_cache(maxsize=4)
def _load(presets_file: Path | None) -> Presets:
    text = resources.files("cutout_fleet.config").joinpath(BUILTIN_PRESETS).read_text("utf-8")
    presets = _parse(text, BUILTIN_PRESETS)
    if presets_file is not None:
        try:
            extra = presets_file.read_text("utf-8")
        except OSError as exc:
            raise ConfigError(f"presets file {presets_file}: cannot read it ({exc.strerror})") from exc
        presets.update(_parse(extra, str(presets_file)))
    return Presets(presets)


def _parse(text: str, where: str) -> dict[str, Preset]:
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"presets file {where}: not valid TOML ({exc})") from exc
    table = data.get("presets", {})
    if set(data) - {"presets"} or not isinstance(table, dict):
        raise ConfigError(f"presets file {where}: expected only [presets.NAME] tables")
    return {name: _preset(name, values, where) for name, values in table.items()}


def _preset(name: str, values: object, where: str) -> Preset:
    at = f"presets file {where}, preset {name!r}"
    if not isinstance(values, dict):
        raise ConfigError(f"{at}: expected a table of options")
    description = str(values.get("description", ""))
    flags = {flag: value for flag, value in values.items() if flag != "description"}
    unknown = sorted(set(flags) - set(FLAG_FIELDS))
    if unknown:
        raise ConfigError(f"{at}: unknown option(s) {', '.join(unknown)}")
    fields = {FLAG_FIELDS[flag]: value for flag, value in flags.items()}
    banned = sorted(FIELD_FLAGS[field] for field in set(fields) & NOT_IN_PRESETS)
    if banned:
        raise ConfigError(f"{at}: a preset cannot set {', '.join(banned)} (give it beside --preset)")
    try:
        options = ImageOptions.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{FIELD_FLAGS.get(str(err['loc'][0]), err['loc'][0]) if err['loc'] else 'options'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{at}: {problems}") from exc
    # As validated: "White" is stored as "#ffffff", "5 %" as "5%", like options given as flags.
    return Preset(name, description, {field: getattr(options, field) for field in fields})
