"""apply_background and encode_image: transparency or a solid colour, PNG/WebP with no metadata at all."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms, PngImagePlugin

from cutout_fleet.worker.imaging.composite import apply_background
from cutout_fleet.worker.imaging.encode import CONTENT_TYPES, encode_image
from tests.support.images import encode, gradient_rgb, png_chunk_types, riff_chunk_types

SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
PNG_METADATA_CHUNKS = [b"iCCP", b"eXIf", b"tEXt", b"iTXt", b"zTXt", b"pHYs", b"sRGB", b"gAMA", b"tIME"]
WEBP_METADATA_CHUNKS = [b"EXIF", b"ICCP", b"XMP "]
VP8X_ICC_FLAG, VP8X_EXIF_FLAG, VP8X_XMP_FLAG = 0x20, 0x08, 0x04


def subject_and_alpha() -> tuple[Image.Image, np.ndarray]:
    """A 4x1 gradient subject with alpha 0, 255, 128, 255."""
    rgb = gradient_rgb((4, 1))
    return rgb, np.array([[0, 255, 128, 255]], dtype=np.uint8)


def image_with_every_kind_of_metadata(mode: str) -> Image.Image:
    image = gradient_rgb((16, 8)).convert(mode)
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"
    exif[0x0112] = 6
    image.info.update(
        {
            "exif": exif.tobytes(),
            "icc_profile": SRGB_ICC,
            "dpi": (300, 300),
            "xmp": b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>",
            "Comment": "shot in the studio",
            "Description": "a long text " * 20,
        }
    )
    return image


def opened_photo_with_metadata() -> Image.Image:
    """A file as the decoder would meet it: EXIF, ICC, text and dpi all read back into .info."""
    text = PngImagePlugin.PngInfo()
    text.add_text("Author", "someone")
    text.add_itxt("Title", "ünïcode", zip=True)
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"
    data = encode(
        gradient_rgb((16, 8)).convert("RGBA"),
        "PNG",
        pnginfo=text,
        exif=exif,
        icc_profile=SRGB_ICC,
        dpi=(72, 72),
    )
    opened = Image.open(io.BytesIO(data))
    opened.load()
    assert {"exif", "icc_profile", "Author", "dpi"} <= set(opened.info), "the fixture must carry metadata"
    return opened


def vp8x_flags(data: bytes) -> int:
    position = data.find(b"VP8X")
    return data[position + 8] if position >= 0 else 0


# --- apply_background -------------------------------------------------------------------------------


def test_no_background_gives_rgba_whose_alpha_is_the_mask() -> None:
    rgb, alpha = subject_and_alpha()

    out = apply_background(rgb, alpha, None)

    assert out.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(out.getchannel("A")), alpha)


def test_no_background_leaves_no_colour_where_the_mask_is_0() -> None:
    # Given a subject whose first pixel is fully transparent
    rgb, alpha = subject_and_alpha()
    assert rgb.getpixel((0, 0)) != (0, 0, 0), "the fixture must have colour to drop"

    # When it is cut out onto transparency
    out = apply_background(rgb, alpha, None)

    # Then that pixel is transparent black: dropping the alpha channel cannot bring the background back
    assert out.getpixel((0, 0)) == (0, 0, 0, 0)


def test_no_background_keeps_the_original_colours_wherever_the_mask_is_above_0() -> None:
    # Given a subject with opaque (255) and partly transparent (128) pixels: edges need their colour
    rgb, alpha = subject_and_alpha()

    # When it is cut out onto transparency
    out = apply_background(rgb, alpha, None)

    # Then every pixel with alpha above 0 has the source's colour
    np.testing.assert_array_equal(np.asarray(out.convert("RGB"))[:, 1:], np.asarray(rgb)[:, 1:])


@pytest.mark.parametrize("background", [(255, 255, 255), (0, 0, 0), (0x12, 0xAB, 0xEF)])
def test_a_background_colour_gives_rgb_with_that_colour_where_the_mask_is_0(
    background: tuple[int, int, int],
) -> None:
    rgb, alpha = subject_and_alpha()

    out = apply_background(rgb, alpha, background)

    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == background


@pytest.mark.parametrize("background", [(255, 255, 255), (0, 0, 0), (0x12, 0xAB, 0xEF)])
def test_a_background_colour_keeps_the_original_where_the_mask_is_255(
    background: tuple[int, int, int],
) -> None:
    rgb, alpha = subject_and_alpha()

    out = apply_background(rgb, alpha, background)

    assert out.getpixel((1, 0)) == rgb.getpixel((1, 0))
    assert out.getpixel((3, 0)) == rgb.getpixel((3, 0))


def test_a_background_colour_is_blended_in_proportion_where_the_mask_is_partial() -> None:
    rgb = Image.new("RGB", (1, 1), (200, 0, 100))

    out = apply_background(rgb, np.array([[128]], dtype=np.uint8), (0, 0, 0))

    assert out.getpixel((0, 0)) == pytest.approx((100, 0, 50), abs=1)


def test_apply_background_keeps_the_size() -> None:
    rgb = gradient_rgb((13, 7))

    out = apply_background(rgb, np.zeros((7, 13), dtype=np.uint8), (255, 255, 255))

    assert out.size == (13, 7)


def test_apply_background_does_not_change_the_input_image() -> None:
    rgb, alpha = subject_and_alpha()
    before = np.asarray(rgb).copy()

    apply_background(rgb, alpha, None)

    assert rgb.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(rgb), before)


# --- encode_image: round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_png_round_trips_to_the_same_size_mode_and_pixels(mode: str) -> None:
    image = gradient_rgb((16, 8)).convert(mode)

    decoded = Image.open(io.BytesIO(encode_image(image, "png")))

    assert decoded.format == "PNG"
    assert (decoded.size, decoded.mode) == ((16, 8), mode)
    np.testing.assert_array_equal(np.asarray(decoded), np.asarray(image))


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_webp_round_trips_to_the_same_size_and_mode(mode: str) -> None:
    image = gradient_rgb((16, 8)).convert(mode)
    if mode == "RGBA":
        image.putpixel((0, 0), (0, 0, 0, 0))  # libwebp drops an alpha channel that is opaque everywhere

    decoded = Image.open(io.BytesIO(encode_image(image, "webp")))

    assert decoded.format == "WEBP"
    assert (decoded.size, decoded.mode) == ((16, 8), mode)


def test_webp_keeps_the_alpha_of_an_rgba_image() -> None:
    image = Image.new("RGBA", (16, 16), (10, 200, 30, 255))
    image.paste((0, 0, 0, 0), (0, 0, 8, 16))

    decoded = Image.open(io.BytesIO(encode_image(image, "webp")))

    alpha = np.asarray(decoded.getchannel("A"))
    assert (alpha[:, :8] == 0).all()
    assert (alpha[:, 8:] == 255).all()


@pytest.mark.parametrize(("fmt", "lossless"), [("png", False), ("webp", True)], ids=["png", "webp-lossless"])
def test_lossless_output_of_any_rgba_image_is_black_where_alpha_is_0(fmt: str, lossless: bool) -> None:
    # Given an RGBA image that still holds colour under alpha 0 (not made by apply_background)
    pixels = np.asarray(gradient_rgb((16, 8)).convert("RGBA")).copy()
    pixels[:, :8, 3] = 0
    pixels[:, 8:12, 3] = 1

    # When it is encoded losslessly
    data = encode_image(Image.fromarray(pixels), fmt, webp_lossless=lossless)  # type: ignore[arg-type]

    # Then alpha-0 pixels decode to (0, 0, 0, 0) and every other pixel is unchanged
    expected = pixels.copy()
    expected[:, :8] = 0
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGBA")), expected)


def test_webp_is_lossy_unless_lossless_is_asked_for() -> None:
    image = gradient_rgb((16, 8)).convert("RGBA")
    image.putpixel((0, 0), (0, 0, 0, 0))

    lossy, lossless = encode_image(image, "webp"), encode_image(image, "webp", webp_lossless=True)

    assert b"VP8 " in riff_chunk_types(lossy)
    assert b"VP8L" in riff_chunk_types(lossless)


def test_encoding_leaves_the_colour_of_the_callers_image_alone() -> None:
    image = Image.new("RGBA", (4, 4), (200, 100, 50, 0))

    encode_image(image, "png")

    assert image.getpixel((0, 0)) == (200, 100, 50, 0)


def test_webp_quality_trades_size_for_fidelity() -> None:
    noisy = Image.fromarray(np.random.default_rng(4).integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB")

    assert len(encode_image(noisy, "webp", webp_quality=20)) < len(
        encode_image(noisy, "webp", webp_quality=95)
    )


def test_png_compress_level_changes_the_size_but_not_the_pixels() -> None:
    image = gradient_rgb((64, 64))

    stored, squeezed = (
        encode_image(image, "png", png_compress_level=0),
        encode_image(image, "png", png_compress_level=9),
    )

    assert len(squeezed) < len(stored)
    np.testing.assert_array_equal(
        np.asarray(Image.open(io.BytesIO(stored))), np.asarray(Image.open(io.BytesIO(squeezed)))
    )


def test_an_unsupported_output_format_is_refused() -> None:
    with pytest.raises(ValueError, match="gif"):
        encode_image(gradient_rgb((4, 4)), "gif")  # type: ignore[arg-type]


def test_content_types_are_known_for_every_output_format() -> None:
    assert CONTENT_TYPES == {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}


# --- encode_image: no metadata ----------------------------------------------------------------------


@pytest.mark.parametrize("chunk", PNG_METADATA_CHUNKS, ids=lambda c: c.decode())
@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_png_output_has_no_metadata_chunk_even_when_the_image_info_carries_it(
    mode: str, chunk: bytes
) -> None:
    data = encode_image(image_with_every_kind_of_metadata(mode), "png")

    assert chunk not in png_chunk_types(data)


@pytest.mark.parametrize("chunk", PNG_METADATA_CHUNKS, ids=lambda c: c.decode())
def test_png_output_of_an_opened_file_has_no_metadata_chunk(chunk: bytes) -> None:
    data = encode_image(opened_photo_with_metadata(), "png")

    assert chunk not in png_chunk_types(data)


def test_png_output_holds_only_header_pixel_data_and_end() -> None:
    data = encode_image(image_with_every_kind_of_metadata("RGBA"), "png")

    assert set(png_chunk_types(data)) == {b"IHDR", b"IDAT", b"IEND"}


@pytest.mark.parametrize("chunk", WEBP_METADATA_CHUNKS, ids=lambda c: c.decode().strip())
@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_webp_output_has_no_metadata_chunk_even_when_the_image_info_carries_it(
    mode: str, chunk: bytes
) -> None:
    data = encode_image(image_with_every_kind_of_metadata(mode), "webp")

    assert chunk not in riff_chunk_types(data)


@pytest.mark.parametrize("chunk", WEBP_METADATA_CHUNKS, ids=lambda c: c.decode().strip())
def test_webp_output_of_an_opened_file_has_no_metadata_chunk(chunk: bytes) -> None:
    data = encode_image(opened_photo_with_metadata(), "webp")

    assert chunk not in riff_chunk_types(data)


def test_webp_output_announces_no_icc_exif_or_xmp() -> None:
    data = encode_image(image_with_every_kind_of_metadata("RGBA"), "webp")

    assert vp8x_flags(data) & (VP8X_ICC_FLAG | VP8X_EXIF_FLAG | VP8X_XMP_FLAG) == 0


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_decoding_the_output_finds_no_exif_icc_or_text(fmt: str) -> None:
    decoded = Image.open(io.BytesIO(encode_image(image_with_every_kind_of_metadata("RGBA"), fmt)))
    decoded.load()

    assert not {"exif", "icc_profile", "xmp", "dpi", "Comment", "Description"} & set(decoded.info)
    assert len(decoded.getexif()) == 0


def test_encoding_leaves_the_callers_image_info_alone() -> None:
    image = image_with_every_kind_of_metadata("RGB")

    encode_image(image, "png")

    assert image.info["icc_profile"] == SRGB_ICC
