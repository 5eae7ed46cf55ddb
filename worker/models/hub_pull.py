"""`cutout models pull` for the full safety workflow's Hugging Face Hub models (see HUB_ROUTES).

A pin (`HubModelPin`) names a repo, a commit and either one file (the Llama GGUF) or the whole snapshot
(the Florence-2 folder).  huggingface_hub downloads it into a temporary folder beside the pinned folder
(`model_dir/hub/OWNER--NAME/COMMIT`), every file is hashed, a record (PULL_RECORD) is written, and only
then is the folder renamed into place: the pinned folder is either absent or complete, and a failed pull
leaves nothing behind.  A model whose record matches its pin and whose files have the recorded sizes is
not downloaded again, and needs neither the network nor huggingface_hub.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from cutout_fleet.config.settings import HubModelPin
from cutout_fleet.errors import ConfigError, ModelDownloadFailed

log = logging.getLogger(__name__)

# `cutout models pull NAME` -> the SafetySettings field that holds the pin.
HUB_ROUTES: dict[str, str] = {
    "florence-2-large": "caption_model",
    "llama-3.1-8b-instruct": "classifier_model",
}
PULL_RECORD = ".cutout-pull.json"  # in the pinned folder (for a file pin: beside the file)
WEIGHTS_FILE = "model.safetensors"  # a snapshot's main file; without it, its largest file
HUB_BOOKKEEPING = PurePosixPath(".cache/huggingface")  # what huggingface_hub leaves in a local_dir
_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE_WORDS = frozenset({"1", "ON", "YES", "TRUE"})  # huggingface_hub's reading of a boolean variable
_CHUNK_BYTES = 1024 * 1024
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS})

Progress = Callable[[str], None]


@dataclass(frozen=True)
class HubPull:
    path: Path  # the folder (snapshot) or the file (GGUF)
    files: dict[str, str]  # relative file name -> sha256 of what was written
    size_bytes: int


def pull_hub_model(
    pin: HubModelPin,
    model_dir: Path,
    *,
    endpoint: str | None = None,
    progress: Progress | None = None,
    force: bool = False,
) -> HubPull:
    """Make `pin` present in `model_dir` (at `pin.local_path(model_dir)`); download it only when needed,
    or always with `force` (a copy damaged on disk: its record still matches, its bytes do not).

    `endpoint` None: huggingface_hub's own (HF_ENDPOINT, else huggingface.co); HF_TOKEN is its own too.
    """
    say = progress or _silent
    present = None if force else _already_pulled(pin, model_dir)
    if present is not None:
        say(f"{pin.ref}: already pulled at {present.path}")
        return present
    hub = _import_hub()
    source = endpoint or str(hub.constants.ENDPOINT)
    folder = _pin_folder(pin, model_dir)
    if _offline(hub):
        raise ModelDownloadFailed(
            f"cannot pull {pin.ref} from {source}: huggingface_hub is offline (HF_HUB_OFFLINE or "
            f"TRANSFORMERS_OFFLINE is set). Unset it, or pull on a machine that can reach the Hub and copy "
            f"{folder} here."
        )
    staging: Path | None = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".part"))
        say(f"{pin.ref}: downloading from {source}")
        _download(hub, pin, staging, endpoint, source)
        shutil.rmtree(staging / HUB_BOOKKEEPING, ignore_errors=True)
        _remove_if_empty(staging / HUB_BOOKKEEPING.parent)
        files, sizes = _hash_files(staging)
        if pin.file is not None and pin.file not in files:
            raise ModelDownloadFailed(f"cannot pull {pin.ref} from {source}: the download has no {pin.file}")
        record = _record(pin, files, sizes)
        (staging / PULL_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        _install(staging, folder)
    except OSError as exc:  # the download's own errors are ModelDownloadFailed by now: this is the disk
        raise ConfigError(
            f"cannot install {pin.ref} in {folder}: {exc}. Check that the model dir is writable and has room."
        ) from exc
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)  # nothing left after the rename
    pull = HubPull(pin.local_path(model_dir), files, record["size"])
    log.info("model %s: installed %s (%d files, %d bytes)", pin.ref, pull.path, len(files), pull.size_bytes)
    say(f"{pin.ref}: installed {pull.path} ({len(files)} files, {pull.size_bytes} bytes)")
    return pull


def read_pull_record(pin: HubModelPin, model_dir: Path) -> dict[str, Any] | None:
    """The pin's pull record, or None when it is absent, unreadable or made for another pin."""
    try:
        record = json.loads((_pin_folder(pin, model_dir) / PULL_RECORD).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    if (record.get("repo"), record.get("revision"), record.get("file")) != (pin.repo, pin.revision, pin.file):
        return None
    files, sizes, size = record.get("files"), record.get("file_sizes"), record.get("size")
    well_formed = (
        isinstance(files, dict)
        and isinstance(sizes, dict)
        and files.keys() == sizes.keys()
        and all(isinstance(digest, str) for digest in files.values())
        and all(isinstance(bytes_, int) for bytes_ in sizes.values())
        and isinstance(size, int)
    )
    return record if well_formed else None


def main_file_sha256(pin: HubModelPin, model_dir: Path) -> str:
    """The recorded sha256 of the GGUF, or of a snapshot's weights file; "" when unknown.  Never hashes."""
    record = read_pull_record(pin, model_dir)
    if record is None:
        return ""
    files: dict[str, str] = record["files"]
    sizes: dict[str, int] = record["file_sizes"]
    if pin.file is not None:
        return files.get(pin.file, "")
    if WEIGHTS_FILE in files:
        return files[WEIGHTS_FILE]
    if not files:
        return ""
    return files[max(files, key=lambda name: (sizes[name], name))]


def _silent(_message: str) -> None:
    pass


def _pin_folder(pin: HubModelPin, model_dir: Path) -> Path:
    """The commit's folder: the snapshot itself, or the folder that holds the pinned file."""
    path = pin.local_path(model_dir)
    for _ in PurePosixPath(pin.file).parts if pin.file else ():
        path = path.parent
    return path


def _already_pulled(pin: HubModelPin, model_dir: Path) -> HubPull | None:
    record = read_pull_record(pin, model_dir)
    if record is None or (pin.file is not None and pin.file not in record["files"]):
        return None
    folder = _pin_folder(pin, model_dir)
    for name, size in record["file_sizes"].items():
        try:
            if (folder / name).stat().st_size != size:
                return None
        except OSError:
            return None
    return HubPull(pin.local_path(model_dir), dict(record["files"]), record["size"])


def _import_hub() -> Any:
    try:
        import huggingface_hub
        import huggingface_hub.constants
        import huggingface_hub.errors
    except ImportError as exc:
        raise ConfigError(
            "pulling a Hugging Face Hub model needs huggingface_hub: install the safety-full extra "
            "(pip install 'cutout-fleet[safety-full]')"
        ) from exc
    return huggingface_hub


def _offline(hub: Any) -> bool:
    # huggingface_hub reads these once, when it is imported; reading them again means a flag set later
    # (a long-lived process, a test) still stops the pull with this message instead of downloading.
    flags = (os.environ.get(name, "").strip().upper() for name in _OFFLINE_VARIABLES)
    return bool(getattr(hub.constants, "HF_HUB_OFFLINE", False)) or any(flag in _TRUE_WORDS for flag in flags)


def _download(hub: Any, pin: HubModelPin, staging: Path, endpoint: str | None, source: str) -> None:
    errors: tuple[type[BaseException], ...] = (OSError, ValueError, RuntimeError, *_client_errors(hub))
    try:
        if pin.file is None:
            hub.snapshot_download(pin.repo, revision=pin.revision, local_dir=staging, endpoint=endpoint)
        else:
            hub.hf_hub_download(
                pin.repo, pin.file, revision=pin.revision, local_dir=staging, endpoint=endpoint
            )
    except errors as exc:
        raise ModelDownloadFailed(_failure_message(hub, pin, exc, source)) from exc


def _client_errors(hub: Any) -> list[type[BaseException]]:
    """Errors of the HTTP client that huggingface_hub lets through (a connection lost after its own retries):
    httpx2 under huggingface_hub 2.x, httpx under 1.x; and Xet's."""
    found: list[type[BaseException]] = []
    for module in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(module).HTTPError)
        except (ImportError, AttributeError):
            continue
    xet_error = getattr(hub.errors, "XetDownloadError", None)
    if isinstance(xet_error, type) and issubclass(xet_error, BaseException):
        found.append(xet_error)
    return found


