"""Model input and output: smart_resize, to_model_input, output_to_mask, mask_to_size."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from cutout_fleet.worker.imaging import strips
from cutout_fleet.worker.imaging.prep import mask_to_size, output_to_mask, smart_resize, to_model_input
from tests.support.images import gradient_rgb

# --- smart_resize -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source_wh", "target_wh"),
    [((640, 480), (320, 320)), ((50, 30), (320, 320)), ((1, 1), (7, 3)), ((3000, 10), (17, 23))],
)
def test_smart_resize_returns_exactly_the_requested_size(
    source_wh: tuple[int, int], target_wh: tuple[int, int]
) -> None:
    assert smart_resize(gradient_rgb(source_wh), target_wh).size == target_wh


def test_smart_resize_to_the_same_size_returns_the_image_itself() -> None:
    image = gradient_rgb((32, 16))

    assert smart_resize(image, (32, 16)) is image


def test_smart_resize_of_a_big_photo_matches_a_plain_lanczos_resize_within_one_level() -> None:
    photo = gradient_rgb((3000, 2000))

    fast = np.asarray(smart_resize(photo, (320, 320)), dtype=np.int16)
    plain = np.asarray(photo.resize((320, 320), Image.Resampling.LANCZOS), dtype=np.int16)

    assert np.abs(fast - plain).max() <= 1


# --- to_model_input ---------------------------------------------------------------------------------


def test_to_model_input_is_a_1x3xHxW_float32_tensor_at_the_model_size() -> None:
    tensor = to_model_input(gradient_rgb((50, 40)), (32, 16), scale="255", mean=None, std=None)

    assert tensor.shape == (1, 3, 16, 32)
    assert tensor.dtype == np.float32
    assert tensor.flags["C_CONTIGUOUS"]


def test_to_model_input_uses_the_dtype_the_model_asks_for() -> None:
    tensor = to_model_input(
        gradient_rgb((8, 8)), (8, 8), scale="255", mean=None, std=None, dtype=np.dtype(np.float16)
    )

    assert tensor.dtype == np.float16


def test_to_model_input_puts_red_green_blue_in_channels_0_1_2() -> None:
    tensor = to_model_input(Image.new("RGB", (4, 4), (255, 0, 51)), (4, 4), scale="255", mean=None, std=None)

    assert tensor[0, :, 0, 0].tolist() == pytest.approx([1.0, 0.0, 0.2])


def test_to_model_input_converts_non_rgb_images_to_rgb_first() -> None:
    tensor = to_model_input(Image.new("L", (4, 4), 51), (4, 4), scale="255", mean=None, std=None)

    assert tensor.shape == (1, 3, 4, 4)
    assert tensor[0, :, 0, 0].tolist() == pytest.approx([0.2, 0.2, 0.2])


def test_scale_255_divides_by_255() -> None:
    tensor = to_model_input(Image.new("RGB", (4, 4), (200, 100, 0)), (4, 4), scale="255", mean=None, std=None)

    assert tensor[0, :, 0, 0].tolist() == pytest.approx([200 / 255, 100 / 255, 0.0])


def test_scale_max_divides_by_the_images_own_maximum() -> None:
    tensor = to_model_input(Image.new("RGB", (4, 4), (200, 100, 0)), (4, 4), scale="max", mean=None, std=None)

    assert tensor[0, :, 0, 0].tolist() == pytest.approx([1.0, 0.5, 0.0])


def test_scale_max_of_an_all_black_image_gives_zeros_not_nan() -> None:
    tensor = to_model_input(Image.new("RGB", (4, 4), (0, 0, 0)), (4, 4), scale="max", mean=None, std=None)

    assert np.isfinite(tensor).all()
    assert (tensor == 0).all()


def test_mean_and_std_are_applied_per_channel_after_scaling() -> None:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    tensor = to_model_input(Image.new("RGB", (4, 4), (255, 0, 51)), (4, 4), scale="255", mean=mean, std=std)

    expected = [(1.0 - 0.485) / 0.229, (0.0 - 0.456) / 0.224, (0.2 - 0.406) / 0.225]
    assert tensor[0, :, 0, 0].tolist() == pytest.approx(expected, rel=1e-5)


# --- output_to_mask ---------------------------------------------------------------------------------


def test_output_to_mask_stretches_the_output_to_exactly_0_and_1() -> None:
    raw = np.array([[[[0.2, 0.4], [0.6, 0.3]]]], dtype=np.float32)

    mask = output_to_mask(raw, "none")

    assert mask.min() == 0.0
    assert mask.max() == 1.0
    assert mask[0, 1] == pytest.approx(0.5)


def test_output_to_mask_drops_the_batch_and_channel_axes() -> None:
    mask = output_to_mask(np.zeros((1, 1, 5, 7), dtype=np.float32), "none")

    assert mask.shape == (5, 7)
    assert mask.dtype == np.float32


def test_output_to_mask_accepts_a_plain_hxw_array() -> None:
    assert output_to_mask(np.arange(12, dtype=np.float64).reshape(3, 4), "none").shape == (3, 4)


def test_sigmoid_activation_applies_the_logistic_function_before_stretching() -> None:
    logits = np.array([[-2.0, 0.0, 2.0]], dtype=np.float32)

    mask = output_to_mask(logits, "sigmoid")

    # sigmoid: 0.1192, 0.5, 0.8808; stretched, the middle stays in the middle.
    assert mask[0].tolist() == pytest.approx([0.0, 0.5, 1.0], abs=1e-6)


def test_sigmoid_activation_differs_from_none_on_uneven_logits() -> None:
    logits = np.array([[0.0, 1.0, 4.0]], dtype=np.float32)

    with_sigmoid = output_to_mask(logits, "sigmoid")
    without = output_to_mask(logits, "none")

    # Linear: 1 is a quarter of the way; through sigmoid it is (0.731-0.5)/(0.982-0.5) = 0.48.
    assert without[0, 1] == pytest.approx(0.25)
    assert with_sigmoid[0, 1] == pytest.approx(0.479, abs=1e-3)


def test_sigmoid_of_huge_logits_does_not_overflow() -> None:
    logits = np.array([[-1e6, 0.0, 1e6]], dtype=np.float32)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mask = output_to_mask(logits, "sigmoid")

    assert mask[0].tolist() == pytest.approx([0.0, 0.5, 1.0], abs=1e-6)


@pytest.mark.parametrize(("value", "expected"), [(0.0, 0.0), (0.3, 0.3), (7.0, 1.0), (-2.0, 0.0)])
def test_a_flat_output_is_not_stretched_and_gives_no_nan(value: float, expected: float) -> None:
    mask = output_to_mask(np.full((1, 1, 4, 4), value, dtype=np.float32), "none")

    assert not np.isnan(mask).any()
    assert mask == pytest.approx(np.full((4, 4), expected))


# --- mask_to_size -----------------------------------------------------------------------------------


def _step_mask() -> np.ndarray:
    mask = np.zeros((8, 8), dtype=np.float32)
    mask[:, :4] = 1.0
    return mask


def test_mask_to_size_returns_the_original_image_size_as_height_by_width() -> None:
    resized = mask_to_size(_step_mask(), (40, 30))

    assert resized.shape == (30, 40)
    assert resized.dtype == np.float32


def test_mask_to_size_clips_lanczos_ringing_to_0_and_1() -> None:
    # Upscaling a hard step with LANCZOS rings about 12 % past both ends before clipping.
    resized = mask_to_size(_step_mask(), (40, 40))

    assert resized.min() == 0.0
    assert resized.max() == 1.0


def test_mask_to_size_keeps_the_shape_of_the_mask() -> None:
    resized = mask_to_size(_step_mask(), (40, 40))

    assert (resized[:, :15] > 0.9).all()
    assert (resized[:, 25:] < 0.1).all()


def test_mask_to_size_at_the_same_size_returns_the_same_values() -> None:
    mask = np.random.default_rng(1).random((6, 9), dtype=np.float32)

    np.testing.assert_array_equal(mask_to_size(mask, (9, 6)), mask)


def test_mask_to_size_at_the_same_size_still_clips_to_0_and_1() -> None:
    mask = np.array([[-0.5, 0.5, 1.5]], dtype=np.float32)

    assert mask_to_size(mask, (3, 1)).tolist() == [[0.0, 0.5, 1.0]]


@pytest.mark.parametrize("size_wh", [(40, 30), (5, 90), (9, 6)], ids=str)
def test_mask_to_size_in_strips_equals_one_whole_resize(
    monkeypatch: pytest.MonkeyPatch, size_wh: tuple[int, int]
) -> None:
    # Given strips of 64 pixels, so the resized mask is read back across many strip boundaries
    monkeypatch.setattr(strips, "STRIP_PX", 64)
    mask = np.random.default_rng(6).random((6, 9), dtype=np.float32) * 1.4 - 0.2

    resized = mask_to_size(mask, size_wh)

    whole = np.asarray(Image.fromarray(mask).resize(size_wh, Image.Resampling.LANCZOS), dtype=np.float32)
    np.testing.assert_array_equal(resized, np.clip(whole, 0.0, 1.0))


def test_an_rgb_image_and_its_rgba_twin_give_the_same_model_input() -> None:
    rgb = gradient_rgb((64, 48))

    as_rgb = to_model_input(rgb, (16, 16), scale="255", mean=None, std=None)
    as_rgba = to_model_input(rgb.convert("RGBA"), (16, 16), scale="255", mean=None, std=None)

    np.testing.assert_array_equal(as_rgb, as_rgba)
