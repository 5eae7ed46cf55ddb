"""The task message: JSON, validated before any work, small enough to queue millions of keys.

How it evolves without stalling a rolling upgrade (old and new workers on one queue):
- A new field that a worker may ignore and still write the right output (its default reproduces
  today's behaviour, or it is informational) is added as optional, in the message or in `options`:
  workers drop fields they do not know.
- A field whose value changes what a worker must do raises `v` in the messages that use it.  A worker
  that receives a `v` newer than it knows raises NewerMessage; the task hands the message back to
  the queue for a newer worker instead of refusing it.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cutout_fleet.errors import InvalidOptions, PermanentError, TransientError
from cutout_fleet.keys import KeyMapping, map_output_key
from cutout_fleet.options import ImageOptions

MESSAGE_VERSION: Final = 2
# v2: the catalog outputs (framing, masks, shadow, JPEG).  A v1 worker would drop these options as
# unknown and write a plain cutout, so a message that uses any of them says v2 and waits for a v2 worker.
V2_OPTIONS = frozenset(
    {
        "output", "crop", "margin", "canvas", "fill", "align", "shadow", "quality", "on_no_subject",
        "visible_threshold", "min_speck_share", "min_subject_share", "max_upscale", "max_square_px",
    }
)  # fmt: skip
# Task names are part of the wire contract between producer and workers.
TASK_PROCESS_BATCH = "cutout.process_batch"
TASK_FINALIZE_JOB = "cutout.finalize_job"
MAX_ITEMS_PER_TASK = 256
MAX_KEY_BYTES = 1024  # S3's own limit
MAX_MESSAGE_BYTES = 512 * 1024  # a task's payload as `payload_bytes` measures it; larger ones are refused
# What the producer fills a task up to: the rest is room for what a re-send adds (a parked task carries
# its defaults), so no message the fleet builds from a task is ever refused for its size.
TASK_BYTES_BUDGET = MAX_MESSAGE_BYTES - 16 * 1024
JOB_ID_RULE = "1-64 letters, digits, '.', '_' or '-', beginning with a letter or digit"
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# For pydantic, whose (Rust) regex takes `$` as the end of the text; Python's `re` also lets `$`
# match before a final newline, so Python code checks with `validate_job_id` (fullmatch) instead.
JOB_ID_PATTERN = f"^{_JOB_ID.pattern}$"

JobId = Annotated[str, Field(pattern=JOB_ID_PATTERN)]
Key = Annotated[str, Field(min_length=1, max_length=MAX_KEY_BYTES)]


class TaskMessage(BaseModel):
    """One task: a few keys of one job.  Job-wide fields ride along so a task never needs a lookup."""

    model_config = ConfigDict(frozen=True, extra="ignore")  # see the module docstring

    v: Literal[1, 2] = 1  # the lowest version that can run it: see `needed_version`
    job_id: JobId
    source: str  # s3://bucket/prefix or a local folder: where keys are read, and what they are relative to
    out: str  # s3://bucket/prefix or a local folder: where outputs and reports go
    options: ImageOptions
    keys: Annotated[list[Key], Field(min_length=1, max_length=MAX_ITEMS_PER_TASK)]
    mapping: KeyMapping = "relative"
    versions: dict[str, str] | None = None  # key -> S3 version id (manifests that name versions)
    force: bool = False  # recompute even when an up-to-date output exists
    # Options that differ from the job's, recorded with each outcome so `retry` can rebuild the task.
    item_options: dict[str, object] | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_unknown_options(cls, data: object) -> object:
        """Options a newer producer added are optional by the rule above; users' typos are caught
        where options are made (ImageOptions forbids unknown fields), not here."""
        if isinstance(data, dict) and isinstance(data.get("options"), dict):
            known = ImageOptions.model_fields
            options = {k: v for k, v in data["options"].items() if k in known}
            if len(options) != len(data["options"]):
                data = {**data, "options": options}
        return data

    @model_validator(mode="after")
    def _version_covers_the_options(self) -> TaskMessage:
        needed = needed_version(self.options)
        if self.v < needed:
            object.__setattr__(self, "v", needed)  # frozen; set once, while validating
        return self

    @property
    def bucket(self) -> str:
        return self.source.removeprefix("s3://").partition("/")[0] if self.source.startswith("s3://") else ""

    def output_key(self, key: str, source_prefix: str, out_prefix: str) -> str:
        return map_output_key(
            key, self.bucket, source_prefix, out_prefix, self.options.extension, self.mapping
        )

    def payload(self) -> dict[str, object]:
        """The task's argument as queued: JSON data, fields at their defaults left out."""
        return self.model_dump(mode="json", exclude_defaults=True)

    def with_keys(self, keys: list[str]) -> TaskMessage:
        """The same task for some of its keys, carrying only their versions."""
        versions = {key: self.versions[key] for key in keys if key in self.versions} if self.versions else {}
        return self.model_copy(update={"keys": keys, "versions": versions or None})


