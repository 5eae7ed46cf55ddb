"""Safety levels: which stages each level runs, and the pinned model behind each stage.

This is data, shared by the producer (refusal, dry-run freshness) and the worker (the runners): a
later level adds its stages and models here, and the verdict, the policy and the gate stay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from cutout_fleet.errors import InvalidOptions

SafetyLevel = Literal["none", "light", "full"]
SAFETY_LEVELS: tuple[str, ...] = get_args(SafetyLevel)
NO_SAFETY: SafetyLevel = "none"

# Every stage a verdict has a slot for, in the order the gate reads them.  A level that does not run a
# stage leaves its slot `skipped`.
StageName = Literal["nudenet", "caption", "classifier"]
STAGE_NAMES: tuple[str, ...] = get_args(StageName)

LEVEL_STAGES: dict[str, tuple[str, ...]] = {
    "none": (),
    "light": ("nudenet",),
    # `--workflow full`: NudeNet, then a Florence-2 caption, then the Llama classifier reading both.
    "full": ("nudenet", "caption", "classifier"),
}

# Stages whose models come from the Hugging Face Hub, pinned in settings (`SafetySettings.hub_pins`).
HUB_STAGES: tuple[str, ...] = ("caption", "classifier")

# The optional dependency group (pyproject extra) a worker needs for each level.
LEVEL_EXTRAS: dict[str, str] = {"light": "safety-light", "full": "safety-full"}


@dataclass(frozen=True)
class SafetyModel:
    """A stage's model, pinned by the checksum of the file the worker loads."""

    id: str
    stage: str
    package: str  # the distribution that ships the file
    version: str  # the version it is pinned to (pyproject extra)
    file: str  # the file inside the package
    sha256: str


NUDENET_320N = SafetyModel(
    id="nudenet-320n",
    stage="nudenet",
    package="nudenet",
    version="3.4.2",
    file="320n.onnx",
    sha256="c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
)

STAGE_MODELS: dict[str, SafetyModel] = {NUDENET_320N.stage: NUDENET_320N}


def parse_level(value: str) -> SafetyLevel:
    """`value` as a safety level, or InvalidOptions naming the known ones."""
    if value not in SAFETY_LEVELS:
        raise InvalidOptions(f"unknown safety level {value!r}; choose one of {', '.join(SAFETY_LEVELS)}")
    return value  # type: ignore[return-value]  # checked against the Literal's values just above


def level_stages(level: str) -> tuple[str, ...]:
    """The stages `level` runs (none for an unknown level)."""
    return LEVEL_STAGES.get(level, ())


def level_models(level: str) -> tuple[SafetyModel, ...]:
    """The pinned models of the stages `level` runs."""
    return tuple(STAGE_MODELS[stage] for stage in level_stages(level) if stage in STAGE_MODELS)
