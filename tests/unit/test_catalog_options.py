"""Catalog output options: validation, canonical spellings, the options hash, presets, message version."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cutout_fleet.errors import ConfigError, InvalidOptions
from cutout_fleet.messages import TaskMessage, needed_version
from cutout_fleet.options import ImageOptions, changed_options, make_options, options_hash
from cutout_fleet.presets import UnknownPreset, load_presets

CHECKSUM = "sha256:" + "0" * 64


def _hash(**values: object) -> str:
    return options_hash(make_options(**values), CHECKSUM)


# --- validation --------------------------------------------------------------------------------------


def test_the_catalog_options_default_to_a_plain_cutout() -> None:
    options = ImageOptions()
    assert (options.output, options.crop, options.margin, options.canvas) == ("cutout", "none", "0", "none")
    assert (options.fill, options.align, options.shadow, options.quality) == (None, "center", "none", None)
    assert not options.frames and options.writes_cutout


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("5%", "5%"),
        (" 5.0 % ", "5%"),
        ("40px", "40px"),
        ("40 px", "40px"),
        ("0", "0"),
        ("0%", "0"),
        (12, "12px"),
    ],
)
def test_a_margin_is_stored_in_one_spelling(given: object, stored: str) -> None:
    assert make_options(margin=given).margin == stored


@pytest.mark.parametrize(
    ("given", "stored"), [("1200X1200", "1200x1200"), ("Square", "square"), ("", "none")]
)
def test_a_canvas_is_stored_in_one_spelling(given: str, stored: str) -> None:
    assert make_options(canvas=given).canvas == stored


@pytest.mark.parametrize("margin", ["5", "-5%", "50%", "5em", "px"])
def test_a_malformed_margin_is_refused_with_the_accepted_forms(margin: str) -> None:
    with pytest.raises(InvalidOptions, match="margin"):
        make_options(margin=margin)


@pytest.mark.parametrize("canvas", ["1200", "0x100", "20000x100", "big"])
def test_a_malformed_canvas_is_refused(canvas: str) -> None:
    with pytest.raises(InvalidOptions, match="canvas"):
        make_options(canvas=canvas)


def test_fill_needs_a_canvas() -> None:
    with pytest.raises(InvalidOptions, match="--fill needs --canvas"):
        make_options(fill=0.85)


@pytest.mark.parametrize("fill", [0, 1.2, -0.1])
def test_fill_is_a_share_above_0_and_at_most_1(fill: float) -> None:
    with pytest.raises(InvalidOptions, match="fill"):
        make_options(canvas="square", fill=fill)


def test_jpeg_on_a_transparent_background_is_refused_naming_the_fix() -> None:
    with pytest.raises(InvalidOptions, match=r"--background white \(or #RRGGBB\)"):
        make_options(format="jpeg")


def test_jpeg_on_a_colour_is_accepted_with_the_jpg_extension() -> None:
    options = make_options(format="jpeg", background="white", quality=85)
    assert options.extension == ".jpg" and options.quality == 85


def test_quality_on_png_changes_nothing_so_a_jpeg_preset_can_be_switched_to_png() -> None:
    assert _hash(quality=80) == _hash()
    assert _hash(**load_presets().expand("marketplace-main", {"format": "png"})) == _hash(
        **{
            k: v
            for k, v in load_presets().expand("marketplace-main", {"format": "png"}).items()
            if k != "quality"
        }
    )


def test_a_mask_only_job_ends_its_output_keys_in_mask_png_whatever_the_format() -> None:
    assert make_options(output="mask").extension == ".mask.png"
    assert make_options(output="mask", format="jpeg").extension == ".mask.png"  # no cutout: no jpeg check
    assert make_options(output="both", format="webp").extension == ".webp"


def test_cropping_or_a_canvas_or_a_margin_frames_the_product() -> None:
    assert make_options(crop="subject").frames
    assert make_options(canvas="800x600").frames
    assert make_options(margin="10px").frames


# --- the options hash ---------------------------------------------------------------------------------


def test_options_at_their_defaults_keep_the_hash_outputs_already_have() -> None:
    # The figure test_options.py pins for the same options: adding catalog options changed no hash.
    explicit = _hash(
        output="cutout", crop="none", margin="0", canvas="none", align="center", shadow="none",
        on_no_subject="fail", visible_threshold=128, max_upscale=4.0, max_square_px=2000,
    )  # fmt: skip
    assert explicit == _hash()


@pytest.mark.parametrize(
    ("base", "change"),
    [
        ({}, {"crop": "subject"}),
        ({}, {"margin": "5%"}),
        ({}, {"canvas": "1200x1200"}),
        ({"canvas": "square"}, {"fill": 0.85}),
        ({"canvas": "square"}, {"align": "bottom"}),
        ({}, {"output": "mask"}),
        ({}, {"output": "both"}),
        ({}, {"shadow": "drop"}),
        ({"background": "white"}, {"format": "jpeg"}),
        ({"format": "webp"}, {"quality": 70}),
        ({"crop": "subject"}, {"on_no_subject": "keep"}),
        ({"crop": "subject"}, {"visible_threshold": 200}),
        ({"canvas": "square"}, {"max_upscale": 2}),
        ({"canvas": "square"}, {"max_square_px": 1000}),
    ],
)
def test_each_catalog_option_that_changes_the_output_changes_the_hash(
    base: dict[str, object], change: dict[str, object]
) -> None:
    assert _hash(**base, **change) != _hash(**base)


@pytest.mark.parametrize(
    "inert",
    [
        {"on_no_subject": "keep"},  # no crop: the no-subject rule never runs
        {"visible_threshold": 200},
        {"min_speck_share": 0.01},
        {"max_upscale": 2},  # no canvas: nothing is ever scaled
        {"align": "bottom"},
        {"canvas": "1200x1200", "max_square_px": 1000},  # a fixed canvas is not a square
    ],
)
def test_an_option_for_a_step_the_job_does_not_take_leaves_the_hash_alone(inert: dict[str, object]) -> None:
    without = {k: v for k, v in inert.items() if k == "canvas"}
    assert _hash(**inert) == _hash(**without)


def test_a_mask_only_job_hashes_without_the_cutouts_looks() -> None:
    assert _hash(output="mask", background="white", shadow="drop") == _hash(output="mask")


def test_changed_options_name_what_differs_and_matters() -> None:
    options = make_options(crop="subject", canvas="square", fill=0.85, background="white", max_upscale=4)
    assert changed_options(options) == {
        "crop": "subject",
        "canvas": "square",
        "fill": 0.85,
        "background": "#ffffff",
    }


# --- presets ------------------------------------------------------------------------------------------


def test_the_built_in_presets_are_valid_and_described() -> None:
    presets = load_presets()
    assert {"marketplace-main", "transparent-square", "shop-tile", "mask-only"} <= set(presets.by_name)
    for preset in presets.by_name.values():
        assert preset.description
        make_options(**preset.options)  # each is a valid set of options on its own


def test_the_marketplace_preset_is_a_white_square_at_85_percent_in_jpeg() -> None:
    options = make_options(**load_presets().expand("marketplace-main"))
    assert (options.canvas, options.fill, options.background, options.format) == (
        "2000x2000",
        0.85,
        "#ffffff",
        "jpeg",
    )


def test_a_preset_hashes_like_its_options_spelled_out() -> None:
    spelled_out = _hash(
        crop="subject", canvas="2000x2000", fill=0.85, margin="2%", background="white", format="jpeg",
        quality=90,
    )  # fmt: skip
    assert _hash(**load_presets().expand("marketplace-main")) == spelled_out


def test_options_given_beside_a_preset_win() -> None:
    expanded = load_presets().expand("marketplace-main", {"fill": 0.9, "background": "#f0f0f0"})
    options = make_options(**expanded)
    assert (options.fill, options.background, options.canvas) == (0.9, "#f0f0f0", "2000x2000")


def test_an_unknown_preset_names_the_known_ones() -> None:
    with pytest.raises(UnknownPreset, match="marketplace-main") as error:
        load_presets().expand("amazon")
    assert error.value.code == "unknown_preset"


def test_an_operator_file_adds_presets_and_replaces_one_of_the_same_name(tmp_path: Path) -> None:
    extra = tmp_path / "presets.toml"
    extra.write_text(
        '[presets.catalog-webp]\ndescription = "ours"\ncanvas = "1000x1000"\nfill = 0.8\ncrop = "subject"\n'
        'format = "webp"\nquality = 80\nmask_blur = 2\n'
        '[presets.mask-only]\ndescription = "replaced"\noutput = "both"\n'
    )
    presets = load_presets(extra)
    assert presets.get("catalog-webp").options["mask_blur_px"] == 2
    assert presets.get("mask-only").options == {"output": "both"}
    assert "marketplace-main" in presets.by_name


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[presets.x]\ncanvass = "square"\n', "unknown option(s) canvass"),
        ('[presets.x]\nmodel = "u2netp"\n', "cannot set model"),
        ('[presets.x]\nformat = "jpeg"\n', "--format jpeg has no transparency"),
        ("[presets.x]\nfill = 2\n", "fill"),
        ("presets = 3\n", "expected only [presets.NAME] tables"),
        ("[presets\n", "not valid TOML"),
    ],
)
def test_a_bad_operator_preset_is_refused_at_load_naming_it(tmp_path: Path, text: str, problem: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(problem)):
        load_presets(bad)


# --- the task message ---------------------------------------------------------------------------------


def _message(**options: object) -> TaskMessage:
    return TaskMessage(
        job_id="j", source="s3://b/", out="s3://b/o", options=make_options(**options), keys=["k"]
    )


def test_a_plain_task_stays_version_1_so_older_workers_still_take_it() -> None:
    assert _message().v == 1 and "v" not in _message().payload()


@pytest.mark.parametrize(
    "options",
    [{"crop": "subject"}, {"output": "mask"}, {"format": "jpeg", "background": "white"}, {"shadow": "drop"}],
)
def test_a_task_with_catalog_options_says_version_2_so_a_v1_worker_hands_it_back(
    options: dict[str, object],
) -> None:
    message = _message(**options)
    assert message.v == 2 and message.payload()["v"] == 2
    assert needed_version(message.options) == 2
