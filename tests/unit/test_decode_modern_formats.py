"""decode_image on HEIC/HEIF and AVIF: the same upright 8-bit sRGB, limits and errors as every other format.

The files in tests/data/formats/ are the project's own (tests/support/make_modern_formats.py): a 64x48
pattern of four coloured quadrants, coded lossily, so colours are compared within a codec's tolerance.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from PIL import AvifImagePlugin, Image, ImageFile

from cutout_fleet.errors import ImageTooLarge, UndecodableImage
from cutout_fleet.worker.imaging import iso_formats
from cutout_fleet.worker.imaging.budget import PIPELINE_BYTES_PER_PIXEL, MemoryBudget
from cutout_fleet.worker.imaging.decode import DecodedImage, decode_image
from cutout_fleet.worker.imaging.iso_formats import iso_container
from tests.support import make_modern_formats as formats
from tests.support.hidden_imports import run_without
from tests.support.images import encode, linear_srgb_icc_profile

NAME = "catalog/phones/IMG_0001"
ROOMY_MAX_PIXELS = 1_000_000
WIDTH, HEIGHT = formats.SIZE_WH
PATTERN_PIXELS = WIDTH * HEIGHT
# Lossy AV1 / HEVC at quality 90 with 4:2:0 chroma: measured at most 2 levels off at a quadrant's centre.
CODEC_TOLERANCE = 8
PATTERN = [formats.TOP_LEFT, formats.TOP_RIGHT, formats.BOTTOM_LEFT, formats.BOTTOM_RIGHT]

HAS_PILLOW_HEIF = importlib.util.find_spec("pillow_heif") is not None
needs_heif = pytest.mark.skipif(not HAS_PILLOW_HEIF, reason="the `heif` extra (pillow-heif) is not installed")
AVIF = pytest.param("avif", id="avif")
HEIC = pytest.param("heic", id="heic", marks=needs_heif)


def read(name: str) -> bytes:
    return formats.path(name).read_bytes()


def decode(
    data: bytes, *, max_pixels: int = ROOMY_MAX_PIXELS, budget: MemoryBudget | None = None
) -> DecodedImage:
    return decode_image(data, max_pixels=max_pixels, budget=budget, name=NAME)


def quadrant_centres(image: Image.Image) -> list[tuple[int, ...]]:
    """The colours at the centres of the top-left, top-right, bottom-left and bottom-right quadrants."""
    pixels = np.asarray(image)
    height, width = pixels.shape[:2]
    rows, columns = (height // 4, 3 * height // 4), (width // 4, 3 * width // 4)
    return [tuple(int(v) for v in pixels[row, column]) for row in rows for column in columns]


def assert_colours_near(actual: Sequence[tuple[int, ...]], expected: Sequence[tuple[int, ...]]) -> None:
    difference = np.abs(np.array(actual, dtype=np.int16) - np.array(expected, dtype=np.int16))
    assert difference.max() <= CODEC_TOLERANCE, f"{actual} is not within {CODEC_TOLERANCE} of {expected}"


@pytest.fixture
def pixels_must_not_be_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to decode pixel data fails the test (both plugins override ImageFile.load)."""

    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixel data was decoded before the size was checked")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    monkeypatch.setattr(AvifImagePlugin.AvifImageFile, "load", refuse)
    if HAS_PILLOW_HEIF:
        from pillow_heif import as_plugin

        monkeypatch.setattr(as_plugin.HeifImageFile, "load", refuse)


# --- The pattern decodes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extension", "source_format"),
    [pytest.param("avif", "AVIF", id="avif"), pytest.param("heic", "HEIF", id="heic", marks=needs_heif)],
)
def test_the_pattern_decodes_to_rgb_of_its_size_and_colours(extension: str, source_format: str) -> None:
    decoded = decode(read(f"pattern.{extension}"))

    assert decoded.source_format == source_format
    assert decoded.rgb.mode == "RGB"
    assert decoded.rgb.size == (WIDTH, HEIGHT)
    assert decoded.alpha is None
    assert_colours_near(quadrant_centres(decoded.rgb), PATTERN)


