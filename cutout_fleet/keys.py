"""Object keys: which are images, where each output goes, and safe local paths."""

from __future__ import annotations

import posixpath
from pathlib import Path, PurePosixPath
from typing import Literal

from cutout_fleet.errors import PermanentError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".avif", ".heic", ".heif"}
)
# `--output mask` / `both`: the mask goes to OUTPUT_STEM.mask.png (always PNG: 8-bit grayscale, lossless).
MASK_SUFFIX = ".mask.png"
# Reports live beside the outputs; listing an output prefix again must not treat them as inputs.
REPORTS_DIR = "_reports"


def is_image_key(key: str) -> bool:
    """True when the key ends in an image extension (any case)."""
    # String slicing, not PurePosixPath: this runs once per listed key, a million times a job.
    name = key.rsplit("/", 1)[-1]  # empty for a folder marker such as `photos.jpg/`
    dot = name.rfind(".")
    return 0 < dot < len(name) - 1 and name[dot:].lower() in IMAGE_EXTENSIONS


def join_key(prefix: str, rest: str) -> str:
    prefix = prefix.strip("/")
    rest = rest.lstrip("/")
    return f"{prefix}/{rest}" if prefix else rest


def relative_key(key: str, source_prefix: str) -> str:
    """The part of `key` below `source_prefix` (a folder-like prefix or a plain string prefix)."""
    rest = key[len(source_prefix) :] if source_prefix and key.startswith(source_prefix) else key
    return rest.lstrip("/")


def output_key(key: str, source_prefix: str, out_prefix: str, extension: str) -> str:
    """`OUT/<key below the source prefix>` with the extension replaced: shoes/a.jpg -> OUT/shoes/a.png."""
    return map_output_key(key, "", source_prefix, out_prefix, extension, "relative")


# relative: a prefix job (OUT + key below the source prefix); full: a manifest job (OUT + the whole
# key); bucket: a manifest spanning buckets (OUT + bucket + whole key).
KeyMapping = Literal["relative", "full", "bucket"]


def map_output_key(
    key: str, bucket: str, source_prefix: str, out_prefix: str, extension: str, mapping: KeyMapping
) -> str:
    """The output key of `key` under each mapping, with the extension replaced by the output format's."""
    if mapping == "relative":
        rel = relative_key(key, source_prefix)
    elif mapping == "full":
        rel = key.lstrip("/")
    else:
        rel = f"{bucket}/{key.lstrip('/')}"
    stem, _ = posixpath.splitext(normal_key_path(rel))
    return join_key(out_prefix, stem + extension)


def mask_key(output_key: str) -> str:
    """Where the mask beside the cutout at `output_key` goes (`--output both`): `shoes/a.png` ->
    `shoes/a.mask.png`.  With `--output mask` the output key itself ends in `.mask.png`."""
    stem, _ = posixpath.splitext(output_key)
    return stem + MASK_SUFFIX


def normal_key_path(key: str) -> str:
    """`key` without empty or `.` segments: `x//a.png` and `x/./a.png` are `x/a.png`.

    S3 keeps them apart, but a folder (`cutout run --out DIR`, `aws s3 sync`) writes them to one file,
    so output keys are normalised and such sources collide visibly (`output_collision`) instead of
    overwriting each other.  `..` stays: as text on S3, refused as a path by `safe_local_path`.
    """
    return "/".join(part for part in key.split("/") if part not in ("", "."))


def report_keys(out_prefix: str, job_id: str) -> tuple[str, str]:
    """(JSONL report key, summary key) for a job."""
    base = join_key(out_prefix, f"{REPORTS_DIR}/{job_id}")
    return base + ".jsonl", base + ".summary.json"


def safe_local_path(root: Path, key: str) -> Path:
    """Map an object key to a path under `root`, refusing anything that could escape it."""
    if "\x00" in key:
        raise PermanentError(f"object key {key!r} contains a NUL byte", code="unsafe_key")
    parts = PurePosixPath(key).parts
    # `""` and `.` have no parts and would name `root` itself.
    if not parts or key.startswith("/") or ".." in parts or "\\" in key:
        raise PermanentError(f"object key {key!r} is not a safe relative path", code="unsafe_key")
    path = root.joinpath(*parts)
    if root.resolve() not in path.resolve().parents:
        raise PermanentError(f"object key {key!r} leaves the folder {root}", code="unsafe_key")
    return path
