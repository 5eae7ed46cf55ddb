"""Mask refinement: sensitivity, blur, grow/shrink (the ComfyUI node semantics), then the source alpha."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFilter

from cutout_fleet.worker.imaging import strips
from cutout_fleet.worker.imaging.mask import (
    alpha_at_size,
    apply_sensitivity,
    blur_mask,
    offset_mask,
    refine_alpha,
    refine_mask,
    to_uint8,
)
from cutout_fleet.worker.imaging.prep import mask_to_size
from tests.support.images import blobs_mask, random_mask

SHAPES_HW = [(1, 1), (1, 9), (9, 1), (1, 10), (10, 1), (7, 9), (8, 6), (6, 8), (13, 13), (3, 4)]
OFFSETS_PX = [1, 2, 3, 5, 8]


def pillow_rank_filter_n_times(
    mask_u8: np.ndarray, rank_filter: Callable[[int], ImageFilter.Filter], n: int
) -> np.ndarray:
    """What the ComfyUI nodes do: a 3x3 Max/MinFilter applied n times."""
    image = Image.fromarray(mask_u8, mode="L")
    for _ in range(n):
        image = image.filter(rank_filter(3))
    return np.asarray(image)


def _float_mask() -> np.ndarray:
    return np.array([[0.0, 0.2, 0.4], [0.5, 0.7, 1.0]], dtype=np.float32)


# --- apply_sensitivity ------------------------------------------------------------------------------


def test_sensitivity_1_leaves_the_mask_unchanged() -> None:
    mask = _float_mask()

    np.testing.assert_array_equal(apply_sensitivity(mask, 1.0), mask)


def test_sensitivity_0_doubles_the_mask_and_clips_at_1() -> None:
    result = apply_sensitivity(_float_mask(), 0.0)

    np.testing.assert_allclose(result, [[0.0, 0.4, 0.8], [1.0, 1.0, 1.0]], atol=1e-6)


def test_sensitivity_half_scales_the_mask_by_1_5() -> None:
    result = apply_sensitivity(_float_mask(), 0.5)

    np.testing.assert_allclose(result, [[0.0, 0.3, 0.6], [0.75, 1.0, 1.0]], atol=1e-6)


def test_sensitivity_below_1_gives_a_float32_mask_within_0_and_1() -> None:
    result = apply_sensitivity(np.linspace(0, 1, 11, dtype=np.float64).reshape(1, 11), 0.2)

    assert result.dtype == np.float32
    assert result.min() >= 0.0
    assert result.max() == 1.0


# --- to_uint8 -----------------------------------------------------------------------------------------


def test_to_uint8_maps_0_to_0_1_to_255_and_rounds_in_between() -> None:
    result = to_uint8(np.array([[0.0, 0.5, 1.0, 0.1]], dtype=np.float32))

    assert result.dtype == np.uint8
    assert result.tolist() == [[0, 128, 255, 26]]


def test_to_uint8_clips_values_outside_0_and_1() -> None:
    assert to_uint8(np.array([[-0.5, 1.5]], dtype=np.float32)).tolist() == [[0, 255]]


# --- blur_mask --------------------------------------------------------------------------------------


def _edge_mask() -> np.ndarray:
    mask = np.zeros((20, 20), dtype=np.uint8)
    mask[:, 10:] = 255
    return mask


def test_blur_radius_0_leaves_the_mask_unchanged() -> None:
    mask = random_mask((9, 7), seed=1)

    np.testing.assert_array_equal(blur_mask(mask, 0), mask)


def test_blur_spreads_a_hard_edge_to_both_sides() -> None:
    blurred = blur_mask(_edge_mask(), 2)

    assert blurred[10, 9] > 0  # the transparent side picks up some opacity
    assert blurred[10, 10] < 255  # the opaque side loses some
    assert blurred[10, 0] == 0  # far from the edge nothing changes
    assert blurred[10, 19] == 255


def test_a_wider_blur_spreads_the_edge_further() -> None:
    narrow, wide = blur_mask(_edge_mask(), 1), blur_mask(_edge_mask(), 4)

    assert wide[10, 6] > narrow[10, 6]


def test_blur_returns_a_uint8_mask_of_the_same_shape() -> None:
    blurred = blur_mask(_edge_mask()[:, :15], 3)

    assert blurred.dtype == np.uint8
    assert blurred.shape == (20, 15)


# --- offset_mask ------------------------------------------------------------------------------------


def test_offset_0_leaves_the_mask_unchanged() -> None:
    mask = random_mask((5, 6), seed=2)

    np.testing.assert_array_equal(offset_mask(mask, 0), mask)


@pytest.mark.parametrize("n", OFFSETS_PX)
@pytest.mark.parametrize("shape_hw", SHAPES_HW, ids=lambda s: f"{s[0]}x{s[1]}")
def test_growing_by_n_equals_pillow_max_filter_3_applied_n_times(shape_hw: tuple[int, int], n: int) -> None:
    mask = blobs_mask(shape_hw, seed=n * 100 + shape_hw[0] * 10 + shape_hw[1])

    np.testing.assert_array_equal(
        offset_mask(mask, n), pillow_rank_filter_n_times(mask, ImageFilter.MaxFilter, n)
    )


@pytest.mark.parametrize("n", OFFSETS_PX)
@pytest.mark.parametrize("shape_hw", SHAPES_HW, ids=lambda s: f"{s[0]}x{s[1]}")
def test_shrinking_by_n_equals_pillow_min_filter_3_applied_n_times(shape_hw: tuple[int, int], n: int) -> None:
    mask = 255 - blobs_mask(shape_hw, seed=n * 100 + shape_hw[0] * 10 + shape_hw[1])

    np.testing.assert_array_equal(
        offset_mask(mask, -n), pillow_rank_filter_n_times(mask, ImageFilter.MinFilter, n)
    )


@pytest.mark.parametrize("offset_px", [3, -3])
def test_offset_matches_pillow_on_masks_with_every_grey_level(offset_px: int) -> None:
    mask = random_mask((17, 12), seed=5)
    rank_filter = ImageFilter.MaxFilter if offset_px > 0 else ImageFilter.MinFilter

    np.testing.assert_array_equal(
        offset_mask(mask, offset_px), pillow_rank_filter_n_times(mask, rank_filter, abs(offset_px))
    )


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    offset_px=st.integers(-10, 10).filter(bool),
    seed=st.integers(0, 2**16),
)
def test_any_offset_on_any_small_mask_matches_pillow(
    height: int, width: int, offset_px: int, seed: int
) -> None:
    mask = random_mask((height, width), seed=seed)
    rank_filter = ImageFilter.MaxFilter if offset_px > 0 else ImageFilter.MinFilter

    np.testing.assert_array_equal(
        offset_mask(mask, offset_px), pillow_rank_filter_n_times(mask, rank_filter, abs(offset_px))
    )


def test_growing_a_single_pixel_gives_a_square_of_side_2n_plus_1() -> None:
    mask = np.zeros((11, 11), dtype=np.uint8)
    mask[5, 5] = 255

    grown = offset_mask(mask, 2)

    assert (grown[3:8, 3:8] == 255).all()
    assert int(grown.sum()) == 25 * 255


def test_offset_returns_a_uint8_mask_of_the_same_shape() -> None:
    result = offset_mask(random_mask((4, 9), seed=3), -2)

    assert result.shape == (4, 9)
    assert result.dtype == np.uint8


# --- refine_mask ------------------------------------------------------------------------------------


def test_refine_with_defaults_is_the_mask_in_uint8() -> None:
    mask = _float_mask()

    np.testing.assert_array_equal(refine_mask(mask), to_uint8(mask))


def test_refine_applies_sensitivity_then_blur_then_offset() -> None:
    # Given a soft blob whose result depends on the order of the three steps
    mask = np.zeros((24, 24), dtype=np.float32)
    mask[8:16, 8:16] = 0.45
    mask[11:13, 11:13] = 0.9

    refined = refine_mask(mask, sensitivity=0.3, mask_blur_px=2, mask_offset_px=-2)

    in_order = offset_mask(blur_mask(to_uint8(apply_sensitivity(mask, 0.3)), 2), -2)
    offset_before_blur = blur_mask(offset_mask(to_uint8(apply_sensitivity(mask, 0.3)), -2), 2)
    np.testing.assert_array_equal(refined, in_order)
    assert not np.array_equal(refined, offset_before_blur)  # the order is observable on this mask


def test_refine_never_makes_opaque_what_the_source_had_transparent() -> None:
    mask = np.ones((2, 3), dtype=np.float32)
    source_alpha = np.array([[0, 128, 255], [255, 40, 0]], dtype=np.uint8)

    refined = refine_mask(mask, source_alpha=source_alpha)

    np.testing.assert_array_equal(refined, source_alpha)


def test_refine_keeps_the_model_mask_where_the_source_is_opaque() -> None:
    mask = _float_mask()

    refined = refine_mask(mask, source_alpha=np.full((2, 3), 255, dtype=np.uint8))

    np.testing.assert_array_equal(refined, to_uint8(mask))


def test_refine_takes_the_source_alpha_after_growing() -> None:
    # Growing cannot spread opacity into pixels that the source marks transparent.
    mask = np.zeros((1, 5), dtype=np.float32)
    mask[0, 2] = 1.0
    source_alpha = np.array([[255, 0, 255, 255, 255]], dtype=np.uint8)

    refined = refine_mask(mask, mask_offset_px=1, source_alpha=source_alpha)

    assert refined.tolist() == [[0, 0, 255, 255, 0]]


def test_refine_returns_a_uint8_alpha_of_the_mask_shape() -> None:
    refined = refine_mask(
        np.zeros((7, 5), dtype=np.float32), sensitivity=0.5, mask_blur_px=1, mask_offset_px=1
    )

    assert refined.shape == (7, 5)
    assert refined.dtype == np.uint8


# --- Full size: strips give the whole-array result, and the caller's arrays stay as they were -------


@pytest.fixture
def small_strips(monkeypatch: pytest.MonkeyPatch) -> None:
    """Strips of 64 pixels, so a small mask crosses many strip boundaries."""
    monkeypatch.setattr(strips, "STRIP_PX", 64)


def whole_array_refine(
    mask: np.ndarray, sensitivity: float, blur_px: int, offset_px: int, source_alpha: np.ndarray | None
) -> np.ndarray:
    """refine_mask's definition on whole arrays, as it was written before it worked in strips."""
    alpha = offset_mask(blur_mask(to_uint8(apply_sensitivity(mask, sensitivity)), blur_px), offset_px)
    return alpha if source_alpha is None else np.minimum(alpha, source_alpha)