@pytest.mark.parametrize("extension", [AVIF, HEIC])
def test_a_10_bit_file_is_scaled_to_8_bits_not_clipped(extension: str) -> None:
    # Given the pattern stored with 10 bits per channel (the file's pixi box says so)
    data = read(f"pattern-10bit.{extension}")
    assert _pixi_bits(data) == (formats.HIGH_BIT_DEPTH,) * 3

    decoded = decode(data)

    # Then it shows the 8-bit pattern: scaled by 1/257, neither clipped to 255 nor cut to its low byte
    assert decoded.rgb.mode == "RGB"
    assert_colours_near(quadrant_centres(decoded.rgb), PATTERN)


def _pixi_bits(data: bytes) -> tuple[int, ...]:
    """Bits per channel from the first pixi box (ISO/IEC 23008-12): full box header, count, one byte each."""
    start = data.index(b"pixi") + 4 + 4
    count = data[start]
    return tuple(data[start + 1 : start + 1 + count])


@needs_heif
def test_a_multi_image_heic_decodes_its_primary_image_not_its_first() -> None:
    decoded = decode(read("primary-second.heic"))

    assert decoded.rgb.size == (WIDTH, HEIGHT)
    assert_colours_near(quadrant_centres(decoded.rgb), PATTERN)


@needs_heif
def test_a_heic_whose_major_brand_is_the_generic_mif1_still_decodes_as_heif() -> None:
    # Pillow's AVIF plugin claims major brand mif1 too; the compatible brands must decide.
    data = bytearray(read("pattern.heic"))
    data[8:12] = b"mif1"

    decoded = decode(bytes(data))

    assert decoded.source_format == "HEIF"
    assert_colours_near(quadrant_centres(decoded.rgb), PATTERN)


# --- Orientation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("extension", [AVIF, HEIC])
def test_orientation_6_is_applied_so_the_image_is_upright(extension: str) -> None:
    decoded = decode(read(f"orientation6.{extension}"))

    # Stored 64x48, shown rotated 90° clockwise: 48x64 with the bottom-left quadrant now top-left.
    assert decoded.rgb.size == (HEIGHT, WIDTH)
    upright = formats.quadrant_image().transpose(Image.Transpose.ROTATE_270)
    assert_colours_near(quadrant_centres(decoded.rgb), quadrant_centres(upright))


