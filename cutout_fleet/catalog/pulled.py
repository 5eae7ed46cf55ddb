"""What `cutout models pull` records in the user catalogue: the full sha256 of a model whose authors
publish only its size and the start of its sha256 (BEN2).  The first pull checks both, then records the
whole file's sha256; every later load checks the file against that record.

A record is one table:

    [pulled.ben2]
    sha256 = "…"                      # the whole file, hashed after its size and prefix matched
    size_bytes = 222932053
    url = "https://…"                 # where it came from
    pulled_at = "2026-12-02T08:00:00Z"

The user catalogue is the file CUTOUT_MODEL_CATALOG names; without one it is `MODEL_DIR/pulled.toml`, which
holds records only (a model table there is refused: whoever can write the model folder must not be able to
change a built-in model's checksum).  A record whose sha256 does not start with the catalogue's published
prefix, or whose size differs, is stale (the catalogue moved to another file) and is ignored.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cutout_fleet.catalog.spec import ModelSpec
from cutout_fleet.config.settings import Settings
from cutout_fleet.errors import ConfigError

log = logging.getLogger(__name__)

PULLED_FILE = "pulled.toml"
PULLED_TABLE = "pulled"


class PulledRecord(BaseModel):
    """One model's record of its first pull."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    size_bytes: Annotated[int, Field(ge=1)]
    url: str | None = None
    pulled_at: str | None = None


def user_catalog_path(settings: Settings) -> Path:
    """Where pulls record: CUTOUT_MODEL_CATALOG, else MODEL_DIR/pulled.toml."""
    return settings.model_catalog or settings.model_dir / PULLED_FILE


def parse_records(tables: Any, origin: str) -> dict[str, PulledRecord]:
    """The [pulled.NAME] tables of one catalogue file."""
    if not isinstance(tables, dict):
        raise ConfigError(f"model catalogue {origin}: [{PULLED_TABLE}] must be a table of tables")
    records = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"model catalogue {origin}: expected a table [{PULLED_TABLE}.{name}]")
        try:
            records[name] = PulledRecord(**table)
        except ValidationError as exc:
            raise ConfigError(f"[{PULLED_TABLE}.{name}] in {origin}: {exc}") from exc
    return records


def apply_records(specs: dict[str, ModelSpec], records: dict[str, tuple[PulledRecord, str]]) -> None:
    """Give each prefix-only spec the full sha256 its first pull recorded (in place)."""
    for name, (record, origin) in records.items():
        spec = specs.get(name)
        if spec is None or spec.sha256 or spec.md5 or spec.sha256_prefix is None:
            continue  # a model that left the catalogue, or one whose whole checksum is published
        if record.size_bytes != spec.size_bytes or not record.sha256.startswith(spec.sha256_prefix):
            log.warning(
                "[%s.%s] in %s does not match the catalogue (%s); ignoring it: `cutout models pull %s` "
                "records the file it installs",
                PULLED_TABLE,
                name,
                origin,
                spec.checksum_rule(),
                name,
            )
            continue
        specs[name] = spec.model_copy(update={"pulled_sha256": record.sha256})


def record_pull(path: Path, name: str, record: PulledRecord) -> bool:
    """Write `record` as [pulled.NAME] into the catalogue file at `path` (created if missing), replacing an
    older record of that model and keeping everything else as it is.  False when it was already there."""
    try:
        text = path.read_text("utf-8") if path.is_file() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the model catalogue {path}: {exc}") from exc
    existing = _records_in(text, str(path)).get(name)
    if existing == record.sha256:
        return False
    header = re.compile(rf"^\[\s*{PULLED_TABLE}\s*\.\s*(?:{re.escape(name)}|\"{re.escape(name)}\")\s*\]")
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if header.match(line)]
    block = _block(name, record)
    if existing is not None and len(starts) != 1:
        raise ConfigError(
            f"{path} records {name!r} in a form this command does not rewrite; replace that record by hand "
            f"with:\n{block}"
        )
    if starts:
        end = next((i for i in range(starts[0] + 1, len(lines)) if lines[i].lstrip().startswith("[")), None)
        lines[starts[0] : end] = []
    kept = "".join(lines).rstrip()
    new_text = f"{kept}\n\n{block}" if kept else block
    if _records_in(new_text, str(path)).get(name) != record.sha256:  # a bug here, not bad input
        raise ConfigError(f"could not write the record of {name!r} into {path}; add it by hand:\n{block}")
    try:
        _write_atomically(path, new_text)
    except OSError as exc:
        raise ConfigError(
            f"cannot record the pull of {name!r} in {path} ({exc}); add this to that file by hand, or set "
            f"CUTOUT_MODEL_CATALOG to a file you can write:\n{block}"
        ) from exc
    return True


def _records_in(text: str, origin: str) -> dict[str, str]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"model catalogue {origin} is not valid TOML: {exc}") from exc
    tables = data.get(PULLED_TABLE, {})
    if not isinstance(tables, dict):
        return {}
    return {name: str(table.get("sha256")) for name, table in tables.items() if isinstance(table, dict)}


def _block(name: str, record: PulledRecord) -> str:
    key = name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else _toml_string(name)
    lines = [
        f"[{PULLED_TABLE}.{key}]",
        f"# Recorded by `cutout models pull {name}`: the whole file's sha256, taken after its size and the",
        "# published start of its sha256 matched.  Every load checks the file against it.",
        f'sha256 = "{record.sha256}"',
        f"size_bytes = {record.size_bytes}",
    ]
    if record.url is not None:
        lines.append(f"url = {_toml_string(record.url)}")
    if record.pulled_at is not None:
        lines.append(f"pulled_at = {_toml_string(record.pulled_at)}")
    return "\n".join(lines) + "\n"


def _toml_string(value: str) -> str:
    """A TOML basic string: backslash, quote and control characters escaped."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    escaped = re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\u{ord(m.group()):04x}", escaped)
    return f'"{escaped}"'


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(name, mode)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
