"""The one settings class.  Read once at start-up, validated, then passed down.

Every field is set from the environment with the prefix ``CUTOUT_`` and ``__`` between nested
groups (``CUTOUT_S3__ENDPOINT_URL``), or from a ``.env``-style file named by ``CUTOUT_ENV_FILE`` (the
CLI's ``--env-file``).  A ``.env`` in the working directory is never read on its own: a folder someone else
can write to must not be able to redirect a command run inside it (to another S3 endpoint, say).
S3 credentials are deliberately absent: boto3's standard chain (env, profile, IAM role) supplies them.

Secrets can also come from files in a secrets directory: ``$CUTOUT_SECRETS_DIR``, else
``/run/secrets/cutout`` when it exists.  A file is named like the variable it replaces, case ignored:
``cutout_redis_url`` holds the Redis URL, ``cutout_redis_tls__ca_file`` a nested field.  A variable in
the environment wins over a file.  The settings are never logged whole: use ``Settings.redacted()``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from cutout_fleet import layout
from cutout_fleet.config.env import (
    ENV_FILE_ENV,
    ENV_NESTED_DELIMITER,
    ENV_PREFIX,
    SECRETS_DIR_ENV,
    env_file,
)
from cutout_fleet.errors import ConfigError

DEFAULT_SECRETS_DIR = Path("/run/secrets/cutout")
REDACTED = "****"


def _default_model_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "cutout-fleet" / "models"


class S3Settings(BaseModel):
    endpoint_url: str | None = Field(default=None, description="MinIO/moto URL; empty means AWS S3")
    region: str = "us-east-1"
    addressing_style: Literal["auto", "virtual", "path"] = "auto"
    # standard: exponential backoff with jitter.  adaptive also rate-limits the whole client after
    # throttling, which slowed a worker's other requests for seconds after one SlowDown here.
    retry_mode: Literal["standard", "adaptive", "legacy"] = "standard"
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 6
    connect_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    read_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    max_pool_connections: Annotated[int, Field(ge=1)] = 16
    # CA bundle (PEM) for an https endpoint signed by a private CA; it replaces the default trust
    # store for S3 calls.  None: botocore's default (AWS_CA_BUNDLE, else certifi).  There is no
    # switch to turn verification off: an endpoint without TLS is an http:// endpoint_url.
    ca_bundle: FilePath | None = None


class RedisTLSSettings(BaseModel):
    """Certificates for a ``rediss://`` URL (ignored for redis:// and unix://).  Verification is always on."""

    # PEM CA file added to the system trust store: the CA that signed the Redis server's certificate.
    ca_file: FilePath | None = None
    # Client certificate and key, for servers that require mutual TLS (tls-auth-clients yes).
    cert_file: FilePath | None = None
    key_file: FilePath | None = None
    # Off only for servers reached by a name not in their certificate; the chain is still verified.
    check_hostname: bool = True

    @model_validator(mode="after")
    def _key_needs_cert(self) -> RedisTLSSettings:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file is set without cert_file; set both for mutual TLS")
        return self


class QueueSettings(BaseModel):
    cpu: str = "cpu"
    gpu: str = "gpu"


class ImageLimits(BaseModel):
    # 64 Mpx is an 8000x8000 photo: larger than any catalog shot, small enough that its working set
    # (decoded RGB, alpha and RGBA cutout: ~700 MiB) fits the per-image budget below.
    max_pixels: Annotated[int, Field(ge=1)] = 64_000_000
    # The memory one image may need on its way through the pipeline, estimated from its header before
    # decoding (pixels x bytes per pixel, worker/imaging/budget.py: 11 for PNG output, 12 with a source
    # alpha, +28 for WebP): a bigger one fails as image_too_large instead of getting the worker
    # OOM-killed.  The default fits max_pixels with PNG output: 64 Mpx x 12 B = 732 MiB, rounded up.
    max_image_memory_mib: Annotated[int, Field(ge=1)] = 1024
    max_bytes: Annotated[int, Field(ge=1)] = 200 * 1024 * 1024
    webp_quality: Annotated[int, Field(ge=1, le=100)] = 90
    jpeg_quality: Annotated[int, Field(ge=1, le=100)] = 90  # for jobs that give no --quality
    png_compress_level: Annotated[int, Field(ge=0, le=9)] = 6
    # zlib's strategy for PNG: rle took 0.57x the time of `default` for 1.03x the bytes on real cutouts
    # (bench/RESULTS.md, "encoding"); `default` for the smallest files at level 6.
    png_strategy: Literal["default", "filtered", "rle"] = "rle"


