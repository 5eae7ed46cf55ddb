"""Catalog framing: the product's box from its mask, margins, canvas, fill and alignment, then the pixels."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from PIL import Image

from cutout_fleet.worker.imaging.framing import (
    SQUARE,
    Canvas,
    Margin,
    apply_frame,
    crop_box_with_margin,
    frame_mask,
    parse_canvas,
    parse_margin,
    plan_frame,
    whole_image,
)
from cutout_fleet.worker.imaging.subject_box import is_no_subject, speck_area_px, subject_box

RED, GREEN, WHITE = (255, 0, 0), (0, 255, 0), (255, 255, 255)
CANVAS_1000 = Canvas((1000, 1000))


def mask_with(
    *rects: tuple[int, int, int, int], shape_hw: tuple[int, int] = (300, 400), alpha: int = 255
) -> np.ndarray:
    """A uint8 mask, 0 but for `rects` (x0, y0, x1, y1) at `alpha`."""
    mask = np.zeros(shape_hw, dtype=np.uint8)
    for x0, y0, x1, y1 in rects:
        mask[y0:y1, x0:x1] = alpha
    return mask


def brute_force_box(visible: np.ndarray, min_speck_px: int) -> tuple[int, int, int, int] | None:
    """The spec, slowly: flood fill each 8-connected component, keep those of `min_speck_px` or more."""
    height, width = visible.shape
    seen = np.zeros_like(visible, dtype=bool)
    kept: list[tuple[int, int]] = []
    for start in zip(*np.nonzero(visible), strict=True):
        if seen[start]:
            continue
        seen[start] = True
        component, queue = [], deque([start])
        while queue:
            y, x = queue.popleft()
            component.append((int(y), int(x)))
            for ny in range(max(y - 1, 0), min(y + 2, height)):
                for nx in range(max(x - 1, 0), min(x + 2, width)):
                    if visible[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
        if len(component) >= min_speck_px:
            kept.extend(component)
    if not kept:
        return None
    ys, xs = zip(*kept, strict=True)
    return min(xs), min(ys), max(xs) + 1, max(ys) + 1


def product_photo() -> tuple[Image.Image, np.ndarray]:
    """A 100x80 RGBA cutout: an opaque red product at (30, 20)-(70, 60), hidden green around it."""
    alpha = mask_with((30, 20, 70, 60), shape_hw=(80, 100))
    rgb = np.zeros((80, 100, 3), dtype=np.uint8)
    rgb[:] = GREEN
    rgb[alpha == 255] = RED
    return Image.fromarray(np.dstack([rgb, alpha])), alpha


# --- subject box ----------------------------------------------------------------------------------


def test_the_box_of_a_rectangle_is_tight_with_exclusive_ends() -> None:
    assert subject_box(mask_with((120, 50, 250, 210))) == (120, 50, 250, 210)


def test_faint_haze_around_the_product_is_not_product() -> None:
    mask = mask_with((20, 10, 380, 290), alpha=100)
    mask[50:200, 120:250] = 255

    assert subject_box(mask) == (120, 50, 250, 200)


def test_alpha_exactly_at_the_threshold_counts() -> None:
    assert subject_box(mask_with((5, 6, 7, 8), alpha=128), min_speck_px=0) == (5, 6, 7, 8)
    assert subject_box(mask_with((5, 6, 7, 8), alpha=127), min_speck_px=0) is None


def test_specks_below_the_minimum_area_are_ignored() -> None:
    mask = mask_with((120, 50, 250, 210), (0, 0, 3, 3), (390, 290, 400, 300))  # specks of 9 and 100 px

    assert subject_box(mask, min_speck_px=101) == (120, 50, 250, 210)


def test_a_component_of_exactly_the_minimum_area_counts() -> None:
    mask = mask_with((120, 50, 250, 210), (390, 290, 400, 300))

    assert subject_box(mask, min_speck_px=100) == (120, 50, 400, 300)


def test_a_big_second_object_is_part_of_the_product() -> None:
    mask = mask_with((20, 50, 150, 210), (260, 100, 380, 280))

    assert subject_box(mask, min_speck_px=60) == (20, 50, 380, 280)


def test_pixels_touching_diagonally_are_one_component() -> None:
    mask = mask_with((10, 10, 15, 15))  # 25 px
    mask[15, 15] = mask[16, 16] = 255  # a diagonal tail: 27 px together

    assert subject_box(mask, min_speck_px=27) == (10, 10, 17, 17)
    assert subject_box(mask, min_speck_px=28) is None


def test_the_default_speck_limit_is_005_percent_of_the_image() -> None:
    assert speck_area_px((4000, 3000)) == 6000
    mask = mask_with((120, 50, 250, 210), (0, 0, 7, 7))  # 49 px speck; 0.05% of 400x300 is 60 px

    assert subject_box(mask) == (120, 50, 250, 210)


@pytest.mark.parametrize("seed", range(40))
def test_the_box_matches_a_brute_force_flood_fill_on_random_masks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    height, width = rng.integers(1, 30, size=2)
    mask = (rng.random((height, width)) < rng.uniform(0.05, 0.6)).astype(np.uint8) * 255
    min_speck_px = int(rng.integers(0, 25))

    assert subject_box(mask, min_speck_px=min_speck_px) == brute_force_box(mask >= 128, min_speck_px)


def test_an_empty_mask_has_no_box_and_no_subject() -> None:
    box = subject_box(np.zeros((300, 400), dtype=np.uint8))

    assert box is None
    assert is_no_subject(box, (400, 300))


def test_only_specks_is_no_box() -> None:
    assert subject_box(mask_with((0, 0, 3, 3), (100, 100, 104, 104))) is None


def test_a_box_under_half_a_percent_of_the_image_is_no_subject() -> None:
    # 0.5% of 400x300 is 600 px
    assert is_no_subject((0, 0, 25, 23), (400, 300))  # 575 px
    assert not is_no_subject((0, 0, 30, 20), (400, 300))  # 600 px


# --- parsing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "margin"),
    [
        ("5%", Margin(5, "percent")),
        ("2.5 %", Margin(2.5, "percent")),
        ("40px", Margin(40, "px")),
        ("0", Margin(0, "px")),
    ],
)
def test_a_margin_is_a_percentage_or_pixels(text: str, margin: Margin) -> None:
    assert parse_margin(text) == margin


@pytest.mark.parametrize("text", ["5", "-5%", "40 pixels", "4.5px", "", "%"])
def test_a_margin_that_is_neither_says_what_is_expected(text: str) -> None:
    with pytest.raises(
        ValueError, match=r"expected a percentage such as '5%', pixels such as '40px', or '0'"
    ):
        parse_margin(text)


def test_a_margin_of_half_the_side_or_more_is_refused() -> None:
    with pytest.raises(ValueError, match="under 50%"):
        parse_margin("50%")


def test_a_canvas_is_a_size_or_square() -> None:
    assert parse_canvas("1200x1200") == Canvas((1200, 1200))
    assert parse_canvas(" 800X600 ") == Canvas((800, 600))
    assert parse_canvas("square") == SQUARE


@pytest.mark.parametrize("text", ["1200", "1200x", "axb", "12 by 12", "-5x5"])
def test_a_canvas_that_is_neither_says_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected WIDTHxHEIGHT such as '1200x1200', or 'square'"):
        parse_canvas(text)


@pytest.mark.parametrize("text", ["0x100", "20000x100"])
def test_a_canvas_side_out_of_range_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="each side must be 1 to 10000 pixels"):
        parse_canvas(text)


# --- margins ----------------------------------------------------------------------------------------


def test_the_margin_pads_every_side_without_clamping_to_the_image() -> None:
    assert crop_box_with_margin((0, 5, 100, 50), 10) == (-10, -5, 110, 60)


def test_without_a_canvas_a_percentage_is_of_the_box_longer_side() -> None:
    plan = plan_frame((10, 20, 110, 70), margin=parse_margin("10%"))  # 10% of 100 px

    assert plan.canvas_size == (120, 70)
    assert plan.crop_box == (0, 10, 120, 80)
    assert (plan.scale, plan.paste_offset, plan.product_box) == (1, (0, 0), (10, 10, 110, 60))


def test_without_a_canvas_pixels_are_pixels() -> None:
    plan = plan_frame((10, 20, 110, 70), margin=parse_margin("7px"))

    assert plan.canvas_size == (114, 64)
    assert plan.crop_box == (3, 13, 117, 77)


def test_with_a_canvas_a_percentage_is_of_the_canvas_shorter_side() -> None:
    plan = plan_frame((0, 0, 400, 100), margin=parse_margin("5%"), canvas=Canvas((1000, 800)))

    # 40 px margin: the 400 px box scales to 1000 - 2 * 40
    assert plan.scale == 2.3
    assert plan.product_box == pytest.approx((40, 285, 960, 515))


def test_with_a_canvas_pixels_are_output_pixels() -> None:
    plan = plan_frame((0, 0, 400, 100), margin=parse_margin("40px"), canvas=Canvas((1000, 1600)))

    assert plan.product_box == pytest.approx((40, 685, 960, 915))
    assert plan.crop_box == pytest.approx((-40 / 2.3, -40 / 2.3, 400 + 40 / 2.3, 100 + 40 / 2.3))


# --- canvas, fill and alignment ----------------------------------------------------------------------


def test_a_square_canvas_is_the_longer_side_of_box_and_margin() -> None:
    plan = plan_frame((50, 50, 350, 250), margin=parse_margin("10px"), canvas=SQUARE)

    assert plan.canvas_size == (320, 320)
    assert plan.scale == 1
    assert plan.product_box == (10, 60, 310, 260)


def test_a_square_canvas_is_capped_at_2000_px() -> None:
    plan = plan_frame((0, 0, 3000, 1000), margin=parse_margin("100px"), canvas=SQUARE)

    assert plan.canvas_size == (2000, 2000)
    assert plan.scale == 0.6  # the margin stays 100 output pixels
    assert plan.product_box == (100, 700, 1900, 1300)


def test_without_fill_the_box_and_margin_are_contained_in_the_canvas() -> None:
    plan = plan_frame((0, 0, 200, 100), margin=parse_margin("20px"), canvas=CANVAS_1000)

    assert plan.scale == 4  # 960 / 200 would be 4.8: the upscale cap holds
    assert plan.product_box == (100, 300, 900, 700)


def test_fill_085_makes_the_product_span_850_px_along_its_limiting_side_centred() -> None:
    plan = plan_frame((400, 300, 600, 400), canvas=CANVAS_1000, fill=0.85, max_upscale=5)

    assert plan.scale == 4.25
    # 425 px tall: the half pixel of centring goes to the top
    assert plan.product_box == (75, 288, 925, 713)
    assert (plan.fill_reached, plan.upscaled) == (0.85, True)


def test_with_fill_the_margin_only_guarantees_a_minimum_border() -> None:
    plan = plan_frame(
        (0, 0, 200, 100), canvas=CANVAS_1000, fill=1.0, margin=parse_margin("50px"), max_upscale=10
    )

    assert plan.product_box == (50, 275, 950, 725)
    assert plan.fill_reached == 0.9


def test_align_bottom_puts_the_product_bottom_at_the_canvas_height_minus_the_margin() -> None:
    plan = plan_frame(
        (400, 300, 600, 400),
        canvas=CANVAS_1000,
        fill=0.85,
        margin=parse_margin("5%"),
        align="bottom",
        max_upscale=5,
    )

    assert plan.product_box == (75, 525, 925, 950)


def test_the_upscale_cap_keeps_a_tiny_product_small_and_says_so() -> None:
    plan = plan_frame((0, 0, 20, 10), canvas=CANVAS_1000, fill=0.85)

    assert plan.scale == 4
    assert plan.product_box == (460, 480, 540, 520)
    assert plan.fill_reached == 0.08
    assert plan.upscaled


def test_a_large_product_is_scaled_down_and_not_upscaled() -> None:
    plan = plan_frame((0, 0, 4000, 2000), canvas=CANVAS_1000, fill=0.85)

    assert (plan.scale, plan.upscaled) == (0.2125, False)


def test_without_a_crop_the_whole_image_is_the_box() -> None:
    plan = plan_frame(whole_image((400, 300)), canvas=Canvas((800, 800)))

    assert plan.scale == 2
    assert plan.product_box == (0, 100, 800, 700)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fill": 0.85}, "fill needs a canvas"),
        ({"fill": 0.0, "canvas": CANVAS_1000}, "above 0 and at most 1"),
        ({"fill": 1.5, "canvas": CANVAS_1000}, "above 0 and at most 1"),
        ({"margin": Margin(500, "px"), "canvas": CANVAS_1000}, "leaves no room on a 1000x1000 canvas"),
        ({"align": "top"}, "expected one of center, bottom"),
        ({"max_upscale": 0.5}, "must be at least 1"),
    ],
)
def test_impossible_framing_says_why(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_frame((0, 0, 200, 100), **kwargs)  # type: ignore[arg-type]


def test_an_empty_box_cannot_be_framed() -> None:
    with pytest.raises(ValueError, match="empty, nothing to frame"):
        plan_frame((10, 10, 10, 50))


# --- pixels -------------------------------------------------------------------------------------------


def test_on_a_white_background_the_corners_are_white_and_the_product_is_where_planned() -> None:
    photo, _ = product_photo()
    plan = plan_frame((30, 20, 70, 60), canvas=Canvas((200, 200)), fill=0.5)  # product at (50, 50)-(150, 150)

    framed = np.asarray(apply_frame(photo, plan, WHITE))

    assert framed.shape == (200, 200, 3)
    for corner in [(0, 0), (0, 199), (199, 0), (199, 199)]:
        assert tuple(framed[corner]) == WHITE
    assert (framed[60:140, 60:140] == RED).all()  # Lanczos rings up to 3 source px (7.5 output px) in
    assert (framed[:45] == WHITE).all() and (framed[155:] == WHITE).all()


def test_on_a_transparent_canvas_the_corners_have_alpha_0() -> None:
    photo, _ = product_photo()
    plan = plan_frame((30, 20, 70, 60), canvas=Canvas((200, 100)), fill=0.5)

    framed = apply_frame(photo, plan, None)

    assert framed.mode == "RGBA"
    alpha = np.asarray(framed.getchannel("A"))
    assert alpha[0, 0] == alpha[0, -1] == alpha[-1, 0] == alpha[-1, -1] == 0
    assert alpha[50, 100] == 255


def test_an_rgb_photo_on_a_transparent_canvas_is_opaque_where_it_shows() -> None:
    photo = Image.new("RGB", (100, 80), RED)
    plan = plan_frame(whole_image((100, 80)), canvas=Canvas((200, 200)))  # 200x160 at (0, 20)

    alpha = np.asarray(apply_frame(photo, plan, None).getchannel("A"))

    assert (alpha[20:180] == 255).all()
    assert (alpha[:20] == 0).all() and (alpha[180:] == 0).all()


def test_an_unscaled_crop_copies_the_pixels_and_fills_outside_the_photo_with_the_background() -> None:
    photo = Image.fromarray(np.arange(60 * 80 * 3, dtype=np.uint32).reshape(60, 80, 3).astype(np.uint8))
    plan = plan_frame((0, 10, 30, 50), margin=parse_margin("5px"))

    framed = np.asarray(apply_frame(photo, plan, WHITE))

    assert framed.shape == (50, 40, 3)
    np.testing.assert_array_equal(framed[:, 5:], np.asarray(photo)[5:55, 0:35])
    assert (framed[:, :5] == WHITE).all()


def test_the_framed_mask_has_the_geometry_of_the_framed_image() -> None:
    photo, alpha = product_photo()
    plan = plan_frame((30, 20, 70, 60), canvas=Canvas((300, 200)), fill=0.8, margin=parse_margin("10px"))

    framed_mask = frame_mask(alpha, plan)

    assert framed_mask.dtype == np.uint8 and framed_mask.shape == (200, 300)
    np.testing.assert_array_equal(framed_mask, np.asarray(apply_frame(photo, plan, None).getchannel("A")))
    # the product: 160 px square at (70, 20); Lanczos rings up to 3 source px (12 output px) inside its edge
    assert (framed_mask[32:168, 82:218] == 255).all()
    assert subject_box(framed_mask, min_speck_px=0) == (70, 20, 230, 180)  # its edges where planned
    assert framed_mask[0, 0] == 0 and (framed_mask[:, :60] == 0).all()
