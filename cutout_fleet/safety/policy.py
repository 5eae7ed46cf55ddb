"""The gate's policy: which findings block an image or send it to review, read from a versioned TOML file.

The built-in policy is `config/safety_policy.toml`; an operator replaces it whole with the file named
by `CUTOUT_SAFETY__POLICY_FILE` (the producer and every worker must read the same file, since the
policy is part of the options hash).  Per stage, a policy can hold:

- `labels`: detector labels (NudeNet's names) -> `{ review = S, block = S }`;
- `scores`: classifier domains -> `{ review = S, block = S }`;
- `keywords`: caption words -> `{ review = [...], block = [...] }`;
- `on_missing` / `on_failed`: the stage's own answer for "did not run" / "raised".

A score at or above a threshold triggers it.  The top-level `on_missing` and `on_failed` (default
`review`) apply to every stage that does not set its own.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cutout_fleet.errors import ConfigError
from cutout_fleet.safety.classification.schema import SAFETY_DOMAINS
from cutout_fleet.safety.labels import STAGE_LABELS
from cutout_fleet.safety.levels import STAGE_NAMES
from cutout_fleet.safety.verdict import Decision

# The domains each scoring stage gives, so a policy that names another (a typo) is refused, not ignored.
STAGE_SCORES: dict[str, tuple[str, ...]] = {"classifier": SAFETY_DOMAINS}

BUILTIN_POLICY = "safety_policy.toml"
POLICY_SETTING = "CUTOUT_SAFETY__POLICY_FILE"

Score = Annotated[float, Field(ge=0.0, le=1.0)]


class _Strict(BaseModel):
    # A misspelt key in a policy must be refused, not ignored: it would silently loosen the gate.
    model_config = ConfigDict(frozen=True, extra="forbid")


class Thresholds(_Strict):
    """A finding's score at or above `block` blocks the image; at or above `review` sends it to review."""

    review: Score | None = None
    block: Score | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.review is None and self.block is None:
            raise ValueError("give review, block or both")
        if self.review is not None and self.block is not None and self.review >= self.block:
            raise ValueError(f"review ({self.review}) must be below block ({self.block})")
        return self

    def decision(self, score: float) -> tuple[Decision, float] | None:
        """The decision `score` triggers and the threshold it reached, or None below both."""
        if self.block is not None and score >= self.block:
            return "block", self.block
        if self.review is not None and score >= self.review:
            return "review", self.review
        return None


class Keywords(_Strict):
    """Words (matched whole, case ignored) whose presence in a caption blocks or needs review."""

    review: tuple[str, ...] = ()
    block: tuple[str, ...] = ()

    @field_validator("review", "block")
    @classmethod
    def _words(cls, words: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(word.strip().lower() for word in words)
        if any(not word for word in cleaned):
            raise ValueError("a keyword is empty")
        return cleaned

    def __bool__(self) -> bool:
        return bool(self.review or self.block)


class StagePolicy(_Strict):
    """The rules for one stage's result."""

    labels: dict[str, Thresholds] = Field(default_factory=dict)
    scores: dict[str, Thresholds] = Field(default_factory=dict)
    keywords: Keywords = Field(default_factory=Keywords)
    on_missing: Decision | None = None
    on_failed: Decision | None = None


class GatePolicy(_Strict):
    """The whole policy; `version` goes into every verdict and into the options hash."""

    version: Annotated[str, Field(min_length=1)]
    on_missing: Decision = "review"
    on_failed: Decision = "review"
    stages: dict[str, StagePolicy] = Field(default_factory=dict)

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: object) -> object:
        # `version = 3` in TOML is an integer; it names the same policy as "3".
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _known_stages_and_labels(self) -> GatePolicy:
        for name, stage in self.stages.items():
            if name not in STAGE_NAMES:
                raise ValueError(f"unknown stage {name!r}; the stages are {', '.join(STAGE_NAMES)}")
            known = STAGE_LABELS.get(name)
            unknown = sorted(set(stage.labels) - known) if known is not None else []
            if unknown:
                raise ValueError(f"stage {name!r} has no label {', '.join(map(repr, unknown))}")
            scored = STAGE_SCORES.get(name)
            unscored = sorted(set(stage.scores) - set(scored)) if scored is not None else []
            if unscored:
                raise ValueError(
                    f"stage {name!r} scores no {', '.join(map(repr, unscored))}; "
                    f"its domains are {', '.join(scored or ())}"
                )
        return self

    def stage(self, name: str) -> StagePolicy:
        """The rules for stage `name` (none when the policy says nothing about it)."""
        return self.stages.get(name) or _NO_RULES

    def on_missing_for(self, name: str) -> Decision:
        return self.stage(name).on_missing or self.on_missing

    def on_failed_for(self, name: str) -> Decision:
        return self.stage(name).on_failed or self.on_failed

    def digest(self) -> str:
        """A checksum of the rules as parsed: it changes with any rule, even when `version` does not."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


_NO_RULES = StagePolicy()


def parse_policy(text: str, origin: str) -> GatePolicy:
    """A policy from TOML text, or ConfigError naming `origin` and every problem."""
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"safety policy {origin} is not valid TOML: {exc}") from exc
    try:
        return GatePolicy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err['loc']) or 'policy'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"safety policy {origin} is invalid: {problems}") from exc


def load_policy(path: Path | None = None) -> GatePolicy:
    """The policy in `path` (the setting `CUTOUT_SAFETY__POLICY_FILE`), else the built-in one."""
    if path is None:
        text = resources.files("cutout_fleet.config").joinpath(BUILTIN_POLICY).read_text("utf-8")
        return parse_policy(text, f"(built-in {BUILTIN_POLICY})")
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"safety policy {path} ({POLICY_SETTING}) cannot be read: {exc}") from exc
    return parse_policy(text, f"{path} ({POLICY_SETTING})")
