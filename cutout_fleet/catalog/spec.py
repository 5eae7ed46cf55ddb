"""One model's contract, as data, and the checksum check that every load goes through."""

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
    md5: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")] | None = None
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    size_bytes: int | None = None
    license: str = ""
    input_name: str | None = None  # checked against the file when set
    input_size: tuple[int, int]  # (width, height)
    input_dtype: Literal["float32", "float16"] = "float32"
    scale: Literal["max", "255"] = "255"
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    output_index: int = 0  # -1: the last output (BiRefNet's final prediction)
    activation: Literal["none", "sigmoid"] = "none"

    @model_validator(mode="after")
    def _needs_checksum(self) -> ModelSpec:
        if not (self.md5 or self.sha256):
            raise ValueError(f"model {self.name!r} needs an md5 or sha256 checksum")
        if (self.mean is None) != (self.std is None):
            raise ValueError(f"model {self.name!r}: give both mean and std, or neither")
        if "/" in self.file or self.file.startswith("."):
            raise ValueError(f"model {self.name!r}: file must be a plain file name")
        return self

    @property
    def checksum(self) -> str:
        """The strongest checksum we know, as 'algo:hex' (part of the options hash)."""
        return f"sha256:{self.sha256}" if self.sha256 else f"md5:{self.md5}"

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
    """Raise ConfigError unless `data` matches the spec's checksum.  There is no switch to skip this."""
    algorithm, expected = ("sha256", spec.sha256) if spec.sha256 else ("md5", spec.md5)
    actual = digest_of(data, algorithm)
    if actual != expected:
        raise ConfigError(
            f"model {spec.name!r} at {where} has {algorithm} {actual}, expected {expected}: the file is "
            f"damaged or a different model; delete it and run `cutout models pull {spec.name}`"
        )
