"""Per-image options: defaults, ranges, background colours and the versioned options hash."""

from __future__ import annotations

import hashlib
import json

import pytest
from pydantic import ValidationError

from cutout_fleet.errors import InvalidOptions, PermanentError
from cutout_fleet.options import ImageOptions, make_options, options_hash, parse_background

CHECKSUM = "sha256:" + "0123456789abcdef" * 4
OTHER_CHECKSUM = "sha256:" + "fedcba9876543210" * 4

# --- Defaults -----------------------------------------------------------------------------------------


def test_the_defaults_are_u2netp_transparent_png_with_an_untouched_mask() -> None:
    options = make_options()

    assert options.model == "u2netp"
    assert options.background == "none"
    assert options.background_rgb is None
    assert options.sensitivity == 1.0
    assert options.mask_blur_px == 0
    assert options.mask_offset_px == 0
    assert options.format == "png"
    assert options.extension == ".png"


def test_webp_output_has_the_webp_extension() -> None:
    assert make_options(format="webp").extension == ".webp"


def test_options_cannot_be_changed_after_validation() -> None:
    options = make_options()

    with pytest.raises(ValidationError):
        options.sensitivity = 0.5  # type: ignore[misc]


# --- Ranges -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sensitivity", 0.0),
        ("sensitivity", 1.0),
        ("mask_blur_px", 0),
        ("mask_blur_px", 64),
        ("mask_offset_px", -64),
        ("mask_offset_px", 64),
    ],
)
def test_the_bounds_of_each_range_are_accepted(field: str, value: float) -> None:
    assert getattr(make_options(**{field: value}), field) == value


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sensitivity", -0.01),
        ("sensitivity", 1.01),
        ("sensitivity", float("nan")),
        ("sensitivity", float("inf")),
        ("mask_blur_px", -1),
        ("mask_blur_px", 65),
        ("mask_blur_px", 2.5),
        ("mask_offset_px", -65),
        ("mask_offset_px", 65),
        ("format", "gif"),
        ("model", None),
    ],
)
def test_a_value_outside_its_range_raises_invalid_options_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(InvalidOptions, match=f"^invalid options: {field}: ") as caught:
        make_options(**{field: value})

    assert caught.value.code == "invalid_options"
    assert isinstance(caught.value, PermanentError)


def test_every_bad_field_is_listed_in_one_message() -> None:
    with pytest.raises(InvalidOptions) as caught:
        make_options(sensitivity=2, mask_blur_px=-1, mask_offset_px=100)

    message = str(caught.value)
    assert "sensitivity" in message
    assert "mask_blur_px" in message
    assert "mask_offset_px" in message


def test_an_unknown_option_is_refused_by_name() -> None:
    with pytest.raises(InvalidOptions, match="mask_feather_px"):
        make_options(mask_feather_px=3)


# --- Background ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("none", None),
        ("NONE", None),
        ("transparent", None),
        ("", None),
        ("white", (255, 255, 255)),
        (" White ", (255, 255, 255)),
        ("black", (0, 0, 0)),
        ("#12abEF", (0x12, 0xAB, 0xEF)),
        ("#FF8800", (255, 136, 0)),
        ("FF8800", (255, 136, 0)),
    ],
)
def test_parse_background_understands_none_white_black_and_hex(
    text: str, expected: tuple[int, int, int] | None
) -> None:
    assert parse_background(text) == expected


@pytest.mark.parametrize("text", ["#FF880", "#FF88000", "#GG8800", "red", "##FF8800", "#FF 8800", "0xFF8800"])
def test_parse_background_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="#RRGGBB"):
        parse_background(text)


def test_a_bad_background_option_raises_invalid_options_naming_the_field() -> None:
    with pytest.raises(InvalidOptions, match=r"background: .*#RRGGBB"):
        make_options(background="#12345")


@pytest.mark.parametrize(
    ("text", "stored"),
    [("white", "#ffffff"), ("BLACK", "#000000"), ("FF8800", "#ff8800"), ("Transparent", "none")],
)
def test_the_background_option_is_stored_in_one_canonical_spelling(text: str, stored: str) -> None:
    assert make_options(background=text).background == stored


def test_the_background_option_gives_its_rgb_triple() -> None:
    assert make_options(background="#0a0b0c").background_rgb == (10, 11, 12)


