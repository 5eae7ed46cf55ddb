"""Full-size work a strip of rows at a time: the same pixels as on whole arrays, and no copy of the cutout.

Every test here runs with strips of 64 pixels, so small images cross many strip boundaries.
"""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from PIL import Image

from cutout_fleet.worker.imaging import strips
from cutout_fleet.worker.imaging.composite import apply_background
from cutout_fleet.worker.imaging.encode import LOSSY_SMEAR_REACH_PX, encode_image, hidden_colour_beyond
from cutout_fleet.worker.imaging.encode import _decoded_hidden_colour_beyond as decoded_hidden_colour_beyond
from tests.support.images import blobs_mask, encode, gradient_rgb

SIZE_WH = (37, 29)


@pytest.fixture(autouse=True)
def small_strips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(strips, "STRIP_PX", 64)


def subject() -> tuple[Image.Image, np.ndarray]:
    width, height = SIZE_WH
    return gradient_rgb(SIZE_WH), blobs_mask((height, width), seed=4)


def test_strip_rows_cover_every_row_once_in_order() -> None:
    rows = list(strips.strip_rows(10, 33))

    assert rows[0][0] == 0 and rows[-1][1] == 33
    assert all(bottom == next_top for (_, bottom), (next_top, _) in itertools.pairwise(rows))
    assert all(0 < bottom - top <= 6 for top, bottom in rows)  # 64 // 10 rows per strip


def test_a_row_wider_than_a_strip_still_gets_a_strip_of_its_own() -> None:
    assert list(strips.strip_rows(1000, 3)) == [(0, 1), (1, 2), (2, 3)]


def test_transparent_background_equals_rgb_and_alpha_stacked_with_hidden_colour_dropped() -> None:
    rgb, alpha = subject()

    out = apply_background(rgb, alpha, None)

    expected = np.dstack([np.asarray(rgb), alpha])
    expected[alpha == 0, :3] = 0
    assert out.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(out), expected)


def test_hidden_colour_under_alpha_0_is_found_in_any_strip_and_dropped_by_the_encoder() -> None:
    # Given an RGBA image that is clean except for one coloured alpha-0 pixel in its last row
    rgb, alpha = subject()
    pixels = np.asarray(apply_background(rgb, alpha, None)).copy()
    hidden_yx = np.argwhere(alpha[-1] == 0)
    assert hidden_yx.size, "the fixture needs a transparent pixel in the last row"
    x = int(hidden_yx[0][0])
    pixels[-1, x] = (90, 80, 70, 0)

    # When it is encoded losslessly
    data = encode_image(Image.fromarray(pixels), "png")

    # Then that pixel decodes as (0, 0, 0, 0) and the caller's array is untouched
    decoded = np.asarray(Image.open(io.BytesIO(data)))
    assert tuple(decoded[-1, x]) == (0, 0, 0, 0)
    assert tuple(pixels[-1, x]) == (90, 80, 70, 0)


def test_the_lossy_webp_check_in_strips_counts_like_the_whole_array() -> None:
    # Given colour left under alpha 0 far from the subject, near strip boundaries and image edges
    width, height = 60, 50
    rgba = np.zeros((height, width, 4), dtype=np.uint8)
    rgba[20:30, 20:30] = (200, 100, 50, 255)
    # Beyond reach: the first four (by the edges) and (3, 25), 17 rows above the subject; within: the last 2.
    for y, x in [(0, 0), (5, 59), (49, 10), (48, 48), (3, 25), (4, 25), (22, 5)]:
        rgba[y, x, :3] = (255, 255, 255)
    data = encode(Image.fromarray(rgba), "WEBP", lossless=True, exact=True)  # keeps that colour
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))

    in_strips = decoded_hidden_colour_beyond(data, LOSSY_SMEAR_REACH_PX)

    assert in_strips == hidden_colour_beyond(decoded, LOSSY_SMEAR_REACH_PX) == 5


def test_png_encoding_writes_the_callers_pixels_without_changing_the_caller() -> None:
    rgb, alpha = subject()
    cutout = apply_background(rgb, alpha, None)
    cutout.info["icc_profile"] = b"not a profile"
    before = np.asarray(cutout).copy()

    data = encode_image(cutout, "png")

    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), before)
    np.testing.assert_array_equal(np.asarray(cutout), before)
    assert cutout.info["icc_profile"] == b"not a profile"