@pytest.mark.usefixtures("small_strips")
@pytest.mark.parametrize(("sensitivity", "blur_px", "offset_px"), [(1.0, 0, 0), (0.4, 2, -3), (0.8, 0, 4)])
@pytest.mark.parametrize("with_source_alpha", [False, True], ids=["opaque", "source-alpha"])
def test_refine_mask_in_strips_equals_the_whole_array_definition(
    sensitivity: float, blur_px: int, offset_px: int, with_source_alpha: bool
) -> None:
    mask = np.random.default_rng(8).random((41, 27), dtype=np.float32)
    source_alpha = random_mask((41, 27), seed=2) if with_source_alpha else None

    refined = refine_mask(
        mask,
        sensitivity=sensitivity,
        mask_blur_px=blur_px,
        mask_offset_px=offset_px,
        source_alpha=source_alpha,
    )

    expected = whole_array_refine(mask, sensitivity, blur_px, offset_px, source_alpha)
    np.testing.assert_array_equal(refined, expected)


@pytest.mark.usefixtures("small_strips")
@pytest.mark.parametrize("sensitivity", [1.0, 0.5, 0.0])
@pytest.mark.parametrize("size_wh", [(40, 30), (7, 50), (8, 8)], ids=str)
def test_alpha_at_size_equals_sensitivity_and_uint8_of_the_resized_mask(
    sensitivity: float, size_wh: tuple[int, int]
) -> None:
    small = np.random.default_rng(5).random((8, 8), dtype=np.float32)

    alpha = alpha_at_size(small, size_wh, sensitivity=sensitivity)

    expected = to_uint8(apply_sensitivity(mask_to_size(small, size_wh), sensitivity))
    assert alpha.dtype == np.uint8
    np.testing.assert_array_equal(alpha, expected)


def test_refine_alpha_takes_the_source_alpha_without_changing_either_input() -> None:
    alpha = np.full((2, 3), 200, dtype=np.uint8)
    source_alpha = np.array([[0, 128, 255], [255, 40, 0]], dtype=np.uint8)

    refined = refine_alpha(alpha, mask_offset_px=1, source_alpha=source_alpha)

    assert refined.tolist() == [[0, 128, 200], [200, 40, 0]]
    assert (alpha == 200).all()
    assert source_alpha.tolist() == [[0, 128, 255], [255, 40, 0]]