def needed_version(options: ImageOptions) -> int:
    """The message version a worker must know to run these options right."""
    defaults = ImageOptions(model=options.model)
    if options.format == "jpeg" or any(
        getattr(options, name) != getattr(defaults, name) for name in V2_OPTIONS
    ):
        return 2
    return 1


class InvalidMessage(PermanentError):
    code = "invalid_message"


class InvalidJobId(InvalidOptions):
    code = "invalid_job_id"


def validate_job_id(job_id: str) -> str:
    """`job_id` if it is a valid job id, else InvalidJobId: checked before any job state is written."""
    if not isinstance(job_id, str) or _JOB_ID.fullmatch(job_id) is None:
        raise InvalidJobId(f"job id {job_id!r} is not valid: use {JOB_ID_RULE}")
    return job_id


class NewerMessage(TransientError):
    """A message for a newer worker: hand it back to the queue, a newer worker will take it."""

    code = "message_too_new"


def payload_bytes(payload: object) -> int:
    """A payload's size as workers measure it: the length of its JSON text as `json.dumps` writes it
    (ASCII, so `é` counts 6)."""
    return len(json.dumps(payload))


def parse_message(payload: object) -> TaskMessage:
    """Validate a payload from the queue; anything malformed is refused, never executed."""
    try:
        size = payload_bytes(payload)
    except (TypeError, ValueError) as exc:
        raise InvalidMessage(f"task payload is not JSON data: {exc}") from exc
    if size > MAX_MESSAGE_BYTES:
        raise InvalidMessage(f"task payload is {size:,} bytes, over {MAX_MESSAGE_BYTES:,}")
    version = payload.get("v") if isinstance(payload, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > MESSAGE_VERSION:
        raise NewerMessage(
            f"task message version {version} is newer than this worker's {MESSAGE_VERSION}: "
            "upgrade this worker; the message goes back to the queue meanwhile"
        )
    try:
        return TaskMessage.model_validate(payload)
    except ValidationError as exc:
        raise InvalidMessage(f"task payload does not match the schema: {exc.errors()[:3]}") from exc


def readable_parts(payload: object) -> list[TaskMessage]:
    """The job and keys that a refused payload still names, as valid messages, so that a worker can
    fail those keys instead of leaving their job waiting: no size limit, too many keys split into
    parts, keys that are not keys left out.  [] when nothing can be read (or `v` is newer)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("keys"), list):
        return []
    keys = [key for key in payload["keys"] if isinstance(key, str) and 0 < len(key) <= MAX_KEY_BYTES]
    parts = []
    for start in range(0, len(keys), MAX_ITEMS_PER_TASK):
        try:
            parts.append(
                TaskMessage.model_validate({**payload, "keys": keys[start : start + MAX_ITEMS_PER_TASK]})
            )
        except ValidationError:
            return []
    return parts
