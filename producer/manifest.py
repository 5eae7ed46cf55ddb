"""Job manifests: stream (bucket, key, version, per-key options) entries from local or S3 CSV/JSONL files.

CSV is the S3 Batch Operations manifest: `bucket,key[,version_id]`, no header, URL-encoded keys.
JSONL is one object per line: `key`, `bucket`, `version` and per-key options named as the CLI flags.
Both are read line by line, so memory stays flat however long the manifest; the validation pass
(`scan_manifest`) adds 8 bytes per line, to find objects named twice (`manifest_repeats`).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import PurePosixPath
from typing import Literal
from urllib.parse import unquote_plus

from pydantic import ValidationError

from cutout_fleet.errors import InvalidOptions
from cutout_fleet.keys import is_image_key
from cutout_fleet.options import FIELD_FLAGS, FLAG_FIELDS, ImageOptions
from cutout_fleet.presets import Presets
from cutout_fleet.producer.manifest_lines import ManifestError, read_lines
from cutout_fleet.producer.manifest_repeats import RepeatFinder, repeats_message
from cutout_fleet.storage import S3Client

ManifestFormat = Literal["csv", "jsonl"]

FORMAT_BY_EXTENSION: dict[str, ManifestFormat] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
# S3's bucket naming rules, less the rarely met ones (no `..`, not an IP address): 3-63 characters of
# lowercase letters, digits, dots and hyphens, beginning and ending with a letter or digit.
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_BUCKET_RULE = "3-63 lowercase letters, digits, dots or hyphens, starting and ending with a letter or digit"
# A JSONL line names options as the CLI flags do (cutout_fleet.options.FLAG_FIELDS), plus `preset`.
OPTION_FIELDS = FLAG_FIELDS
_FLAG_NAMES = FIELD_FLAGS
JSONL_FIELDS = ("key", "bucket", "version", "preset", *OPTION_FIELDS)


@dataclass(frozen=True)
class ManifestEntry:
    bucket: str
    key: str
    version: str | None
    options: dict[str, object]  # per-key overrides only, by ImageOptions field name; empty for CSV
    line: int


@dataclass(frozen=True)
class ManifestScan:
    entries: int
    buckets: frozenset[str]
    models: frozenset[str]  # models named by per-key options (the job's default is not included)
    image_entries: int
    ignored_entries: int  # keys without an image extension


def manifest_format(location: str, fmt: ManifestFormat | None = None) -> ManifestFormat:
    """`fmt` when given, else the format the manifest's extension names."""
    if fmt is not None:
        return fmt
    found = FORMAT_BY_EXTENSION.get(PurePosixPath(location).suffix.lower())
    if found is None:
        raise ManifestError(
            f"manifest {location}: cannot tell its format from the extension; name it .csv, .jsonl or "
            ".ndjson, or pass --manifest-format csv|jsonl"
        )
    return found


def is_bucket_name(name: str) -> bool:
    return _BUCKET_NAME.fullmatch(name) is not None


def iter_manifest(
    location: str,
    *,
    s3_client: S3Client | None = None,  # needed for s3:// only
    fmt: ManifestFormat | None = None,
    default_bucket: str | None = None,
    etag: str | None = None,
    line_options: LineOptions | None = None,
) -> Iterator[ManifestEntry]:
    """Stream the entries of a local or `s3://` manifest, validating each line as it is read.

    `default_bucket` stands in for a JSONL line without a `bucket`; `etag` (`manifest_etag`) pins an
    `s3://` manifest to the object that was validated. Nothing is read until the first entry is asked
    for, but a bad format or default bucket is refused at once.
    """
    kind = manifest_format(location, fmt)
    if default_bucket is not None and not is_bucket_name(default_bucket):
        raise ManifestError(
            f"default bucket {default_bucket!r} is not a valid S3 bucket name ({_BUCKET_RULE})"
        )
    lines = read_lines(location, s3_client, etag=etag)
    if kind == "csv":
        return _csv_entries(lines, location)
    return _jsonl_entries(lines, location, default_bucket, line_options or LineOptions())


def scan_manifest(
    location: str,
    *,
    s3_client: S3Client | None = None,  # needed for s3:// only
    fmt: ManifestFormat | None = None,
    default_bucket: str | None = None,
    etag: str | None = None,
    line_options: LineOptions | None = None,
) -> ManifestScan:
    """Validate every line and count: the producer's first pass, so a bad line fails before any enqueue.

    An object (bucket, key, version) named on more than one line is refused with those lines' numbers,
    even when the lines are the same: a job has one outcome per object.  Finding the lines reads the
    manifest once more, only when there is a repeat.
    """
    entries = images = 0
    buckets: set[str] = set()
    models: set[str] = set()
    finder = RepeatFinder()
    read = partial(
        iter_manifest,
        location,
        s3_client=s3_client,
        fmt=fmt,
        default_bucket=default_bucket,
        etag=etag,
        line_options=line_options,
    )
    for entry in read():
        finder.add(entry)
        entries += 1
        buckets.add(entry.bucket)
        model = entry.options.get("model")
        if isinstance(model, str):
            models.add(model)
        if is_image_key(entry.key):
            images += 1
    repeats = finder.repeats(read())
    if repeats:
        raise ManifestError(repeats_message(location, repeats))
    return ManifestScan(entries, frozenset(buckets), frozenset(models), images, entries - images)


# --- CSV --------------------------------------------------------------------------------------------------


def _is_header(row: list[str]) -> bool:
    names = [field.strip().lower() for field in row]
    # A bucket really named "bucket" holding a key "key" would be skipped too; S3 Batch Operations
    # never writes a header, so a first row that reads like one is taken to be one.
    return names[:2] == ["bucket", "key"] and (len(names) == 2 or names[2].startswith("version"))