# --- options_hash -------------------------------------------------------------------------------------


def test_the_hash_of_fixed_options_and_checksum_never_changes() -> None:
    # Pinned: outputs already written carry this hash; changing the canonical form re-does every image.
    options = make_options(
        model="isnet-general-use",
        background="#FF8800",
        sensitivity=0.5,
        mask_blur_px=2,
        mask_offset_px=-3,
        format="webp",
    )

    assert options_hash(options, CHECKSUM) == "o1-ea3636dab16f9f8f7ae352f971a9c59a"


def test_the_hash_is_sha256_of_the_sorted_compact_json_of_model_checksum_and_non_defaults() -> None:
    options = make_options(model="silueta", mask_blur_px=4)
    canonical = '{"mask_blur_px":4,"model":"silueta","model_checksum":"' + CHECKSUM + '"}'

    expected = "o1-" + hashlib.sha256(canonical.encode()).hexdigest()[:32]

    assert options_hash(options, CHECKSUM) == expected


def test_the_hash_starts_with_the_version_o1() -> None:
    digest = options_hash(make_options(), CHECKSUM)

    assert digest.startswith("o1-")
    assert len(digest) == len("o1-") + 32


def test_the_hash_is_the_same_on_every_call() -> None:
    options = make_options(sensitivity=0.3, background="black")

    assert options_hash(options, CHECKSUM) == options_hash(options, CHECKSUM)


def test_the_hash_does_not_depend_on_the_order_the_options_were_given_in() -> None:
    one = make_options(format="webp", mask_blur_px=3, background="white", sensitivity=0.2)
    other = make_options(sensitivity=0.2, background="white", mask_blur_px=3, format="webp")

    assert options_hash(one, CHECKSUM) == options_hash(other, CHECKSUM)


@pytest.mark.parametrize(
    "change",
    [
        {"model": "isnet-general-use"},
        {"background": "white"},
        {"sensitivity": 0.9},
        {"mask_blur_px": 1},
        {"mask_offset_px": -1},
        {"format": "webp"},
    ],
    ids=lambda change: next(iter(change)),
)
def test_the_hash_changes_when_an_option_that_decides_the_pixels_changes(change: dict[str, object]) -> None:
    assert options_hash(make_options(**change), CHECKSUM) != options_hash(make_options(), CHECKSUM)


def test_the_hash_changes_when_the_model_checksum_changes() -> None:
    options = make_options()

    assert options_hash(options, CHECKSUM) != options_hash(options, OTHER_CHECKSUM)


@pytest.mark.parametrize(
    "explicit_default",
    [
        {"background": "none"},
        {"sensitivity": 1.0},
        {"sensitivity": 1},
        {"mask_blur_px": 0},
        {"mask_offset_px": 0},
        {"format": "png"},
    ],
    ids=lambda given: f"{next(iter(given))}={next(iter(given.values()))!r}",
)
def test_an_option_given_at_its_default_hashes_as_if_omitted(explicit_default: dict[str, object]) -> None:
    assert options_hash(make_options(**explicit_default), CHECKSUM) == options_hash(make_options(), CHECKSUM)


def test_the_same_colour_spelled_differently_gives_the_same_hash() -> None:
    assert options_hash(make_options(background="white"), CHECKSUM) == options_hash(
        make_options(background="#FFFFFF"), CHECKSUM
    )


def test_sensitivity_minus_zero_hashes_like_zero() -> None:
    assert options_hash(make_options(sensitivity=-0.0), CHECKSUM) == options_hash(
        make_options(sensitivity=0.0), CHECKSUM
    )


def test_options_built_directly_hash_like_options_from_make_options() -> None:
    assert options_hash(ImageOptions(mask_offset_px=5), CHECKSUM) == options_hash(
        make_options(mask_offset_px=5), CHECKSUM
    )


def test_the_canonical_form_is_json_that_names_each_changed_option() -> None:
    # Guard for the pinned test above: the canonical form stays plain JSON a person can reproduce.
    canonical = json.dumps(
        {"model": "u2netp", "model_checksum": CHECKSUM}, sort_keys=True, separators=(",", ":")
    )
    expected = "o1-" + hashlib.sha256(canonical.encode()).hexdigest()[:32]

    assert options_hash(make_options(), CHECKSUM) == expected
