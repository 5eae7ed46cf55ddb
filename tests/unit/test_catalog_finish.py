"""The steps after the mask, composed (worker/imaging/finish.py): crop, canvas, fill, shadow, mask,
no_subject; and the JPEG and mask encoders.  Synthetic images, exact geometry."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cutout_fleet.errors import NoSubject
from cutout_fleet.layout import SQUARE, Canvas, Margin
from cutout_fleet.worker.imaging.encode import encode_image, encode_mask
from cutout_fleet.worker.imaging.finish import FinishSpec, finish
from cutout_fleet.worker.imaging.shadow import SHADOW_OPACITY, drop_shadow, place_with_shadow

WHITE = (255, 255, 255)
RED = (200, 30, 30)


def _photo(width: int = 400, height: int = 300, box: tuple[int, int, int, int] = (100, 50, 200, 250)):  # type: ignore[no-untyped-def]
    """A grey photo with a red product at `box`, and the mask a model would give for it."""
    rgb = np.full((height, width, 3), 120, dtype=np.uint8)
    alpha = np.zeros((height, width), dtype=np.uint8)
    x0, y0, x1, y1 = box
    rgb[y0:y1, x0:x1] = RED
    alpha[y0:y1, x0:x1] = 255
    return Image.fromarray(rgb), alpha


def _product_extent(image: Image.Image) -> tuple[int, int, int, int]:
    """The box of the red pixels in an output."""
    pixels = np.asarray(image.convert("RGB")).astype(int)
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 90)
    rows, cols = np.flatnonzero(red.any(axis=1)), np.flatnonzero(red.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def test_without_framing_the_output_is_the_plain_cutout() -> None:
    rgb, alpha = _photo()
    finished = finish(rgb, alpha, FinishSpec())
    assert finished.image is not None and finished.image.mode == "RGBA" and finished.image.size == (400, 300)
    assert finished.mask is None and finished.framing is None


def test_crop_to_the_subject_keeps_the_product_box_plus_its_margin() -> None:
    rgb, alpha = _photo()
    finished = finish(rgb, alpha, FinishSpec(crop_subject=True, margin=Margin(10, "px")))
    assert finished.image is not None and finished.image.size == (100 + 20, 200 + 20)
    assert _product_extent(finished.image) == (10, 10, 110, 210)
    assert finished.framing is not None and finished.framing.box == (100, 50, 200, 250)
    assert finished.framing.fill_reached is None  # no canvas, no fill


def test_a_white_square_at_85_percent_fill_has_white_corners_and_the_product_at_85_percent() -> None:
    rgb, alpha = _photo()
    spec = FinishSpec(background=WHITE, crop_subject=True, canvas=Canvas((600, 600)), fill=0.85)
    finished = finish(rgb, alpha, spec)
    image = finished.image
    assert image is not None and image.mode == "RGB" and image.size == (600, 600)
    for corner in [(0, 0), (599, 0), (0, 599), (599, 599)]:
        assert image.getpixel(corner) == WHITE
    x0, y0, x1, y1 = _product_extent(image)
    assert abs((y1 - y0) - 510) <= 2  # the product is taller than wide: its height is the limiting side
    assert abs((x0 + x1) / 2 - 300) <= 1 and abs((y0 + y1) / 2 - 300) <= 1  # centred
    assert finished.framing is not None and finished.framing.fill_reached == 0.85
    assert finished.framing.scale == pytest.approx(2.55) and finished.framing.upscaled


def test_the_upscale_cap_leaves_a_small_product_smaller_and_reports_the_fill_reached() -> None:
    rgb, alpha = _photo()
    spec = FinishSpec(
        background=WHITE, crop_subject=True, canvas=Canvas((1000, 1000)), fill=0.85, max_upscale=2
    )
    finished = finish(rgb, alpha, spec)
    assert finished.image is not None
    _, y0, _, y1 = _product_extent(finished.image)
    assert y1 - y0 == 400  # 200 px at the cap of 2x
    assert finished.framing is not None and finished.framing.fill_reached == 0.4


def test_bottom_alignment_stands_the_product_on_the_bottom_margin() -> None:
    rgb, alpha = _photo()
    spec = FinishSpec(
        background=WHITE,
        crop_subject=True,
        canvas=Canvas((600, 600)),
        fill=0.5,
        margin=Margin(20, "px"),
        align="bottom",
    )
    image = finish(rgb, alpha, spec).image
    assert image is not None
    _, _, _, y1 = _product_extent(image)
    assert y1 == 600 - 20


def test_a_transparent_square_keeps_alpha_and_no_colour_where_it_is_zero() -> None:
    rgb, alpha = _photo()
    image = finish(
        rgb, alpha, FinishSpec(crop_subject=True, canvas=SQUARE, margin=Margin(5, "percent"))
    ).image
    assert image is not None and image.mode == "RGBA"
    assert image.size == (220, 220)  # 200 px product + 2 x 5% of it
    pixels = np.asarray(image)
    assert not pixels[pixels[..., 3] == 0, :3].any()


def test_the_mask_has_the_outputs_geometry() -> None:
    rgb, alpha = _photo()
    spec = FinishSpec(background=WHITE, mask=True, crop_subject=True, canvas=Canvas((500, 500)), fill=0.8)
    finished = finish(rgb, alpha, spec)
    assert finished.image is not None and finished.mask is not None
    assert finished.mask.shape == (500, 500) and finished.mask.dtype == np.uint8
    rows = np.flatnonzero((finished.mask > 127).any(axis=1))
    assert (rows[0], rows[-1] + 1) == _product_extent(finished.image)[1::2]


def test_a_mask_only_output_has_no_image_and_the_same_mask() -> None:
    rgb, alpha = _photo()
    both = finish(rgb, alpha, FinishSpec(mask=True, crop_subject=True, canvas=Canvas((500, 500)), fill=0.8))
    alone = finish(
        rgb,
        alpha,
        FinishSpec(cutout=False, mask=True, crop_subject=True, canvas=Canvas((500, 500)), fill=0.8),
    )
    assert alone.image is None and alone.mask is not None and both.mask is not None
    assert np.abs(alone.mask.astype(int) - both.mask.astype(int)).max() <= 1


def test_an_empty_mask_fails_the_item_as_no_subject_naming_the_fix() -> None:
    rgb, _ = _photo()
    empty = np.zeros((300, 400), dtype=np.uint8)
    with pytest.raises(NoSubject, match="--on-no-subject keep") as error:
        finish(rgb, empty, FinishSpec(crop_subject=True, canvas=SQUARE), name="photos/a.jpg")
    assert error.value.code == "no_subject" and "photos/a.jpg" in str(error.value)


def test_a_product_under_the_minimum_share_is_no_subject_too() -> None:
    rgb, alpha = _photo(box=(10, 10, 20, 20))  # 100 px of 120,000: 0.08%
    with pytest.raises(NoSubject):
        finish(rgb, alpha, FinishSpec(crop_subject=True))


def test_keep_writes_the_whole_photo_uncropped_and_says_so() -> None:
    rgb, _ = _photo()
    empty = np.zeros((300, 400), dtype=np.uint8)
    finished = finish(rgb, empty, FinishSpec(background=WHITE, crop_subject=True, keep_no_subject=True))
    assert finished.image is not None and finished.image.size == (400, 300)
    assert finished.framing is not None and finished.framing.no_subject


def test_specks_do_not_inflate_the_box() -> None:
    rgb, alpha = _photo()
    alpha[290, 390] = 255  # one stray pixel far from the product
    finished = finish(rgb, alpha, FinishSpec(crop_subject=True))
    assert finished.framing is not None and finished.framing.box == (100, 50, 200, 250)


def test_faint_haze_below_the_visible_threshold_does_not_inflate_the_box() -> None:
    rgb, alpha = _photo()
    alpha[:, :] = np.maximum(alpha, 60)  # haze everywhere
    finished = finish(rgb, alpha, FinishSpec(crop_subject=True, visible_threshold=128))
    assert finished.framing is not None and finished.framing.box == (100, 50, 200, 250)


# --- shadow -------------------------------------------------------------------------------------------


def test_a_drop_shadow_falls_below_and_right_of_the_product_and_is_faint() -> None:
    _, alpha = _photo()
    shadow = drop_shadow(alpha)
    assert shadow.shape == alpha.shape and shadow.max() <= round(255 * SHADOW_OPACITY) + 1
    below = shadow[252:262, 120:180]  # just under the product's bottom edge
    above = shadow[38:48, 120:180]  # just over its top edge
    assert below.mean() > above.mean() > -1 and below.mean() > 10


def test_an_empty_mask_casts_no_shadow() -> None:
    assert not drop_shadow(np.zeros((20, 30), dtype=np.uint8)).any()


def test_on_a_colour_the_shadow_darkens_the_background_under_the_product_only() -> None:
    rgb, alpha = _photo()
    image = place_with_shadow(rgb, alpha, drop_shadow(alpha), WHITE)
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == WHITE
    assert max(image.getpixel((150, 256))) < 250  # under the bottom edge: shaded
    assert image.getpixel((150, 150)) == RED  # the product itself is untouched


def test_on_transparency_the_shadow_is_semi_transparent_dark_alpha() -> None:
    rgb, alpha = _photo()
    image = place_with_shadow(rgb, alpha, drop_shadow(alpha), None)
    pixels = np.asarray(image)
    assert image.mode == "RGBA"
    assert pixels[150, 150, 3] == 255 and tuple(pixels[150, 150, :3]) == RED
    assert 0 < pixels[256, 150, 3] < 128 and tuple(pixels[256, 150, :3]) == (0, 0, 0)
    assert not pixels[pixels[..., 3] == 0, :3].any()


def test_finish_with_a_shadow_on_a_canvas() -> None:
    rgb, alpha = _photo()
    spec = FinishSpec(background=WHITE, crop_subject=True, canvas=Canvas((400, 400)), fill=0.7, shadow=True)
    image = finish(rgb, alpha, spec).image
    assert image is not None and image.getpixel((0, 0)) == WHITE
    _, _, _, y1 = _product_extent(image)
    assert max(image.getpixel((200, y1 + 3))) < 250


# --- encoders -----------------------------------------------------------------------------------------


def test_jpeg_output_is_rgb_at_the_quality_asked_for_with_no_metadata() -> None:
    image = Image.new("RGB", (64, 48), RED)
    image.info["exif"] = b"Exif\x00\x00secret"
    small, large = encode_image(image, "jpeg", jpeg_quality=30), encode_image(image, "jpeg", jpeg_quality=95)
    decoded = Image.open(io.BytesIO(small))
    assert decoded.format == "JPEG" and decoded.mode == "RGB" and "exif" not in decoded.info
    assert len(small) <= len(large)


def test_jpeg_refuses_an_image_with_alpha() -> None:
    with pytest.raises(ValueError, match="flattened"):
        encode_image(Image.new("RGBA", (8, 8)), "jpeg")


def test_a_mask_is_an_8_bit_grayscale_png() -> None:
    mask = np.zeros((30, 40), dtype=np.uint8)
    mask[10:20, 10:30] = 255
    decoded = Image.open(io.BytesIO(encode_mask(mask)))
    assert decoded.format == "PNG" and decoded.mode == "L"
    assert np.array_equal(np.asarray(decoded), mask)
