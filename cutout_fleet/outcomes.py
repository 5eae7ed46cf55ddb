"""What happened to one item: the unit of job accounting and of the JSONL report.

An outcome is recorded once per item id (bucket, key, version: see `cutout_fleet.items`), so one
key in two buckets, or two versions of a key, each get their own.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

from cutout_fleet import items

Status = Literal["succeeded", "failed", "skipped"]


@dataclass(frozen=True)
class Outcome:
    key: str
    status: Status
    output_key: str | None
    model: str
    error_code: str | None = None
    error: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    bucket: str | None = None
    version: str | None = None
    # Only options that differ from the job's (per-key manifest options), so `retry` can rebuild the task.
    options: dict[str, object] | None = None
    # False on a failed item whose `output_key` this job never wrote (an older output may still be there);
    # None (left out of the JSON) otherwise.
    output_written: bool | None = None
    # With a safety level: where the verdict JSON is, and the gate's allow / review / block.
    verdict_key: str | None = None
    decision: str | None = None
    # Catalog outputs: the mask written beside the cutout (`--output both`), and what framing did: the
    # fill reached on the canvas, the scale (above 1: upscaled), and a product that was not found.
    mask_key: str | None = None
    fill_reached: float | None = None
    scale: float | None = None
    no_subject: bool | None = None

    @property
    def item_id(self) -> str:
        """The item's identity in job state: claims, outcomes, attempts, dead letters, retries."""
        return items.item_id(self.bucket, self.key, self.version)

    def to_json(self) -> str:
        record = {k: v for k, v in asdict(self).items() if v is not None}
        return json.dumps(record, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str | bytes) -> Outcome:
        # to_json leaves out None: a dropped cutout (a safety `block`) has no output key.
        return cls(**{"output_key": None, **json.loads(line)})


def failed(
    key: str, output_key: str | None, model: str, code: str, message: str, **context: object
) -> Outcome:
    """A failed item: when it names an output key, that output was not written."""
    context.setdefault("output_written", False if output_key else None)
    return Outcome(key, "failed", output_key, model, error_code=code, error=message, **context)  # type: ignore[arg-type]