def _failure_message(hub: Any, pin: HubModelPin, exc: BaseException, source: str) -> str:
    errors = hub.errors
    if isinstance(exc, errors.RevisionNotFoundError):
        hint = f"{pin.repo} has no commit {pin.revision}; check the pinned revision (a full commit id)"
    elif isinstance(exc, errors.GatedRepoError):
        hint = f"{pin.repo} is gated: accept its terms on the Hub, then set HF_TOKEN to that account's token"
    elif isinstance(exc, errors.RepositoryNotFoundError):
        hint = (
            f"no repo {pin.repo} is visible there; check its name, and set HF_TOKEN if it is private or gated"
        )
    elif _caused_by(exc, errors.OfflineModeIsEnabled):
        hint = "huggingface_hub is offline; unset HF_HUB_OFFLINE"
    elif isinstance(exc, errors.EntryNotFoundError) and not isinstance(exc, errors.LocalEntryNotFoundError):
        hint = f"{pin.repo} has no file {pin.file} at {pin.revision}; check the pinned file name"
    elif isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
        hint = "the model dir is not writable or has no room left"
    else:
        hint = (
            "check the network, HF_ENDPOINT (a mirror must answer like the Hub) and proxy settings; "
            "a gated repo needs HF_TOKEN"
        )
    return f"cannot pull {pin.ref} from {source}: {hint}. ({_describe(exc)})"


def _caused_by(exc: BaseException | None, kind: type[BaseException]) -> bool:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kind):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _describe(exc: BaseException) -> str:
    """The error and its cause, one line each at most (huggingface_hub's messages run to paragraphs)."""
    parts: list[str] = []
    for error in (exc, exc.__cause__):
        if error is not None:
            first_line = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
            part = f"{type(error).__name__}: {first_line}" if first_line else type(error).__name__
            if part not in parts:
                parts.append(part)
    return "; caused by ".join(parts)


def _hash_files(folder: Path) -> tuple[dict[str, str], dict[str, int]]:
    files: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            name = path.relative_to(folder).as_posix()
            files[name], sizes[name] = _sha256(path), path.stat().st_size
    return files, sizes


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _record(pin: HubModelPin, files: dict[str, str], sizes: dict[str, int]) -> dict[str, Any]:
    return {
        "repo": pin.repo,
        "revision": pin.revision,
        "file": pin.file,
        "files": files,
        "file_sizes": sizes,
        "size": sum(sizes.values()),
        "pulled_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _install(staging: Path, folder: Path) -> None:
    """Rename the staged folder into place; an earlier copy (it failed the check) is moved aside first."""
    if not folder.exists():
        os.rename(staging, folder)
        return
    aside = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.old")
    os.rename(folder, aside)
    try:
        os.rename(staging, folder)
    except OSError:
        os.rename(aside, folder)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # absent, or it holds the repo's own files
        folder.rmdir()
