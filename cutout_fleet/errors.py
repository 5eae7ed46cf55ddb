"""The exception tree.  Every failure of one item maps to a stable `code` that reports carry.

PermanentError: retrying cannot help (bad image, missing object, collision) -> fail the item now.
TransientError: the world may heal (S3 throttling, connection reset) -> retry with backoff.
ConfigError: the operator must fix settings or install a model; raised at start-up.
JobError: a command about a job cannot be carried out (unknown id, wrong state); nothing changed.

The CLI catches CutoutError alone: every error a user can act on is in this tree.
"""

from __future__ import annotations


class CutoutError(Exception):
    """Base of every error this package raises on purpose."""

    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(CutoutError):
    """Settings, catalogue or model files are wrong; the message says what to change."""

    code = "config_error"


class ModelDownloadFailed(ConfigError):
    """`cutout models pull` could not fetch a model from one source (the next source is tried)."""

    code = "model_download_failed"


class JobError(CutoutError):
    """A job command was refused; the message says why and what to do instead."""

    code = "job_error"


class JobNotFound(JobError):
    code = "job_not_found"


class JobExists(JobError):
    """A job id was reused with other inputs or options."""

    code = "job_exists"


class JobStateConflict(JobError):
    """The job is in a state where this command does not apply (e.g. resuming a running job)."""

    code = "job_state_conflict"


class PermanentError(CutoutError):
    """This item can never succeed as it is; fail it, never retry it."""


class TransientError(CutoutError):
    """A passing fault of a service; the same work may succeed later."""

    code = "transient_error"


class FailedAfterWork(TransientError):
    """A passing fault after the model ran (writing the output).  Retried, but the attempt counts: a
    key that fails there on every retry ends as `poison` instead of re-running the model each time."""


class UndecodableImage(PermanentError):
    code = "undecodable"


class NoSubject(PermanentError):
    """The mask shows no product (`--crop subject`): the job's `--on-no-subject` said to fail the item."""

    code = "no_subject"


class ImageTooLarge(PermanentError):
    code = "image_too_large"


class SourceMissing(PermanentError):
    code = "source_missing"


class AccessDenied(PermanentError):
    code = "access_denied"


class OutputCollision(PermanentError):
    code = "output_collision"


class ModelError(PermanentError):
    """The model could not run on this input (or is missing on this worker)."""

    code = "model_error"


class InvalidOptions(PermanentError):
    code = "invalid_options"
