"""The verdict: what the safety stages found about one source image, and what the gate decided.

It is written as JSON beside the cutout's output key (`verdict_key`): `OUT/shoes/a.png` has its verdict
in `OUT/shoes/a.verdict.json`.  Every stage has a slot (`STAGE_NAMES`), filled or not, so a reader
never has to guess whether a stage ran: `ok` (its result is here), `failed` (it raised; `error` says
what), `missing` (the level asks for it but it could not run here) or `skipped` (the level does not
ask for it).  Readers ignore fields they do not know, so later stages can add to a result.
"""

from __future__ import annotations

import json
import posixpath
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

# Bump when the meaning of a field changes; new optional fields do not need it.
VERDICT_VERSION = 1
VERDICT_SUFFIX = ".verdict.json"

Decision = Literal["allow", "review", "block"]
# Stricter decisions rank higher: the gate's decision is the strictest of its reasons.
DECISION_RANK: dict[str, int] = {"allow": 0, "review": 1, "block": 2}

Box = tuple[int, int, int, int]  # x, y, width, height in the source image's pixels (EXIF-oriented)


class StageStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"
    MISSING = "missing"
    SKIPPED = "skipped"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Detection(_Frozen):
    """One thing a detector found: its class label, its score (0..1) and where it is."""

    label: str
    score: float
    box: Box


class StageDetection(Detection):
    """A detection with the stage that found it (the verdict's flat list)."""

    stage: str


class StageResult(_Frozen):
    """One stage's slot.  Which result fields a stage fills depends on its kind: detectors fill
    `detections`; captioners `text` (and `truncated` when generation was cut short); classifiers
    `scores` (domain -> 0..1) with a short `explanations` line per domain, an overall `category` and
    the catalog `attributes` the job asked for; a classifier answer it could not use is kept in
    `raw_answer` (shortened), beside the `error` that says why."""

    status: StageStatus
    model: str | None = None  # the id of the model that produced the result
    detections: tuple[Detection, ...] = ()
    scores: dict[str, float] = Field(default_factory=dict)
    explanations: dict[str, str] = Field(default_factory=dict)
    category: str | None = None
    attributes: dict[str, str | list[str]] = Field(default_factory=dict)
    text: str | None = None
    truncated: bool | None = None
    raw_answer: str | None = None
    error: str | None = None  # failed: what it raised; missing: why it could not run
    timings_ms: dict[str, float] = Field(default_factory=dict)

    @classmethod
    def skipped(cls) -> StageResult:
        return cls(status=StageStatus.SKIPPED)

    @classmethod
    def missing(cls, why: str) -> StageResult:
        return cls(status=StageStatus.MISSING, error=why)

    @classmethod
    def failed(
        cls, error: str, *, model: str | None = None, timings_ms: dict[str, float] | None = None
    ) -> StageResult:
        return cls(status=StageStatus.FAILED, model=model, error=error, timings_ms=timings_ms or {})


class ModelRef(_Frozen):
    """A model a stage ran: its id, the revision (package version) and the checksum of the file loaded."""

    stage: str
    id: str
    revision: str
    sha256: str
    providers: tuple[str, ...] = ()  # onnxruntime's execution providers, in the order it used them


class SourceRef(_Frozen):
    """The object the verdict is about, as it was read."""

    bucket: str
    key: str
    etag: str | None = None
    version_id: str | None = None


ReasonRule = Literal["label", "score", "keyword", "missing", "failed"]


class Reason(_Frozen):
    """One finding that led to the decision: which stage, which rule, and the numbers."""

    decision: Decision
    stage: str
    rule: ReasonRule
    subject: str | None = None  # the label, the domain or the keyword
    score: float | None = None
    threshold: float | None = None
    message: str


class Verdict(_Frozen):
    """Everything one image's safety check found and decided; `to_json` is the file's content."""

    version: int = VERDICT_VERSION
    level: str
    source: SourceRef
    output_key: str | None = None
    models: tuple[ModelRef, ...] = ()
    stages: dict[str, StageResult]
    decision: Decision
    reasons: tuple[Reason, ...] = ()
    policy_version: str
    policy_digest: str
    timings_ms: dict[str, float] = Field(default_factory=dict)

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented use on a property
    @property
    def detections(self) -> tuple[StageDetection, ...]:
        """Every detection of every stage, in stage order: the list a reviewer reads first."""
        return tuple(
            StageDetection(stage=name, **found.model_dump())
            for name, stage in self.stages.items()
            for found in stage.detections
        )

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2).encode("utf-8")


def verdict_key(output_key: str) -> str:
    """Where the verdict of the cutout at `output_key` goes: the same stem, `.verdict.json`."""
    stem, _ = posixpath.splitext(output_key)
    return stem + VERDICT_SUFFIX


def read_verdict(data: bytes | str) -> Verdict:
    """Parse a verdict file; one of a newer version than this code knows raises ValueError."""
    raw = json.loads(data)
    version = raw.get("version") if isinstance(raw, dict) else None
    if isinstance(version, int) and version > VERDICT_VERSION:
        raise ValueError(f"verdict version {version} is newer than this code's {VERDICT_VERSION}")
    return Verdict.model_validate(raw)
