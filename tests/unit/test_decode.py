"""decode_image: bytes -> upright 8-bit sRGB plus the source's alpha, or a PermanentError naming the file."""

from __future__ import annotations

import io
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile

from cutout_fleet.errors import ImageTooLarge, PermanentError, UndecodableImage
from cutout_fleet.worker.imaging import strips
from cutout_fleet.worker.imaging.budget import MIB, PIPELINE_BYTES_PER_PIXEL, MemoryBudget
from cutout_fleet.worker.imaging.decode import decode_image
from tests.support.images import (
    animated_gif,
    encode,
    gradient_rgb,
    jpeg_with_orientation,
    linear_srgb_icc_profile,
    png_chunk,
    png_claiming_size,
)

NAME = "catalog/shoes/a.jpg"
ROOMY_MAX_PIXELS = 1_000_000
ADOBE_RGB_ICC = Path("/usr/share/color/icc/compatibleWithAdobeRGB1998.icc")
SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def decode(  # type: ignore[no-untyped-def]
    data: bytes, *, max_pixels: int = ROOMY_MAX_PIXELS, budget: MemoryBudget | None = None, name: str = NAME
):
    return decode_image(data, max_pixels=max_pixels, budget=budget, name=name)


def pixel(image: Image.Image, xy: tuple[int, int] = (0, 0)) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(image)[xy[1], xy[0]])


def noisy_rgb(size_wh: tuple[int, int]) -> Image.Image:
    """Incompressible pixels, so cutting the file in half really cuts into the pixel data."""
    width, height = size_wh
    values = np.random.default_rng(7).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(values, mode="RGB")