# --- Transparency ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("extension", [AVIF, HEIC])
def test_the_alpha_is_kept_and_the_colours_are_flattened_on_white(extension: str) -> None:
    decoded = decode(read(f"alpha.{extension}"))

    assert decoded.alpha is not None
    assert decoded.alpha.shape == (HEIGHT, WIDTH)
    thirds = [decoded.alpha[:, i * WIDTH // 3 + 2 : (i + 1) * WIDTH // 3 - 2] for i in range(3)]
    for third, expected in zip(thirds, formats.ALPHA_THIRDS, strict=True):
        assert np.abs(third.astype(np.int16) - expected).max() <= 2
    rgb = np.asarray(decoded.rgb)
    assert_colours_near([tuple(rgb[HEIGHT // 4, 4])], [formats.TOP_LEFT])  # opaque
    assert_colours_near([tuple(rgb[HEIGHT // 4, WIDTH - 4])], [(255, 255, 255)])  # transparent


# --- Colour management ----------------------------------------------------------------------------------


@pytest.mark.parametrize("extension", [AVIF, HEIC])
def test_pixels_tagged_with_a_non_srgb_profile_are_converted_to_srgb(extension: str) -> None:
    # Given mid-grey tagged as linear light
    grey = Image.new("RGB", formats.SIZE_WH, (128, 128, 128))
    encoder = formats.encode_avif if extension == "avif" else formats.encode_heic
    data = encoder(grey, icc_profile=linear_srgb_icc_profile())

    decoded = decode(data)

    # Then it is re-encoded with the sRGB curve: linear 0.502 is sRGB 0.735, i.e. 188
    assert_colours_near(quadrant_centres(decoded.rgb), [(188, 188, 188)] * 4)


# --- The same limits as every other format --------------------------------------------------------------


@pytest.mark.usefixtures("pixels_must_not_be_decoded")
@pytest.mark.parametrize(
    "data",
    [
        pytest.param(lambda: read("pattern.avif"), id="avif"),
        pytest.param(lambda: read("pattern.heic"), id="heic", marks=needs_heif),
        pytest.param(lambda: encode(formats.quadrant_image(), "PNG"), id="png-for-comparison"),
    ],
)
def test_one_pixel_over_max_pixels_is_refused_before_decoding_like_a_png(data: Callable[[], bytes]) -> None:
    with pytest.raises(ImageTooLarge, match="CUTOUT_LIMITS__MAX_PIXELS") as caught:
        decode(data(), max_pixels=PATTERN_PIXELS - 1)

    assert caught.value.code == "image_too_large"
    assert NAME in str(caught.value)


@pytest.mark.usefixtures("pixels_must_not_be_decoded")
def test_an_avif_whose_header_claims_10000x10000_is_refused_before_decoding() -> None:
    # libavif would allocate what the ispe box claims, whatever the coded frame holds.
    data = _with_ispe(read("pattern.avif"), 10_000, 10_000)

    with pytest.raises(ImageTooLarge, match=r"10000x10000 is 100,000,000 pixels.*64,000,000"):
        decode(data, max_pixels=64_000_000)


def _with_ispe(data: bytes, width: int, height: int) -> bytes:
    """`data` with its first image-spatial-extents box claiming `width` x `height`."""
    sizes = data.index(b"ispe") + 4 + 4  # after the type and the full box's version and flags
    return data[:sizes] + width.to_bytes(4, "big") + height.to_bytes(4, "big") + data[sizes + 8 :]


@pytest.mark.usefixtures("pixels_must_not_be_decoded")
@pytest.mark.parametrize("extension", [AVIF, HEIC])
def test_a_source_with_alpha_is_budgeted_for_its_alpha_from_the_header(extension: str) -> None:
    # Given a budget that fits the opaque pattern exactly, and the alpha variant of the same size
    budget = MemoryBudget(max_bytes=PATTERN_PIXELS * PIPELINE_BYTES_PER_PIXEL)

    with pytest.raises(ImageTooLarge, match="CUTOUT_LIMITS__MAX_IMAGE_MEMORY_MIB") as caught:
        decode(read(f"alpha.{extension}"), budget=budget)

    assert caught.value.code == "image_too_large"


@pytest.mark.parametrize("extension", [AVIF, HEIC])
def test_an_opaque_file_within_the_memory_budget_decodes(extension: str) -> None:
    budget = MemoryBudget(max_bytes=PATTERN_PIXELS * PIPELINE_BYTES_PER_PIXEL)

    assert decode(read(f"pattern.{extension}"), budget=budget).rgb.size == (WIDTH, HEIGHT)


# --- Broken files fail like any other broken image ------------------------------------------------------


def _cut(name: str, fraction: float) -> bytes:
    data = read(name)
    return data[: int(len(data) * fraction)]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(lambda: _cut("pattern.avif", 0.6), id="avif-cut-in-its-pixel-data"),
        pytest.param(lambda: _cut("pattern.avif", 0.1), id="avif-cut-in-its-header"),
        pytest.param(lambda: _cut("pattern.heic", 0.6), id="heic-cut-in-its-pixel-data", marks=needs_heif),
        pytest.param(lambda: _cut("pattern.heic", 0.1), id="heic-cut-in-its-header", marks=needs_heif),
        pytest.param(
            lambda: read("pattern.heic")[:32] + b"\x00" * 600,
            id="heic-with-its-boxes-zeroed",
            marks=needs_heif,
        ),
        pytest.param(
            lambda: encode(formats.quadrant_image(), "PNG")[:100], id="truncated-png-for-comparison"
        ),
    ],
)
def test_a_truncated_or_corrupt_file_is_undecodable_like_any_other(data: Callable[[], bytes]) -> None:
    with pytest.raises(UndecodableImage, match=re.escape(NAME)) as caught:
        decode(data())

    assert caught.value.code == "undecodable"


def test_an_iso_media_file_of_another_kind_is_not_a_supported_image() -> None:
    mp4_header = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 64

    with pytest.raises(UndecodableImage, match="not a supported image") as caught:
        decode(mp4_header)

    assert caught.value.code == "undecodable"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("pattern.avif", "AVIF"), ("pattern.heic", "HEIF"), ("pattern-10bit.heic", "HEIF")],
)
def test_the_container_is_told_by_its_ftyp_brands(name: str, expected: str) -> None:
    assert iso_container(read(name)) == expected


def test_files_without_an_ftyp_box_are_no_iso_container() -> None:
    assert iso_container(encode(formats.quadrant_image(), "PNG")) is None
    assert iso_container(b"ftyp") is None


# --- A worker without the decoder says what to install --------------------------------------------------


_OUTCOMES = """
        import json
        from cutout_fleet.errors import CutoutError, PermanentError
        from cutout_fleet.worker.imaging.decode import decode_image
        from tests.support.make_modern_formats import path

        def outcome(name):
            try:
                decoded = decode_image(path(name).read_bytes(), max_pixels=10**6, name="in/" + name)
            except CutoutError as exc:
                permanent = isinstance(exc, PermanentError)
                return {"permanent": permanent, "code": exc.code, "message": str(exc)}
            return {"size": list(decoded.rgb.size)}

        print(json.dumps({name: outcome(name) for name in ("pattern.heic", "pattern.avif")}))
        """


@pytest.mark.skipif(
    importlib.util.find_spec("pi_heif") is None, reason="the `heif-decode` extra is not installed"
)
def test_a_heic_decodes_with_the_decode_only_pi_heif_when_pillow_heif_is_absent() -> None:
    # Given a worker with pi-heif (the images' LGPL decoder) and without pillow-heif
    result = run_without(["pillow_heif", "_pillow_heif"], _OUTCOMES)

    # Then HEIC decodes all the same
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["pattern.heic"] == {"size": [WIDTH, HEIGHT]}


def test_a_heic_without_a_heif_decoder_fails_saying_to_install_the_heif_extra() -> None:
    # Given a worker where neither pillow-heif nor pi-heif is installed
    result = run_without(["pillow_heif", "_pillow_heif", "pi_heif", "_pi_heif"], _OUTCOMES)
    assert result.returncode == 0, result.stderr
    outcomes = json.loads(result.stdout)

    # Then the HEIC fails, permanently, naming the file and the command that fixes it
    heic = outcomes["pattern.heic"]
    assert heic["permanent"] is True
    assert heic["code"] == "unsupported_format"
    assert "in/pattern.heic" in heic["message"]
    assert "pip install 'cutout-fleet[heif]'" in heic["message"]
    # And AVIF, which Pillow decodes itself, does not need the extra
    assert outcomes["pattern.avif"] == {"size": [WIDTH, HEIGHT]}


def test_an_avif_on_a_pillow_without_avif_support_fails_saying_to_upgrade_pillow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(iso_formats, "_avif_supported", lambda: False)

    with pytest.raises(UndecodableImage, match=r"Pillow 11\.3 or later") as caught:
        decode(read("pattern.avif"))

    assert caught.value.code == "unsupported_format"


@needs_heif
def test_pillow_heif_is_imported_only_when_the_first_heif_file_arrives() -> None:
    # Importing it loads libheif and its codecs; a worker that never sees a HEIF file should not pay.
    result = run_without(
        [],
        """
        import sys
        from cutout_fleet.worker.imaging.decode import decode_image
        from tests.support.make_modern_formats import path
        from tests.support.images import encode, gradient_rgb

        decode_image(encode(gradient_rgb((8, 8)), "PNG"), max_pixels=10**6)
        decode_image(path("pattern.avif").read_bytes(), max_pixels=10**6)
        before = "pillow_heif" in sys.modules
        decode_image(path("pattern.heic").read_bytes(), max_pixels=10**6)
        print(before, "pillow_heif" in sys.modules)
        """,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]


# --- The committed files are the script's ---------------------------------------------------------------


def test_every_file_the_script_makes_is_committed_and_small() -> None:
    for name in formats.FILES:
        assert formats.path(name).is_file(), (
            f"{name} is missing: run python -m tests.support.make_modern_formats"
        )
        assert formats.path(name).stat().st_size < 4096
