"""Fuzzing decode_image: whatever the bytes, it returns an RGB image within the limit or a PermanentError.

Also, in-process and fast: the hostile corpus (tests/support/corpus.py) against decode_image, and the JPEG
scan counter that keeps scan bombs out.

Bounded and reproducible: a fixed number of examples from a derandomized generator, no example database.
Each property counts the inputs it really ran and the test asserts a minimum, so a run that stops early
(hypothesis exhausting a strategy, a changed setting) fails instead of passing on a handful of inputs.
Set CUTOUT_FUZZ_SCALE (e.g. 20) for a longer run; the default keeps the module to ~20 s on two cores.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image

from cutout_fleet.errors import CutoutError, ImageTooLarge, UndecodableImage
from cutout_fleet.worker.imaging.decode import MAX_JPEG_SCANS, DecodedImage, decode_image, jpeg_scan_count
from tests.support.corpus import (
    CORPUS_MAX_PIXELS,
    DECIDED_BEFORE_DECODING,
    animated_webp,
    hostile_corpus,
    jpeg_scan_bomb,
    rgb16_png,
)
from tests.support.images import (
    animated_gif,
    encode,
    gradient_rgb,
    jpeg_with_orientation,
    linear_srgb_icc_profile,
)

NAME = "fuzz/input.jpg"
# Small, so mutated headers often land on either side of it, and whatever decodes decodes fast.
MAX_PIXELS = 64 * 64
FUZZ_SCALE = float(os.environ.get("CUTOUT_FUZZ_SCALE", "1"))
BYTES_EXAMPLES = int(3000 * FUZZ_SCALE)
MUTATION_EXAMPLES = int(4000 * FUZZ_SCALE)
# Hypothesis may end a run early when it believes the space is exhausted; below this share it is a bug.
MIN_EXECUTED_SHARE = 0.8
FUZZ_TIMEOUT_S = 240  # a hang in a decoder fails the test instead of stalling CI


def _palette_png() -> bytes:
    image = Image.new("P", (12, 8), 0)
    image.putpalette([200, 10, 10, 0, 0, 255] + [0] * 762)
    image.paste(1, (0, 0, 6, 8))
    return encode(image, "PNG", transparency=0)


def _rgba() -> Image.Image:
    rgba = gradient_rgb((12, 8)).convert("RGBA")
    rgba.putalpha(128)
    return rgba


def seed_files() -> dict[str, bytes]:
    """Small valid files covering every allowed format and the decoder's branches (modes, EXIF, ICC)."""
    picture = gradient_rgb((12, 8))
    grey16 = Image.fromarray(np.arange(96, dtype=np.uint16).reshape(8, 12) * 600)
    return {
        "png-rgb": encode(picture, "PNG"),
        "png-palette-trns": _palette_png(),
        "png-rgba": encode(_rgba(), "PNG"),
        "png-la": encode(Image.new("LA", (12, 8), (90, 200)), "PNG"),
        "png-16-bit-grey": encode(grey16, "PNG"),
        "png-16-bit-rgb": rgb16_png((12, 8)),
        "png-icc": encode(picture, "PNG", icc_profile=linear_srgb_icc_profile()),
        "png-1-bit": encode(picture.convert("1"), "PNG"),
        "jpeg": encode(picture, "JPEG", quality=80),
        "jpeg-progressive": encode(picture, "JPEG", quality=80, progressive=True),
        "jpeg-exif-6": jpeg_with_orientation((12, 8), 6),
        "jpeg-cmyk": encode(picture.convert("CMYK"), "JPEG"),
        "gif-animated": animated_gif((12, 8), [(255, 0, 0), (0, 0, 255)]),
        "webp-lossy": encode(picture, "WEBP", quality=70),
        "webp-lossless-alpha": encode(_rgba(), "WEBP", lossless=True),
        "webp-animated": animated_webp((12, 8)),
        "bmp-24": encode(picture, "BMP"),
        "bmp-8-palette": encode(picture.quantize(8), "BMP"),
        "tiff-raw": encode(picture, "TIFF"),
        "tiff-lzw-rgba": encode(_rgba(), "TIFF", compression="tiff_lzw"),
        "tiff-group4": encode(picture.convert("1"), "TIFF", compression="group4"),
        "tiff-cmyk": encode(picture.convert("CMYK"), "TIFF"),
        "tiff-16-bit-grey": encode(grey16, "TIFF"),
    }


SEEDS = seed_files()


@dataclass
class Counter:
    executed: int = 0


def check_decode(data: bytes) -> None:
    """The property: an RGB image within the limit (with a matching alpha), or a PermanentError naming it."""
    try:
        decoded = decode_image(data, max_pixels=MAX_PIXELS, name=NAME)
    except (UndecodableImage, ImageTooLarge) as exc:
        assert NAME in str(exc), str(exc)
        return
    assert isinstance(decoded, DecodedImage)
    width, height = decoded.rgb.size
    assert decoded.rgb.mode == "RGB"
    assert 0 < width * height <= MAX_PIXELS
    decoded.rgb.getpixel((width - 1, height - 1))  # the pixels are really there
    if decoded.alpha is not None:
        assert decoded.alpha.dtype == np.uint8 and decoded.alpha.shape == (height, width)


# --- Mutations ------------------------------------------------------------------------------------------


