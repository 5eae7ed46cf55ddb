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
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cutout_fleet.errors import PermanentError, TransientError
from cutout_fleet.keys import KeyMapping, map_output_key
from cutout_fleet.options import ImageOptions

MESSAGE_VERSION: Final = 1
# Task names are part of the wire contract between producer and workers.
TASK_PROCESS_BATCH = "cutout.process_batch"
TASK_FINALIZE_JOB = "cutout.finalize_job"
MAX_ITEMS_PER_TASK = 256
MAX_KEY_BYTES = 1024  # S3's own limit
MAX_MESSAGE_BYTES = 512 * 1024
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

JobId = Annotated[str, Field(pattern=JOB_ID_PATTERN)]
Key = Annotated[str, Field(min_length=1, max_length=MAX_KEY_BYTES)]


class TaskMessage(BaseModel):
    """One task: a few keys of one job.  Job-wide fields ride along so a task never needs a lookup."""

    model_config = ConfigDict(frozen=True, extra="ignore")  # see the module docstring

    v: Literal[1] = MESSAGE_VERSION
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

    @property
    def bucket(self) -> str:
        return self.source.removeprefix("s3://").partition("/")[0] if self.source.startswith("s3://") else ""

    def output_key(self, key: str, source_prefix: str, out_prefix: str) -> str:
        return map_output_key(
            key, self.bucket, source_prefix, out_prefix, self.options.extension, self.mapping
        )


class InvalidMessage(PermanentError):
    code = "invalid_message"


class NewerMessage(TransientError):
    """A message for a newer worker: hand it back to the queue, a newer worker will take it."""

    code = "message_too_new"


def parse_message(payload: object) -> TaskMessage:
    """Validate a payload from the queue; anything malformed is refused, never executed."""
    try:
        size = len(json.dumps(payload))
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