def _csv_entries(lines: Iterator[str], where: str) -> Iterator[ManifestEntry]:
    reader = csv.reader(lines, strict=True)
    last_line = 0
    first_row = True
    try:
        for row in reader:
            # A quoted field may span lines: an entry is named by the line it starts on.
            number, last_line = last_line + 1, reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if first_row:
                first_row = False
                if _is_header(row):
                    continue
            yield _csv_entry(row, number, where)
    except csv.Error as exc:
        raise ManifestError(
            f"manifest {where}, line {reader.line_num}: not valid CSV ({exc}); quote a field that holds a "
            'comma, quote or newline, doubling any " inside it'
        ) from exc


def _csv_entry(row: list[str], number: int, where: str) -> ManifestEntry:
    at = f"manifest {where}, line {number}"
    if len(row) not in (2, 3):
        raise ManifestError(
            f"{at}: expected bucket,key or bucket,key,version_id but found {len(row)} field(s); "
            "URL-encode the key (as S3 Batch Operations does) or quote it if it holds a comma"
        )
    # Surrounding blanks cannot belong to a key here: a key's own spaces are URL-encoded (+ or %20).
    bucket, encoded_key = row[0].strip(), row[1].strip()
    version = row[2].strip() if len(row) == 3 else ""
    if not bucket:
        raise ManifestError(f"{at}: the bucket (first field) is empty; write bucket,key[,version_id]")
    if not is_bucket_name(bucket):
        raise ManifestError(
            f"{at}: {bucket!r} is not a valid S3 bucket name ({_BUCKET_RULE}); "
            "the first field must be the bucket"
        )
    key = unquote_plus(encoded_key)
    if not key:
        raise ManifestError(f"{at}: the key (second field) is empty; write bucket,key[,version_id]")
    return ManifestEntry(bucket=bucket, key=key, version=version or None, options={}, line=number)


# --- JSONL ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineOptions:
    """How a JSONL line's options are read: its presets, and the job's options the line's go on top of
    (a line's options are checked together with them: `format: jpeg` needs the job's background)."""

    presets: Presets | None = None
    job: ImageOptions | None = None


def _jsonl_entries(
    lines: Iterator[str], where: str, default_bucket: str | None, line_options: LineOptions
) -> Iterator[ManifestEntry]:
    for number, line in enumerate(lines, 1):
        if line.strip():
            yield _jsonl_entry(line, number, where, default_bucket, line_options)


def _jsonl_entry(
    line: str, number: int, where: str, default_bucket: str | None, line_options: LineOptions
) -> ManifestEntry:
    at = f"manifest {where}, line {number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ManifestError(
            f"{at}: not valid JSON ({exc.msg} at column {exc.colno}); write one JSON object per line"
        ) from exc
    if not isinstance(record, dict):
        raise ManifestError(f'{at}: expected a JSON object such as {{"key": "photos/a.jpg"}}')
    unknown = sorted(set(record) - set(JSONL_FIELDS))
    if unknown:
        raise ManifestError(
            f"{at}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(JSONL_FIELDS)}"
        )
    key = record.get("key")
    if not isinstance(key, str) or not key:
        raise ManifestError(f'{at}: "key" must be a non-empty string (the object key, not URL-encoded)')
    # null means "not given": tools that write every field on every line put it for an empty cell.
    bucket = record.get("bucket")
    if bucket is None:
        bucket = default_bucket
        if bucket is None:
            raise ManifestError(f'{at}: no bucket; add "bucket" to the line or give a default bucket')
    elif not isinstance(bucket, str) or not is_bucket_name(bucket):
        raise ManifestError(f"{at}: {bucket!r} is not a valid S3 bucket name ({_BUCKET_RULE})")
    version = record.get("version")
    if version is not None and not isinstance(version, str):
        raise ManifestError(f'{at}: "version" must be a string (an S3 version id) or null')
    overrides = {
        OPTION_FIELDS[name]: value
        for name, value in record.items()
        if name in OPTION_FIELDS and value is not None
    }
    preset = record.get("preset")
    if preset is not None:
        overrides = _with_preset(preset, overrides, line_options.presets, at)
    options = _validated(overrides, at, line_options.job)
    return ManifestEntry(bucket=bucket, key=key, version=version or None, options=options, line=number)


def _with_preset(
    name: object, overrides: dict[str, object], presets: Presets | None, at: str
) -> dict[str, object]:
    """The line's options on top of its preset's (expanded here: tasks and hashes never see a name)."""
    if not isinstance(name, str):
        raise ManifestError(f'{at}: "preset" must be a preset name such as "marketplace-main"')
    if presets is None:
        raise ManifestError(f"{at}: presets cannot be used here")
    try:
        return presets.expand(name, overrides)
    except InvalidOptions as exc:
        raise ManifestError(f"{at}: {exc}") from exc


def _validated(overrides: dict[str, object], at: str, job: ImageOptions | None) -> dict[str, object]:
    """The per-key overrides, checked now on top of the job's options and normalised as a task will see
    them ("White" -> "#ffffff")."""
    if not overrides:
        return {}
    try:
        base = job.model_dump() if job is not None else {}
        options = ImageOptions.model_validate({**base, **overrides})
    except ValidationError as exc:
        # Name each problem as the line spelled it (mask_blur), not as ImageOptions does (mask_blur_px).
        problems = "; ".join(f"{_flag_name(err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ManifestError(f"{at}: invalid options: {problems}") from exc
    return {field: getattr(options, field) for field in overrides}


def _flag_name(loc: tuple[int | str, ...]) -> str:
    return _FLAG_NAMES.get(str(loc[0]), str(loc[0])) if loc else "options"
