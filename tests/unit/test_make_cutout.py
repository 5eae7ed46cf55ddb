"""make_cutout (bytes -> cutout bytes, no storage) and Timings, with a fixed fake mask in place of a model."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from cutout_fleet.config.settings import ImageLimits
from cutout_fleet.errors import ImageTooLarge, UndecodableImage
from cutout_fleet.options import make_options
from cutout_fleet.worker.pipeline import Cutout, Timings, make_cutout
from tests.support.images import encode, gradient_rgb, jpeg_with_orientation

PHOTO_WH = (40, 30)
LIMITS = ImageLimits(max_pixels=1_000_000)


class LeftHalfPredictor:
    """Stands in for a model: always says the subject is the left half, at an 8x8 model size."""

    def __init__(self) -> None:
        self.seen: list[Image.Image] = []

    def predict(self, image: Image.Image) -> np.ndarray:
        self.seen.append(image)
        mask = np.zeros((8, 8), dtype=np.float32)
        mask[:, :4] = 1.0
        return mask


def cut(data: bytes, predictor: LeftHalfPredictor | None = None, **options: object) -> tuple[Cutout, Timings]:
    timings = Timings()
    cutout = make_cutout(
        data, predictor or LeftHalfPredictor(), make_options(**options), LIMITS, timings, name="catalog/a.jpg"
    )
    return cutout, timings


def opened(cutout: Cutout) -> Image.Image:
    image = Image.open(io.BytesIO(cutout.data))
    image.load()
    return image


def photo_png() -> bytes:
    return encode(gradient_rgb(PHOTO_WH), "PNG")


# --- Output -------------------------------------------------------------------------------------------


def test_no_background_gives_a_png_of_the_original_size_with_alpha() -> None:
    cutout, _ = cut(photo_png())

    image = opened(cutout)
    assert cutout.content_type == "image/png"
    assert image.format == "PNG"
    assert image.mode == "RGBA"
    assert image.size == PHOTO_WH
    assert (cutout.width, cutout.height) == PHOTO_WH


def test_the_alpha_follows_the_predicted_mask_scaled_to_the_original_size() -> None:
    cutout, _ = cut(photo_png())

    alpha = np.asarray(opened(cutout).getchannel("A"))
    # LANCZOS upscaling of the 8x8 step rings a little on either side of the edge.
    assert (alpha[:, :15] >= 240).all()  # the left half
    assert (alpha[:, 25:] <= 15).all()  # the right half
    assert (alpha[:, :3] == 255).all()
    assert (alpha[:, -3:] == 0).all()


def test_the_subjects_pixels_are_the_original_pixels() -> None:
    cutout, _ = cut(photo_png())

    rgba = np.asarray(opened(cutout))
    visible = rgba[..., 3] > 0
    assert visible.any()
    np.testing.assert_array_equal(rgba[..., :3][visible], np.asarray(gradient_rgb(PHOTO_WH))[visible])


def test_a_background_colour_gives_an_rgb_png_with_that_colour_behind_the_subject() -> None:
    cutout, _ = cut(photo_png(), background="#00ff00")

    image = opened(cutout)
    assert image.mode == "RGB"
    assert image.size == PHOTO_WH
    assert image.getpixel((35, 15)) == (0, 255, 0)


def test_webp_format_gives_webp_bytes_and_content_type() -> None:
    cutout, _ = cut(photo_png(), format="webp")

    assert cutout.content_type == "image/webp"
    assert opened(cutout).format == "WEBP"
    assert opened(cutout).size == PHOTO_WH


def test_mask_options_are_applied_to_the_alpha() -> None:
    plain, _ = cut(photo_png())
    grown, _ = cut(photo_png(), mask_offset_px=3)

    def first_transparent_column(cutout: Cutout) -> int:
        return int(np.argmax(np.asarray(opened(cutout).getchannel("A"))[15] < 128))

    assert first_transparent_column(grown) == first_transparent_column(plain) + 3


def test_what_was_transparent_in_the_source_stays_transparent() -> None:
    source = gradient_rgb(PHOTO_WH).convert("RGBA")
    source.paste((0, 0, 0, 0), (0, 0, 5, 30))  # the left edge, where the mask says "subject"

    cutout, _ = cut(encode(source, "PNG"))

    alpha = np.asarray(opened(cutout).getchannel("A"))
    assert (alpha[:, :5] == 0).all()
    assert (alpha[:, 5:15] >= 240).all()


def test_the_model_sees_the_upright_rgb_photo_at_its_original_size() -> None:
    predictor = LeftHalfPredictor()

    cutout, _ = cut(jpeg_with_orientation((40, 20), orientation=6), predictor)

    assert [(image.mode, image.size) for image in predictor.seen] == [("RGB", (20, 40))]
    assert opened(cutout).size == (20, 40)


def test_the_output_carries_no_metadata_from_the_source() -> None:
    cutout, _ = cut(jpeg_with_orientation((40, 20), orientation=6))

    image = opened(cutout)
    assert not {"exif", "icc_profile", "dpi"} & set(image.info)


# --- Timings ------------------------------------------------------------------------------------------


def test_timings_record_the_decode_model_mask_and_encode_stages() -> None:
    _, timings = cut(photo_png())

    assert set(timings.ms) == {"decode", "model", "mask", "encode"}
    assert all(isinstance(ms, float) and ms >= 0.0 for ms in timings.ms.values())


def test_a_timing_stage_records_milliseconds() -> None:
    timings = Timings()

    with timings.stage("sleep"):
        time.sleep(0.02)

    assert 15.0 <= timings.ms["sleep"] < 1000.0


def test_a_timing_stage_is_recorded_even_when_it_fails() -> None:
    timings = Timings()

    with pytest.raises(RuntimeError), timings.stage("broken"):
        raise RuntimeError("boom")

    assert "broken" in timings.ms


# --- Failures -----------------------------------------------------------------------------------------


def test_undecodable_input_raises_undecodable_image_without_running_the_model() -> None:
    predictor = LeftHalfPredictor()

    with pytest.raises(UndecodableImage, match=r"catalog/a\.jpg"):
        cut(b"<html>not an image</html>", predictor)

    assert predictor.seen == []


def test_a_failed_decode_still_records_its_timing() -> None:
    timings = Timings()

    with pytest.raises(UndecodableImage):
        make_cutout(b"", LeftHalfPredictor(), make_options(), LIMITS, timings)

    assert set(timings.ms) == {"decode"}


def test_an_image_over_the_pixel_limit_raises_image_too_large() -> None:
    with pytest.raises(ImageTooLarge, match="CUTOUT_LIMITS__MAX_PIXELS"):
        make_cutout(photo_png(), LeftHalfPredictor(), make_options(), ImageLimits(max_pixels=100), Timings())