class FramingSettings(BaseModel):
    """Catalog outputs: the defaults `cutout run` and `cutout enqueue` give the framing options, and the
    operators' presets.  A job records the values it ran with (they are options, in its hash when they
    matter), so changing a default never changes a job already queued."""

    # None: only the built-in config/presets.toml; a file given here adds presets and may replace them.
    presets_file: FilePath | None = None
    visible_threshold: Annotated[int, Field(ge=1, le=255)] = layout.VISIBLE_THRESHOLD
    min_speck_share: Annotated[float, Field(ge=0, le=0.5)] = layout.DEFAULT_SPECK_SHARE
    min_subject_share: Annotated[float, Field(ge=0, le=1)] = layout.MIN_SUBJECT_SHARE
    max_upscale: Annotated[float, Field(ge=1, le=16)] = layout.MAX_UPSCALE
    max_square_px: Annotated[int, Field(ge=16, le=layout.MAX_CANVAS_SIDE_PX)] = layout.MAX_SQUARE_PX

    def option_defaults(self) -> dict[str, object]:
        """These settings as ImageOptions fields, for a job that does not give them."""
        return self.model_dump(exclude={"presets_file"})


class GuardSettings(BaseModel):
    """A job stops itself when more than this share of its items fail after this many (like S3 Batch)."""

    min_items: Annotated[int, Field(ge=0)] = 1000  # 0 turns the guard off
    max_failure_ratio: Annotated[float, Field(gt=0, le=1)] = 0.5