@st.composite
def mutated_files(draw: st.DrawFn) -> bytes:
    """A seed file with 1-6 edits at chosen places: bit flips, byte overwrites, inserts, cuts, truncation."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)), label="seed")])
    for _ in range(draw(st.integers(1, 6), label="edits")):
        if not data:
            break
        position = draw(st.integers(0, len(data) - 1), label="position")
        edit = draw(st.sampled_from(["flip", "byte", "insert", "delete", "truncate", "interesting"]))
        if edit == "flip":
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif edit == "byte":
            data[position] = draw(st.integers(0, 255))
        elif edit == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif edit == "delete":
            del data[position : position + draw(st.integers(1, 16))]
        elif edit == "truncate":
            del data[position:]
        else:
            # Values on the boundaries of header fields (sizes, counts, offsets) found in every format.
            value = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]))
            data[position : position + 2] = bytes([value, value])
    return bytes(data)


def run_counted(prop: Callable[[Counter], Callable[[], None]]) -> tuple[int, float]:
    counter = Counter()
    started = time.perf_counter()
    prop(counter)()
    return counter.executed, time.perf_counter() - started


FUZZ_SETTINGS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    # Generate, and shrink after a failure; explicit, reuse and target phases add nothing here.
    phases=(Phase.generate, Phase.shrink),
    suppress_health_check=(HealthCheck.too_slow, HealthCheck.data_too_large),
)


def _arbitrary_bytes(counter: Counter) -> Callable[[], None]:
    @settings(FUZZ_SETTINGS, max_examples=BYTES_EXAMPLES)
    @given(st.binary(max_size=4096) | st.sampled_from(sorted(SEEDS.values())).map(lambda b: b[:12]))
    def prop(data: bytes) -> None:
        counter.executed += 1
        check_decode(data)

    return prop


def _mutations(counter: Counter) -> Callable[[], None]:
    @settings(FUZZ_SETTINGS, max_examples=MUTATION_EXAMPLES)
    @given(mutated_files())
    def prop(data: bytes) -> None:
        counter.executed += 1
        check_decode(data)

    return prop


# --- Tests -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_every_seed_file_decodes(seed: str) -> None:
    """Mutations must start from files that decode, or they would only exercise the error paths."""
    decoded = decode_image(SEEDS[seed], max_pixels=MAX_PIXELS, name=NAME)

    assert decoded.rgb.mode == "RGB" and decoded.rgb.size in ((12, 8), (8, 12))


@pytest.mark.timeout(FUZZ_TIMEOUT_S)
@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's notes on damaged metadata (EXIF, chunks)
def test_arbitrary_bytes_decode_or_fail_with_a_permanent_error() -> None:
    executed, elapsed_s = run_counted(_arbitrary_bytes)

    print(f"arbitrary bytes: {executed} inputs in {elapsed_s:.1f} s")
    assert executed >= MIN_EXECUTED_SHARE * BYTES_EXAMPLES


@pytest.mark.timeout(FUZZ_TIMEOUT_S)
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_mutated_images_of_every_format_decode_or_fail_with_a_permanent_error() -> None:
    executed, elapsed_s = run_counted(_mutations)

    print(f"mutated images: {executed} inputs in {elapsed_s:.1f} s")
    assert executed >= MIN_EXECUTED_SHARE * MUTATION_EXAMPLES


# --- The hostile corpus, in process --------------------------------------------------------------------


@pytest.mark.timeout(60)  # a decoding-cost check that regressed would take minutes on the scan bomb
def test_every_corpus_file_decodes_to_its_size_or_fails_with_its_code() -> None:
    mismatches = []
    for key, (data, expect) in hostile_corpus().items():
        if expect.outcome == "ignored" or expect.error_code in DECIDED_BEFORE_DECODING:
            continue  # the producer never enqueues it, or fails it without reading it
        try:
            decoded = decode_image(data, max_pixels=CORPUS_MAX_PIXELS, name=key)
            got: tuple[str, object] = ("succeeded", decoded.rgb.size)
        except CutoutError as exc:
            got = ("failed", exc.code)
            if key not in str(exc):
                mismatches.append(f"{key}: the message does not name the file: {exc}")
        wanted = expect.size_wh if expect.outcome == "succeeded" else expect.error_code
        if got != (expect.outcome, wanted):
            mismatches.append(f"{key}: expected {expect.outcome} {wanted}, got {got}")

    assert not mismatches, "\n".join(mismatches)


# --- JPEG scans -------------------------------------------------------------------------------------------


def test_a_progressive_colour_jpeg_has_the_ten_scans_of_libjpegs_script() -> None:
    data = encode(gradient_rgb((40, 30)), "JPEG", progressive=True)

    assert jpeg_scan_count(data, stop_after=MAX_JPEG_SCANS) == 10


def test_scan_markers_inside_metadata_or_after_the_end_of_the_image_are_not_counted() -> None:
    # Given marker-like bytes in a comment segment and a motion-photo-like payload after EOI
    fake_markers = b"\xff\xda\x00\x08" * 300
    data = encode(gradient_rgb((40, 30)), "JPEG", progressive=True, comment=fake_markers) + fake_markers

    assert jpeg_scan_count(data, stop_after=MAX_JPEG_SCANS) == 10
    assert decode_image(data, max_pixels=MAX_PIXELS, name=NAME).rgb.size == (40, 30)


def test_a_jpeg_with_more_scans_than_the_limit_is_refused_before_decoding() -> None:
    data = jpeg_scan_bomb(64, extra_scans=MAX_JPEG_SCANS)

    with pytest.raises(ImageTooLarge, match=f"{NAME}: a JPEG with more than {MAX_JPEG_SCANS} scans"):
        decode_image(data, max_pixels=MAX_PIXELS, name=NAME)


def test_a_jpeg_at_the_scan_limit_still_decodes() -> None:
    base_scans = jpeg_scan_count(jpeg_scan_bomb(64, extra_scans=0), stop_after=MAX_JPEG_SCANS)
    data = jpeg_scan_bomb(64, extra_scans=MAX_JPEG_SCANS - base_scans)

    assert decode_image(data, max_pixels=MAX_PIXELS, name=NAME).rgb.size == (64, 64)
