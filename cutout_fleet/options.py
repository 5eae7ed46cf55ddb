"""Per-image options: validation, the background colour, and the versioned options hash."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cutout_fleet.errors import InvalidOptions
from cutout_fleet.safety.classification.schema import check_attributes

OutputFormat = Literal["png", "webp"]
RGB = tuple[int, int, int]
# none: no safety check; light: NudeNet's detections and the gate (cutout_fleet.safety); full: NudeNet,
# a Florence-2 caption and the Llama classifier, then the gate (what `--workflow full` asks for).
SafetyLevel = Literal["none", "light", "full"]
BlockAction = Literal["drop", "quarantine", "write"]  # what a `block` decision does with the cutout
ReviewAction = Literal["quarantine", "write"]  # what a `review` decision does with it
# simple: the cutout (and the safety level asked for); full: the cutout, NudeNet, caption, classifier, gate.
Workflow = Literal["simple", "full"]


SENSITIVITY_RANGE = (0.0, 1.0)
MASK_BLUR_RANGE_PX = (0, 64)
MASK_OFFSET_RANGE_PX = (-64, 64)

# Bump only if the meaning of an existing option changes; new options join the hash only when
# they differ from their default, so adding one never changes the hashes already written.
OPTIONS_HASH_VERSION = "o1"

_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")
_NAMED = {"white": (255, 255, 255), "black": (0, 0, 0)}


def parse_background(value: str) -> RGB | None:
    """'none' -> None (keep transparency); 'white', 'black' or '#RRGGBB' -> an RGB triple."""
    text = value.strip().lower()
    if text in ("none", "transparent", ""):
        return None
    if text in _NAMED:
        return _NAMED[text]
    match = _HEX.match(text)
    if not match:
        raise ValueError(f"background must be none, white, black or #RRGGBB, not {value!r}")
    digits = match.group(1)
    return (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16))


class ImageOptions(BaseModel):
    """Options that change the pixels of a cutout (and so its options hash)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = "u2netp"
    background: str = "none"
    sensitivity: Annotated[float, Field(ge=SENSITIVITY_RANGE[0], le=SENSITIVITY_RANGE[1])] = 1.0
    mask_blur_px: Annotated[int, Field(ge=MASK_BLUR_RANGE_PX[0], le=MASK_BLUR_RANGE_PX[1])] = 0
    mask_offset_px: Annotated[int, Field(ge=MASK_OFFSET_RANGE_PX[0], le=MASK_OFFSET_RANGE_PX[1])] = 0
    format: OutputFormat = "png"
    safety: SafetyLevel = "none"
    on_block: BlockAction = "drop"
    on_review: ReviewAction = "quarantine"
    workflow: Workflow = "simple"
    attributes: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _workflow_and_level_agree(cls, values: object) -> object:
        # `--workflow full` is the level `full` (its stages include light's NudeNet), and the reverse: one
        # meaning, however it was asked for, so that equal jobs get equal options hashes.
        if isinstance(values, dict):
            if values.get("workflow") == "full":
                values = {**values, "safety": "full"}
            elif values.get("safety") == "full":
                values = {**values, "workflow": "full"}
        return values

    @field_validator("attributes", mode="before")
    @classmethod
    def _known_attributes(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            # sorted: the same set gives the same hash
            return tuple(sorted(check_attributes([str(v) for v in value])))
        return value

    @model_validator(mode="after")
    def _attributes_need_the_classifier(self) -> ImageOptions:
        if self.attributes and self.workflow != "full":
            raise ValueError("--attributes needs --workflow full: the classifier reads them off the caption")
        return self

    @field_validator("background")
    @classmethod
    def _normalise_background(cls, value: str) -> str:
        rgb = parse_background(value)
        return "none" if rgb is None else "#{:02x}{:02x}{:02x}".format(*rgb)

    @property
    def background_rgb(self) -> RGB | None:
        return parse_background(self.background)

    @property
    def extension(self) -> str:
        return "." + self.format


def make_options(**values: object) -> ImageOptions:
    """Build ImageOptions, raising InvalidOptions with one readable line per problem."""
    try:
        return ImageOptions(**values)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'options'}: {err['msg']}" for err in exc.errors()
        )
        raise InvalidOptions(f"invalid options: {problems}") from exc


# Options that matter only when a safety level is asked for: without one, they change nothing.
SAFETY_CONSEQUENCES = frozenset({"on_block", "on_review"})


def options_hash(options: ImageOptions, model_checksum: str, safety_fingerprint: str | None = None) -> str:
    """A stable digest of everything that decides the outputs: pixels, verdict and where they go.

    The model's file checksum is part of it, so replacing a model's weights invalidates old outputs; so
    is the safety fingerprint (policy version, safety model checksums) when a safety level is asked for.
    """
    defaults = ImageOptions(model=options.model)
    changed = {
        # `+ 0.0` folds -0.0 into 0.0: equal options must give equal hashes.
        name: value + 0.0 if isinstance(value, float) else value
        for name, value in options.model_dump().items()
        if (name == "model" or value != getattr(defaults, name))
        and not (options.safety == "none" and name in SAFETY_CONSEQUENCES)
    }
    changed["model_checksum"] = model_checksum
    if options.safety != "none":
        changed["safety_fingerprint"] = safety_fingerprint or ""
    canonical = json.dumps(changed, sort_keys=True, separators=(",", ":"))
    return f"{OPTIONS_HASH_VERSION}-{hashlib.sha256(canonical.encode()).hexdigest()[:32]}"