def http_url_problem(url: str) -> str | None:
    """Why `url` cannot receive a notice (only http and https URLs with a host can), else None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return "only http:// and https:// URLs can receive notices"
    return None if parts.hostname else "the URL has no host"


class NotifySettings(BaseModel):
    """The completion notice (docs/commands.md): a signed POST when a job finishes."""

    url: str | None = None  # the default for jobs that name none; empty: no notice
    secret: SecretStr | None = None  # the HMAC-SHA256 key; required wherever a notice is sent
    # Tries in all, backoff_s * 2**n apart (capped); each request waits timeout_s for an answer.
    attempts: Annotated[int, Field(ge=1, le=10)] = 4
    backoff_s: Annotated[float, Field(gt=0)] = 1.0
    backoff_max_s: Annotated[float, Field(gt=0)] = 30.0
    timeout_s: Annotated[float, Field(gt=0)] = 10.0

    @model_validator(mode="after")
    def _signed_http_url(self) -> NotifySettings:
        if self.url and (problem := http_url_problem(self.url)):
            raise ValueError(f"url: {problem}")
        if self.url and self.secret is None:
            raise ValueError(
                "url is set without secret; set CUTOUT_NOTIFY__SECRET (notices are always signed)"
            )
        return self


class WorkerSettings(BaseModel):
    concurrency: Annotated[int, Field(ge=1)] = 1
    # 0 lets onnxruntime use every core; with concurrency > 1 set this to cores / concurrency.
    intra_op_threads: Annotated[int, Field(ge=0)] = 0
    # Models every process of this worker must have: checked at start-up, sessions created after fork.
    models: list[str] = Field(default_factory=lambda: ["u2netp"])
    # Sessions kept per process for models outside `models`, loaded on first use.
    max_sessions: Annotated[int, Field(ge=1)] = 2
    # onnxruntime providers, in order, for every model.  Empty: by the model's queue, CUDA -> CPU for a
    # gpu model and CPU alone for a cpu model (worker/models/providers.py).
    providers: list[str] = Field(default_factory=list)
    # A gpu model whose session did not get CUDA is refused (onnxruntime falls back to the CPU silently,
    # ~100x slower) unless this is true.
    allow_cpu: bool = False
    item_time_limit_s: Annotated[float, Field(gt=0)] = 300.0
    # The hard limit (the pool child is killed) comes this long after the soft one, which lets the
    # task record a clean `timeout`; a native call that ignores the soft limit meets the hard one.
    hard_limit_grace_s: Annotated[float, Field(gt=0)] = 60.0
    # A key whose processing killed or hung the worker this many times is failed as `poison`.
    max_attempts: Annotated[int, Field(ge=1)] = 3
    # Items that failed transiently (S3 throttling, resets) after botocore's own retries are sent
    # again this many times, backoff_s * 2**n apart (full jitter, capped), then fail `transient_error`.
    transient_retries: Annotated[int, Field(ge=0)] = 8
    retry_backoff_s: Annotated[int, Field(ge=1)] = 2
    retry_backoff_max_s: Annotated[int, Field(ge=1)] = 300
    # A worker process that sent no heartbeat for this long is dead: the items it held are sent again
    # (by any live worker).  It beats every lease_s / 4.
    lease_s: Annotated[float, Field(ge=4)] = 60.0
    # The last backstop: a task not acked within this many seconds is delivered again by Redis.  Keep
    # it well above items_per_task * item_time_limit_s, or a slow task runs twice.
    visibility_timeout_s: Annotated[int, Field(ge=1)] = 6 * 3600
    # How long a new pool process may take to load its models (all of them, the full workflow's
    # caption and classifier included) before Celery gives up on it.
    process_start_timeout_s: Annotated[float, Field(gt=0)] = 600.0
    # Read a task's next item (output HEAD, source GET) on a thread while the current one runs
    # (worker/read_ahead.py); false: each item reads when it starts.
    read_ahead: bool = True
    max_tasks_per_child: Annotated[int, Field(ge=0)] = 0
    max_memory_per_child_kb: Annotated[int, Field(ge=0)] = 0
    loglevel: str = "INFO"


# What happens to a cutout the safety gate did not allow: not written (drop), written under the
# quarantine prefix instead of its output key (quarantine), or written as usual (write).  The same
# values as the job options' (cutout_fleet/options.py); a review is never dropped.
BlockAction = Literal["drop", "quarantine", "write"]
ReviewAction = Literal["quarantine", "write"]


_COMMIT = re.compile(r"^[0-9a-f]{40}$")


class HubModelPin(BaseModel):
    """A model on the Hugging Face Hub, pinned to one commit: `cutout models pull` fetches exactly that,
    and the pin is part of the options hash, so changing it makes every verdict out of date."""

    model_config = ConfigDict(frozen=True)

    repo: str
    revision: str
    # One file of the repo (a GGUF); None: the whole snapshot (a transformers model folder).
    file: str | None = None

    @field_validator("revision")
    @classmethod
    def _commit(cls, value: str) -> str:
        # A branch or tag moves; only a commit id says which bytes the verdicts came from.
        if not _COMMIT.match(value):
            raise ValueError("must be a full 40-character commit id, not a branch or tag name")
        return value

    @field_validator("repo")
    @classmethod
    def _owner_name(cls, value: str) -> str:
        parts = value.split("/")
        if len(parts) != 2 or not all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", p) for p in parts):
            raise ValueError("must be OWNER/NAME, as on the Hugging Face Hub")
        return value

    @property
    def ref(self) -> str:
        """`repo@revision[/file]`: what the options hash and the verdict record."""
        return f"{self.repo}@{self.revision}" + (f"/{self.file}" if self.file else "")

    def local_path(self, model_dir: Path) -> Path:
        """Where the pulled copy lives: the commit is in the path, so a new pin never meets old files."""
        folder = model_dir / "hub" / self.repo.replace("/", "--") / self.revision
        return folder / self.file if self.file else folder


class SafetySettings(BaseModel):
    """Safety verdicts (`--safety`): the gate's policy file, what becomes of flagged outputs, and the
    full workflow's caption and classifier models (`--workflow full`)."""

    # None: the built-in config/safety_policy.toml.  Producer and workers must read the same file.
    policy_file: FilePath | None = None
    # Below the output prefix, like _reports/: OUT/_quarantine/<output key>.
    quarantine_prefix: str = "_quarantine"
    on_block: BlockAction = "drop"
    on_review: ReviewAction = "quarantine"
    # Florence-2 (transformers' native classes), for the caption.  The producer and every worker must
    # use the same pins: they are part of the options hash.
    caption_model: HubModelPin = HubModelPin(
        repo="florence-community/Florence-2-large", revision="4271c66b88cdbc05735372ec13b2360108de5317"
    )
    caption_max_new_tokens: Annotated[int, Field(ge=8, le=1024)] = 256
    caption_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    # Images of a task captioned in one generate() call (worker/caption_batches.py); 1: one at a time.
    caption_batch: Annotated[int, Field(ge=1, le=32)] = 4
    # Llama-3.1-8B-Instruct, Q5_K_M GGUF, through llama-cpp-python, for the classifier.
    classifier_model: HubModelPin = HubModelPin(
        repo="bartowski/Meta-Llama-3.1-8B-Instruct-GGUF",
        revision="9a8dec50f04fa8fad1dc1e7bc20a84a512e2bb01",
        file="Meta-Llama-3.1-8B-Instruct-Q5_K_M.gguf",
    )
    classifier_timeout_s: Annotated[float, Field(gt=0)] = 20.0
    classifier_n_ctx: Annotated[int, Field(ge=512)] = 4096

    def hub_pins(self) -> dict[str, str]:
        """The full workflow's model pins, stage -> `repo@revision[/file]` (the options hash's part)."""
        return {"caption": self.caption_model.ref, "classifier": self.classifier_model.ref}

    @field_validator("quarantine_prefix")
    @classmethod
    def _relative_folder(cls, value: str) -> str:
        folder = value.strip("/")
        if not folder or any(part in ("", ".", "..") for part in folder.split("/")):
            raise ValueError("must be a folder name below the output prefix, such as _quarantine")
        return folder


