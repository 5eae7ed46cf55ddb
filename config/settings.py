"""The one settings class.  Read once at start-up, validated, then passed down.

Every field is set from the environment with the prefix ``CUTOUT_`` and ``__`` between nested
groups (``CUTOUT_S3__ENDPOINT_URL``), or from a ``.env`` file in the working directory.
S3 credentials are deliberately absent: boto3's standard chain (env, profile, IAM role) supplies them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cutout_fleet.errors import ConfigError

ENV_PREFIX = "CUTOUT_"
ENV_NESTED_DELIMITER = "__"


def _default_model_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "cutout-fleet" / "models"


class S3Settings(BaseModel):
    endpoint_url: str | None = Field(None, description="MinIO/moto URL; empty means AWS S3")
    region: str = "us-east-1"
    addressing_style: Literal["auto", "virtual", "path"] = "auto"
    retry_mode: Literal["standard", "adaptive", "legacy"] = "adaptive"
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 6
    connect_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    read_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    max_pool_connections: Annotated[int, Field(ge=1)] = 16


class QueueSettings(BaseModel):
    cpu: str = "cpu"
    gpu: str = "gpu"


class ImageLimits(BaseModel):
    # 64 Mpx is an 8000x8000 photo: larger than any catalog shot, small enough that the decoded
    # RGB (192 MB) plus float masks fits comfortably in a worker's memory budget.
    max_pixels: Annotated[int, Field(ge=1)] = 64_000_000
    max_bytes: Annotated[int, Field(ge=1)] = 200 * 1024 * 1024
    webp_quality: Annotated[int, Field(ge=1, le=100)] = 90
    png_compress_level: Annotated[int, Field(ge=0, le=9)] = 6


class GuardSettings(BaseModel):
    """A job stops itself when more than this share of its items fail after this many (like S3 Batch)."""

    min_items: Annotated[int, Field(ge=0)] = 1000  # 0 turns the guard off
    max_failure_ratio: Annotated[float, Field(gt=0, le=1)] = 0.5


class WorkerSettings(BaseModel):
    concurrency: Annotated[int, Field(ge=1)] = 1
    # 0 lets onnxruntime use every core; with concurrency > 1 set this to cores / concurrency.
    intra_op_threads: Annotated[int, Field(ge=0)] = 0
    # Models every process of this worker must have: checked at start-up, sessions created after fork.
    models: list[str] = Field(default_factory=lambda: ["u2netp"])
    # Sessions kept per process for models outside `models`, loaded on first use.
    max_sessions: Annotated[int, Field(ge=1)] = 2
    providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"])
    item_time_limit_s: Annotated[float, Field(gt=0)] = 300.0
    # A task not acked within this many seconds is delivered again by Redis: keep it well above
    # items_per_task * item_time_limit_s, or a slow task runs twice.
    visibility_timeout_s: Annotated[int, Field(ge=60)] = 6 * 3600
    max_tasks_per_child: Annotated[int, Field(ge=0)] = 0
    max_memory_per_child_kb: Annotated[int, Field(ge=0)] = 0
    loglevel: str = "INFO"


class Settings(BaseSettings):
    """Everything an operator can set.  See README.md, "Settings"."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        env_file=".env",
        extra="ignore",
    )

    redis_url: str = "redis://127.0.0.1:6379/0"
    s3: S3Settings = Field(default_factory=S3Settings)
    queues: QueueSettings = Field(default_factory=QueueSettings)
    model_dir: Path = Field(default_factory=_default_model_dir)
    # Extra catalogue file (TOML) merged over the built-in one: custom models, test models.
    model_catalog: Path | None = None
    default_model: str = "u2netp"
    items_per_task: Annotated[int, Field(ge=1, le=256)] = 16
    limits: ImageLimits = Field(default_factory=ImageLimits)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    guard: GuardSettings = Field(default_factory=GuardSettings)
    job_ttl_s: Annotated[int, Field(ge=60)] = 14 * 24 * 3600
    status_poll_s: Annotated[float, Field(gt=0)] = 0.5

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value


def env_name(loc: tuple[object, ...]) -> str:
    """The environment variable that sets the field at `loc` (as pydantic reports it)."""
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(str(part) for part in loc).upper()


def load_settings(**overrides: object) -> Settings:
    """Read and validate the settings; a bad value raises ConfigError naming its variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(f"{env_name(err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"invalid settings: {problems}") from exc