@pytest.fixture
def pixels_must_not_be_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to decode pixel data fails the test: size checks must come first."""

    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixel data was decoded before the size was checked")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


# --- Every supported format decodes to RGB ------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF"])
def test_an_rgb_file_of_each_supported_format_decodes_to_rgb_of_the_same_size(fmt: str) -> None:
    decoded = decode(encode(Image.new("RGB", (7, 5), (200, 30, 40)), fmt))

    assert decoded.rgb.mode == "RGB"
    assert decoded.rgb.size == (7, 5)
    assert decoded.source_format == fmt
    assert decoded.alpha is None
    assert pixel(decoded.rgb) == pytest.approx((200, 30, 40), abs=4)


@pytest.mark.parametrize(
    ("fmt", "params"),
    [("PNG", {}), ("TIFF", {}), ("BMP", {}), ("WEBP", {"lossless": True})],
)
def test_a_lossless_file_decodes_to_exactly_its_pixels(fmt: str, params: dict[str, object]) -> None:
    original = gradient_rgb((9, 6))

    decoded = decode(encode(original, fmt, **params))

    np.testing.assert_array_equal(np.asarray(decoded.rgb), np.asarray(original))


# --- Orientation ----------------------------------------------------------------------------------


def test_exif_orientation_6_is_applied_so_the_decoded_size_is_transposed() -> None:
    decoded = decode(jpeg_with_orientation((40, 20), orientation=6))

    assert decoded.rgb.size == (20, 40)


def test_exif_orientation_6_rotates_the_pixels_90_degrees_clockwise() -> None:
    stored = gradient_rgb((40, 20))

    decoded = decode(jpeg_with_orientation((40, 20), orientation=6))

    expected = np.asarray(stored.transpose(Image.Transpose.ROTATE_270), dtype=np.int16)
    assert np.abs(np.asarray(decoded.rgb, dtype=np.int16) - expected).max() <= 12


def test_exif_orientation_1_leaves_the_image_as_stored() -> None:
    decoded = decode(jpeg_with_orientation((40, 20), orientation=1))

    assert decoded.rgb.size == (40, 20)


@pytest.mark.parametrize(
    "exif_block",
    [
        pytest.param(b"Exif\x00\x00" + b"\xff" * 40, id="garbage-after-the-exif-header"),
        pytest.param(b"Exif\x00\x00MM\x00\x2a\x7f\xff\xff\xff", id="ifd-offset-past-the-end"),
        pytest.param(
            b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x01"
            + struct.pack(">HHI", 0x0112, 3, 1_000_000)
            + b"\x00\x06\x00\x00\x00\x00\x00\x00",
            id="orientation-with-an-absurd-count",
        ),
        pytest.param(
            b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x01"
            + struct.pack(">HHI", 0x0112, 2, 4)
            + b"abc\x00\x00\x00\x00\x00",
            id="orientation-as-text",
        ),
        pytest.param(b"Exif\x00\x00II", id="cut-short"),
    ],
)
@pytest.mark.filterwarnings("ignore:.*(EXIF|Tag data).*:UserWarning")  # Pillow's own notes on the damage
def test_a_broken_exif_block_does_not_fail_the_image(exif_block: bytes) -> None:
    data = encode(gradient_rgb((12, 8)), "JPEG", exif=exif_block)

    decoded = decode(data)

    assert decoded.rgb.size == (12, 8)


# --- Transparency -------------------------------------------------------------------------------


def test_a_palette_image_with_a_transparent_index_gives_alpha_and_white_behind_it() -> None:
    palette_image = Image.new("P", (4, 2), 0)
    palette_image.putpalette([200, 10, 10, 0, 0, 255] + [0] * 762)
    palette_image.putpixel((0, 0), 1)

    decoded = decode(encode(palette_image, "PNG", transparency=1))

    assert decoded.alpha is not None
    assert decoded.alpha[0, 0] == 0
    assert decoded.alpha[0, 1] == 255
    assert pixel(decoded.rgb, (0, 0)) == (255, 255, 255)
    assert pixel(decoded.rgb, (1, 0)) == (200, 10, 10)


def test_a_grey_image_with_alpha_gives_alpha_and_grey_flattened_on_white() -> None:
    decoded = decode(encode(Image.new("LA", (3, 2), (100, 128)), "PNG"))

    assert decoded.alpha is not None
    assert (decoded.alpha == 128).all()
    # 100 at 128/255 over white: 100 * 0.502 + 255 * 0.498 = 177.
    assert pixel(decoded.rgb) == pytest.approx((177, 177, 177), abs=1)


def test_an_rgba_image_gives_its_alpha_and_rgb_flattened_on_white() -> None:
    rgba = Image.new("RGBA", (3, 2), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (255, 0, 0, 0))
    rgba.putpixel((2, 0), (0, 0, 0, 128))

    decoded = decode(encode(rgba, "PNG"))

    assert decoded.alpha is not None
    assert decoded.alpha[0].tolist() == [255, 0, 128]
    assert pixel(decoded.rgb, (0, 0)) == (255, 0, 0)
    assert pixel(decoded.rgb, (1, 0)) == (255, 255, 255)
    assert pixel(decoded.rgb, (2, 0)) == pytest.approx((127, 127, 127), abs=1)


def test_an_rgb_png_with_a_transparent_colour_key_gives_alpha() -> None:
    rgb = Image.new("RGB", (2, 1), (10, 20, 30))
    rgb.putpixel((1, 0), (1, 2, 3))

    decoded = decode(encode(rgb, "PNG", transparency=(1, 2, 3)))

    assert decoded.alpha is not None
    assert decoded.alpha.tolist() == [[255, 0]]


def test_the_alpha_has_the_image_shape_and_uint8_dtype() -> None:
    decoded = decode(encode(Image.new("RGBA", (5, 3), (1, 2, 3, 4)), "PNG"))

    assert decoded.alpha is not None
    assert decoded.alpha.shape == (3, 5)
    assert decoded.alpha.dtype == np.uint8


# --- Other modes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_a_cmyk_image_is_converted_to_rgb(fmt: str) -> None:
    decoded = decode(encode(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), fmt))

    assert decoded.rgb.mode == "RGB"
    assert pixel(decoded.rgb) == pytest.approx((255, 0, 0), abs=4)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_a_16_bit_grey_image_is_scaled_to_8_bits_not_clipped(fmt: str) -> None:
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)

    decoded = decode(encode(Image.fromarray(values), fmt))

    assert np.asarray(decoded.rgb)[0, :, 0].tolist() == [0, 128, 255]


def test_a_dark_16_bit_grey_image_stays_dark() -> None:
    # 255 out of 65535 is near black, whatever the brightest pixel of this photo happens to be.
    values = np.full((2, 2), 255, dtype=np.uint16)

    decoded = decode(encode(Image.fromarray(values), "PNG"))

    assert pixel(decoded.rgb) == (1, 1, 1)


def test_a_1_bit_image_decodes_to_black_and_white_rgb() -> None:
    bilevel = Image.new("1", (2, 1), 0)
    bilevel.putpixel((1, 0), 1)

    decoded = decode(encode(bilevel, "PNG"))

    assert decoded.rgb.mode == "RGB"
    assert pixel(decoded.rgb, (0, 0)) == (0, 0, 0)
    assert pixel(decoded.rgb, (1, 0)) == (255, 255, 255)


def test_an_animated_gif_decodes_to_its_first_frame() -> None:
    decoded = decode(animated_gif((5, 3), [(255, 0, 0), (0, 0, 255), (0, 255, 0)]))

    assert decoded.source_format == "GIF"
    assert pixel(decoded.rgb) == (255, 0, 0)


# --- Colour management ------------------------------------------------------------------------------


def test_pixels_tagged_with_a_non_srgb_profile_are_converted_to_srgb() -> None:
    # Given mid-grey stored as linear light (a hand-built profile; no system file needed)
    data = encode(Image.new("RGB", (4, 4), (128, 128, 128)), "PNG", icc_profile=linear_srgb_icc_profile())

    decoded = decode(data)

    # Then it is re-encoded with the sRGB curve: linear 0.502 is sRGB 0.735, i.e. 188
    assert pixel(decoded.rgb) == pytest.approx((188, 188, 188), abs=1)


def test_pixels_tagged_with_srgb_are_unchanged() -> None:
    original = gradient_rgb((8, 8))

    decoded = decode(encode(original, "PNG", icc_profile=SRGB_ICC))

    difference = np.abs(np.asarray(decoded.rgb, np.int16) - np.asarray(original, np.int16))
    assert difference.max() <= 1


@pytest.mark.skipif(
    not ADOBE_RGB_ICC.is_file(), reason=f"{ADOBE_RGB_ICC} is absent (Debian package icc-profiles-free)"
)
def test_pixels_tagged_with_adobe_rgb_are_converted_to_srgb() -> None:
    adobe = ADOBE_RGB_ICC.read_bytes()
    original = Image.new("RGB", (4, 4), (10, 200, 30))
    expected = ImageCms.profileToProfile(
        original,
        ImageCms.ImageCmsProfile(io.BytesIO(adobe)),
        ImageCms.createProfile("sRGB"),
        renderingIntent=ImageCms.Intent.PERCEPTUAL,
    )
    assert expected is not None

    decoded = decode(encode(original, "PNG", icc_profile=adobe))

    assert pixel(decoded.rgb) != (10, 200, 30)
    assert pixel(decoded.rgb) == pixel(expected)


def test_a_palette_image_with_a_profile_is_converted_like_an_rgb_one() -> None:
    profile = linear_srgb_icc_profile()
    palette_image = Image.new("P", (4, 4), 0)
    palette_image.putpalette([128, 128, 128] + [0] * 765)

    decoded = decode(encode(palette_image, "PNG", icc_profile=profile))

    assert pixel(decoded.rgb) == pytest.approx((188, 188, 188), abs=1)


def test_an_rgba_image_with_a_profile_keeps_its_alpha_while_its_colours_are_converted() -> None:
    rgba = Image.new("RGBA", (2, 1), (128, 128, 128, 255))
    rgba.putpixel((1, 0), (128, 128, 128, 0))

    decoded = decode(encode(rgba, "PNG", icc_profile=linear_srgb_icc_profile()))

    assert decoded.alpha is not None
    assert decoded.alpha.tolist() == [[255, 0]]
    assert pixel(decoded.rgb, (0, 0)) == pytest.approx((188, 188, 188), abs=1)


def test_an_rgb_png_with_a_colour_key_and_a_profile_keeps_its_transparency() -> None:
    rgb = Image.new("RGB", (2, 1), (10, 20, 30))
    rgb.putpixel((1, 0), (1, 2, 3))

    decoded = decode(encode(rgb, "PNG", transparency=(1, 2, 3), icc_profile=SRGB_ICC))

    assert decoded.alpha is not None
    assert decoded.alpha.tolist() == [[255, 0]]


def test_an_unreadable_profile_leaves_the_pixels_as_stored() -> None:
    data = encode(Image.new("RGB", (4, 4), (128, 64, 32)), "PNG", icc_profile=b"not an icc profile" * 10)

    decoded = decode(data)

    assert pixel(decoded.rgb) == (128, 64, 32)


# --- Undecodable input ----------------------------------------------------------------------------


def _truncated(fmt: str) -> bytes:
    data = encode(noisy_rgb((64, 64)), fmt)
    return data[: len(data) * 6 // 10]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(np.random.default_rng(3).bytes(2048), id="random-bytes"),
        pytest.param(_truncated("JPEG"), id="truncated-jpeg"),
        pytest.param(_truncated("PNG"), id="truncated-png"),
        pytest.param(b"<!DOCTYPE html><html><body>Not found</body></html>", id="html-page"),
        pytest.param(
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
            b'<rect width="10" height="10" fill="red"/></svg>',
            id="svg",
        ),
        pytest.param(encode(Image.new("RGB", (4, 4)), "PPM"), id="a-format-outside-the-allowed-list"),
        pytest.param(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", b"\x00" * 5), id="png-with-a-short-header"),
    ],
)
def test_input_that_is_not_a_decodable_image_raises_undecodable_image_naming_the_file(data: bytes) -> None:
    with pytest.raises(UndecodableImage, match=re.escape(NAME)) as caught:
        decode(data)

    assert caught.value.code == "undecodable"
    assert isinstance(caught.value, PermanentError)


def test_empty_input_says_the_file_is_empty() -> None:
    with pytest.raises(UndecodableImage, match="empty"):
        decode(b"")


def test_an_unrecognised_file_lists_the_formats_that_are_supported() -> None:
    with pytest.raises(UndecodableImage, match="JPEG, PNG, WEBP, TIFF, BMP, GIF"):
        decode(b"<!DOCTYPE html><html></html>")


# --- Size limit -------------------------------------------------------------------------------------


@pytest.mark.usefixtures("pixels_must_not_be_decoded")
def test_a_header_claiming_65000x65000_raises_image_too_large_before_decoding() -> None:
    with pytest.raises(ImageTooLarge, match="CUTOUT_LIMITS__MAX_PIXELS") as caught:
        decode(png_claiming_size(65_000, 65_000), max_pixels=64_000_000)

    assert NAME in str(caught.value)
    assert caught.value.code == "image_too_large"


@pytest.mark.usefixtures("pixels_must_not_be_decoded")
def test_a_header_over_max_pixels_raises_image_too_large_before_decoding() -> None:
    with pytest.raises(ImageTooLarge, match=r"10000x10000 is 100,000,000 pixels.*64,000,000"):
        decode(png_claiming_size(10_000, 10_000), max_pixels=64_000_000)


def test_a_real_image_one_row_over_max_pixels_raises_image_too_large_naming_the_setting() -> None:
    data = encode(Image.new("RGB", (100, 101)), "PNG")

    with pytest.raises(ImageTooLarge, match="CUTOUT_LIMITS__MAX_PIXELS") as caught:
        decode(data, max_pixels=10_000)

    assert NAME in str(caught.value)


def test_a_real_image_of_exactly_max_pixels_decodes() -> None:
    decoded = decode(encode(Image.new("RGB", (100, 100)), "PNG"), max_pixels=10_000)

    assert decoded.rgb.size == (100, 100)


# --- Memory budget (CUTOUT_LIMITS__MAX_IMAGE_MEMORY_MIB) ------------------------------------------


@pytest.mark.usefixtures("pixels_must_not_be_decoded")
def test_an_image_over_the_memory_budget_raises_image_too_large_before_decoding() -> None:
    budget = MemoryBudget(max_bytes=100 * MIB)

    with pytest.raises(ImageTooLarge, match="CUTOUT_LIMITS__MAX_IMAGE_MEMORY_MIB") as caught:
        decode(png_claiming_size(4000, 4000), max_pixels=64_000_000, budget=budget)

    message = str(caught.value)
    assert NAME in message
    assert "4000x4000" in message
    assert f"{4000 * 4000 * PIPELINE_BYTES_PER_PIXEL / MIB:,.0f} MiB" in message  # the estimate
    assert "100 MiB" in message  # the budget it is over
    assert caught.value.code == "image_too_large"


def test_an_image_within_the_memory_budget_decodes() -> None:
    budget = MemoryBudget(max_bytes=100 * PIPELINE_BYTES_PER_PIXEL)

    decoded = decode(encode(Image.new("RGB", (10, 10)), "PNG"), budget=budget)

    assert decoded.rgb.size == (10, 10)


def test_a_source_with_alpha_is_budgeted_for_its_alpha_too() -> None:
    # Given a budget that fits 10x10 opaque pixels exactly
    budget = MemoryBudget(max_bytes=100 * PIPELINE_BYTES_PER_PIXEL)
    opaque = encode(Image.new("RGB", (10, 10)), "PNG")
    transparent = encode(Image.new("RGBA", (10, 10)), "PNG")

    # Then the opaque image decodes and the one with an alpha channel is refused
    assert decode(opaque, budget=budget).alpha is None
    with pytest.raises(ImageTooLarge, match="CUTOUT_LIMITS__MAX_IMAGE_MEMORY_MIB"):
        decode(transparent, budget=budget)


def test_the_pixel_limit_is_checked_before_the_memory_budget() -> None:
    with pytest.raises(ImageTooLarge, match="CUTOUT_LIMITS__MAX_PIXELS"):
        decode(png_claiming_size(200, 200), max_pixels=100, budget=MemoryBudget(max_bytes=1))


# --- 16-bit and float pixels are scaled a strip of rows at a time ---------------------------------------


@pytest.fixture
def small_strips(monkeypatch: pytest.MonkeyPatch) -> None:
    """Strips of 64 pixels, so a small image crosses many strip boundaries."""
    monkeypatch.setattr(strips, "STRIP_PX", 64)


@pytest.mark.usefixtures("small_strips")
def test_a_16_bit_image_of_many_strips_scales_every_pixel_like_one_whole_array() -> None:
    values = np.random.default_rng(3).integers(0, 65536, size=(37, 23), dtype=np.uint16)

    decoded = decode(encode(Image.fromarray(values), "PNG"))

    expected = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(decoded.rgb)[..., 0], expected)


@pytest.mark.usefixtures("small_strips")
def test_a_float_image_of_many_strips_scales_every_pixel_like_one_whole_array() -> None:
    values = np.random.default_rng(4).random((29, 31), dtype=np.float32)

    decoded = decode(encode(Image.fromarray(values), "TIFF"))

    expected = np.clip(values.astype(np.float64) * 255.0, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(decoded.rgb)[..., 0], expected)
