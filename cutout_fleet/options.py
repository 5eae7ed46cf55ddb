"""Per-image options: validation, the background colour, and the versioned options hash."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cutout_fleet import layout
from cutout_fleet.errors import InvalidOptions
from cutout_fleet.keys import MASK_SUFFIX
from cutout_fleet.option_ranges import MASK_BLUR_RANGE_PX, MASK_OFFSET_RANGE_PX, SENSITIVITY_RANGE
from cutout_fleet.safety.classification.schema import check_attributes

OutputFormat = Literal["png", "webp", "jpeg"]
RGB = tuple[int, int, int]
# none: no safety check; light: NudeNet's detections and the gate (cutout_fleet.safety); full: NudeNet,
# a Florence-2 caption and the Llama classifier, then the gate (what `--workflow full` asks for).
SafetyLevel = Literal["none", "light", "full"]
BlockAction = Literal["drop", "quarantine", "write"]  # what a `block` decision does with the cutout
ReviewAction = Literal["quarantine", "write"]  # what a `review` decision does with it
# simple: the cutout (and the safety level asked for); full: the cutout, NudeNet, caption, classifier, gate.
Workflow = Literal["simple", "full"]
# Catalog outputs (README, "Catalog-ready outputs"): what is written, and how the product is framed.
Crop = Literal["none", "subject"]
OutputKind = Literal["cutout", "mask", "both"]  # mask: 8-bit grayscale PNG at OUTPUT_STEM.mask.png
Shadow = Literal["none", "drop"]
NoSubjectAction = Literal[
    "fail", "keep"
]  # an item whose mask shows no product: fail it, or keep it uncropped

EXTENSIONS = {"png": ".png", "webp": ".webp", "jpeg": ".jpg"}


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
    # Catalog outputs: the product's box, its margin, the canvas it is placed on, and what is written.
    output: OutputKind = "cutout"
    crop: Crop = "none"
    margin: str = "0"  # canonical: '0', '5%' or '40px' (cutout_fleet.layout)
    canvas: str = "none"  # canonical: 'none', 'square' or 'WxH'
    fill: Annotated[float, Field(gt=0, le=1)] | None = None
    align: layout.Align = "center"
    shadow: Shadow = "none"
    quality: Annotated[int, Field(ge=1, le=100)] | None = None  # JPEG and lossy WebP; None: the settings'
    on_no_subject: NoSubjectAction = "fail"
    visible_threshold: Annotated[int, Field(ge=1, le=255)] = layout.VISIBLE_THRESHOLD
    min_speck_share: Annotated[float, Field(ge=0, le=0.5)] = layout.DEFAULT_SPECK_SHARE
    min_subject_share: Annotated[float, Field(ge=0, le=1)] = layout.MIN_SUBJECT_SHARE
    max_upscale: Annotated[float, Field(ge=1, le=16)] = layout.MAX_UPSCALE
    max_square_px: Annotated[int, Field(ge=16, le=layout.MAX_CANVAS_SIDE_PX)] = layout.MAX_SQUARE_PX

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

    @field_validator("margin", mode="before")
    @classmethod
    def _normalise_margin(cls, value: object) -> object:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = f"{value}px"  # a manifest line may give a bare number of pixels
        return str(layout.parse_margin(value)) if isinstance(value, str) else value

    @field_validator("canvas", mode="before")
    @classmethod
    def _normalise_canvas(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip().lower()
            return "none" if text in ("", "none") else str(layout.parse_canvas(text))
        return value

    @model_validator(mode="after")
    def _layout_is_coherent(self) -> ImageOptions:
        if self.fill is not None and self.canvas == "none":
            raise ValueError("--fill needs --canvas (WxH or square): the fill is a share of the canvas")
        if self.writes_cutout and self.format == "jpeg" and self.background == "none":
            raise ValueError(
                "--format jpeg has no transparency: add --background white (or #RRGGBB), "
                "or keep --background none with --format png or webp"
            )
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
    def writes_cutout(self) -> bool:
        return self.output != "mask"

    @property
    def frames(self) -> bool:
        """True when the product is cropped or placed on a canvas (worker/imaging/framing.py)."""
        return self.crop != "none" or self.canvas != "none" or self.margin != "0"

    @property
    def extension(self) -> str:
        """The output key's ending: the cutout's, or the mask's when only the mask is written."""
        return EXTENSIONS[self.format] if self.writes_cutout else MASK_SUFFIX


# Options as a JSONL manifest line or a preset names them (the command-line flags, `-` as `_`) -> the
# ImageOptions field.  Tasks and the job record carry field names.
_FLAG_OF = {"mask_blur_px": "mask_blur", "mask_offset_px": "mask_offset"}
FIELD_FLAGS: dict[str, str] = {field: _FLAG_OF.get(field, field) for field in ImageOptions.model_fields}
FLAG_FIELDS: dict[str, str] = {flag: field for field, flag in FIELD_FLAGS.items()}


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
# Options that tune a step the job does not take change nothing either, so a setting such as
# CUTOUT_FRAMING__MAX_UPSCALE never changes the hash of a job that does not frame.
SUBJECT_TUNING = frozenset({"on_no_subject", "visible_threshold", "min_speck_share", "min_subject_share"})
CANVAS_TUNING = frozenset({"fill", "align", "max_upscale"})
CUTOUT_ONLY = frozenset({"format", "quality", "background", "shadow"})  # the mask is the alpha alone


def inert_options(options: ImageOptions) -> frozenset[str]:
    """The options that change nothing in this job's outputs (left out of its hash)."""
    inert: set[str] = set()
    if options.safety == "none":
        inert |= SAFETY_CONSEQUENCES
    if options.crop == "none":
        inert |= SUBJECT_TUNING
    if options.canvas == "none":
        inert |= CANVAS_TUNING
    if options.canvas != "square":
        inert.add("max_square_px")
    if not options.writes_cutout:
        inert |= CUTOUT_ONLY
    if options.format == "png":
        inert.add("quality")  # lossless: a preset's JPEG quality changes nothing once --format png wins
    return frozenset(inert)


def changed_options(options: ImageOptions) -> dict[str, object]:
    """The options that differ from their defaults and matter to this job's outputs (model aside): what
    the hash covers, and what each output's metadata records (`cutout-options`)."""
    defaults = ImageOptions(model=options.model)
    inert = inert_options(options)
    return {
        # `+ 0.0` folds -0.0 into 0.0: equal options must give equal hashes.
        name: value + 0.0 if isinstance(value, float) else value
        for name, value in options.model_dump().items()
        if name != "model" and value != getattr(defaults, name) and name not in inert
    }


def options_hash(options: ImageOptions, model_checksum: str, safety_fingerprint: str | None = None) -> str:
    """A stable digest of everything that decides the outputs: pixels, verdict and where they go.

    The model's file checksum is part of it, so replacing a model's weights invalidates old outputs; so
    is the safety fingerprint (policy version, safety model checksums) when a safety level is asked for.
    """
    changed: dict[str, object] = {"model": options.model, **changed_options(options)}
    changed["model_checksum"] = model_checksum
    if options.safety != "none":
        changed["safety_fingerprint"] = safety_fingerprint or ""
    canonical = json.dumps(changed, sort_keys=True, separators=(",", ":"))
    return f"{OPTIONS_HASH_VERSION}-{hashlib.sha256(canonical.encode()).hexdigest()[:32]}"