class FlowerSettings(BaseModel):
    """`cutout flower`: where it listens and its basic-auth login.  It refuses to start without both."""

    # The loopback by default: Flower's /metrics and /healthcheck answer without auth on any address.
    address: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 5555
    username: str | None = None
    password: SecretStr | None = None

    @field_validator("username")
    @classmethod
    def _no_colon(cls, value: str | None) -> str | None:
        # Basic auth sends "user:password": a colon in the user name would split it wrongly.
        if value is not None and ":" in value:
            raise ValueError("must not contain ':'")
        return value


class Settings(BaseSettings):
    """Everything an operator can set.  See README.md, "Settings"."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        env_file=None,  # only the file `env_file()` names, passed in by `load_settings`
        extra="ignore",
        # A rejected value may be a URL with a password: errors name the variable, never echo the value.
        hide_input_in_errors=True,
    )

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_tls: RedisTLSSettings = Field(default_factory=RedisTLSSettings)
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
    notify: NotifySettings = Field(default_factory=NotifySettings)
    flower: FlowerSettings = Field(default_factory=FlowerSettings)
    safety: SafetySettings = Field(default_factory=SafetySettings)
    framing: FramingSettings = Field(default_factory=FramingSettings)
    job_ttl_s: Annotated[int, Field(ge=60)] = 14 * 24 * 3600
    status_poll_s: Annotated[float, Field(gt=0)] = 0.5

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("redis_tls")
    @classmethod
    def _tls_needs_rediss(cls, value: RedisTLSSettings, info: ValidationInfo) -> RedisTLSSettings:
        # Certificates next to a plain redis:// URL mean someone expects TLS and would not get it.
        url = info.data.get("redis_url", "")
        if (value.ca_file or value.cert_file) and not url.startswith("rediss://"):
            raise ValueError("certificates are set but CUTOUT_REDIS_URL is not rediss://; use rediss://")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The directory is looked up on every load, not frozen into model_config at import time.
        # Nested sources name files like the variables, nested fields included (cutout_s3__region).
        directory = getattr(file_secret_settings, "secrets_dir", None) or secrets_dir()
        if directory is None:
            return init_settings, env_settings, dotenv_settings
        secrets = NestedSecretsSettingsSource(file_secret_settings, secrets_dir=directory)
        return init_settings, env_settings, dotenv_settings, secrets

    def redacted(self) -> dict[str, Any]:
        """The settings as JSON-ready data with passwords masked: the only form fit for logs."""
        data = self.model_dump(mode="json")
        data["redis_url"] = redacted_url(self.redis_url)
        return data

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # repr() and str() go through here: a logged Settings object never shows the Redis password.
        for name, value in super().__repr_args__():
            yield name, redacted_url(value) if name == "redis_url" and isinstance(value, str) else value


def secrets_dir() -> Path | None:
    """$CUTOUT_SECRETS_DIR (which must be a folder), else /run/secrets/cutout when it exists, else None."""
    value = os.environ.get(SECRETS_DIR_ENV)
    if value:
        path = Path(value).expanduser()
        if not path.is_dir():
            raise ConfigError(f"{SECRETS_DIR_ENV}={value} is not a folder; create it or unset the variable")
        return path
    return DEFAULT_SECRETS_DIR if DEFAULT_SECRETS_DIR.is_dir() else None


def redacted_url(url: str) -> str:
    """`url` with its password (in the user part or a ?password= parameter) replaced by ****."""
    parts = urlsplit(url)
    netloc, query = parts.netloc, parts.query
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:{REDACTED}@{host}"
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(key.lower() == "password" for key, _ in pairs):
        masked = [(key, REDACTED if key.lower() == "password" else value) for key, value in pairs]
        query = urlencode(masked, safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # unchanged; urlunsplit would also rewrite unix:///path as unix:/path
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def env_name(loc: tuple[object, ...]) -> str:
    """The environment variable that sets the field at `loc` (as pydantic reports it)."""
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(str(part) for part in loc).upper()


def load_settings(**overrides: object) -> Settings:
    """Read and validate the settings (environment, then the file `env_file()` names, then the secrets
    directory); a bad value raises ConfigError naming its variable."""
    try:
        return Settings(_env_file=env_file(), **overrides)  # type: ignore[call-arg,arg-type]
    except ValidationError as exc:
        problems = "; ".join(f"{env_name(err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"invalid settings: {problems}") from exc
    except UnicodeDecodeError as exc:  # a secrets or env file that is not UTF-8 text
        raise ConfigError(
            f"a settings file (secrets directory or {ENV_FILE_ENV}) is not UTF-8 text: {exc}"
        ) from exc
