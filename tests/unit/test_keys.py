"""Object keys: which are images, where each output goes, and local paths that cannot escape their folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from cutout_fleet.errors import PermanentError
from cutout_fleet.keys import is_image_key, join_key, output_key, relative_key, report_keys, safe_local_path

# --- is_image_key -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extension", ["jpg", "jpeg", "png", "webp", "tif", "tiff", "bmp", "gif", "avif", "heic", "heif"]
)
@pytest.mark.parametrize("spelling", [str.lower, str.upper, str.title], ids=["lower", "upper", "title"])
def test_keys_ending_in_an_image_extension_are_images_in_any_case(extension: str, spelling) -> None:  # type: ignore[no-untyped-def]
    assert is_image_key(f"catalog/shoes/a.{spelling(extension)}")


@pytest.mark.parametrize(
    "key",
    [
        "catalog/notes.txt",
        "catalog/meta.json",
        "catalog/README",
        "catalog/shoes/",
        "catalog/archive.jpg.zip",
        "catalog/jpg",
        "catalog/.jpg",
        "catalog/photo.svg",
        "catalog/photo.heics",
        "catalog/shoes.jpg/",
    ],
)
def test_other_keys_are_not_images(key: str) -> None:
    assert not is_image_key(key)


def test_only_the_last_extension_counts() -> None:
    assert is_image_key("catalog/a.txt.png")


# --- output_key ---------------------------------------------------------------------------------------


def test_the_output_key_is_the_key_below_the_source_prefix_under_the_out_prefix_as_png() -> None:
    assert output_key("catalog/shoes/a.jpg", "catalog/", "OUT", ".png") == "OUT/shoes/a.png"


def test_a_source_prefix_without_trailing_slash_gives_the_same_output_key() -> None:
    assert output_key("catalog/shoes/a.jpg", "catalog", "OUT", ".png") == "OUT/shoes/a.png"


def test_an_out_prefix_with_trailing_slash_gives_the_same_output_key() -> None:
    assert output_key("catalog/shoes/a.jpg", "catalog/", "OUT/", ".png") == "OUT/shoes/a.png"


def test_an_empty_source_prefix_keeps_the_whole_key() -> None:
    assert output_key("catalog/shoes/a.jpg", "", "OUT", ".png") == "OUT/catalog/shoes/a.png"


def test_an_empty_out_prefix_puts_the_output_at_the_top() -> None:
    assert output_key("catalog/shoes/a.jpg", "catalog/", "", ".png") == "shoes/a.png"


def test_both_prefixes_empty_only_replaces_the_extension() -> None:
    assert output_key("shoes/a.jpg", "", "", ".png") == "shoes/a.png"


def test_the_webp_extension_is_used_for_webp_output() -> None:
    assert output_key("catalog/a.JPEG", "catalog/", "OUT", ".webp") == "OUT/a.webp"


def test_a_phone_photo_in_heic_maps_to_a_png_output() -> None:
    assert output_key("catalog/IMG_0001.HEIC", "catalog/", "OUT", ".png") == "OUT/IMG_0001.png"


def test_only_the_last_extension_is_replaced() -> None:
    assert output_key("catalog/a.b.tiff", "catalog/", "OUT", ".png") == "OUT/a.b.png"


def test_a_jpg_and_a_png_with_the_same_stem_map_to_the_same_output() -> None:
    assert output_key("catalog/a.jpg", "catalog/", "OUT", ".png") == output_key(
        "catalog/a.png", "catalog/", "OUT", ".png"
    )


def test_a_nested_out_prefix_is_kept_whole() -> None:
    assert output_key("in/a.jpg", "in/", "/runs/2024/cutouts/", ".png") == "runs/2024/cutouts/a.png"


# --- helpers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "rest", "expected"),
    [("OUT", "a.png", "OUT/a.png"), ("OUT/", "/a.png", "OUT/a.png"), ("", "a.png", "a.png"), ("/", "a", "a")],
)
def test_join_key_puts_exactly_one_slash_between_prefix_and_rest(
    prefix: str, rest: str, expected: str
) -> None:
    assert join_key(prefix, rest) == expected


def test_relative_key_of_a_key_outside_the_prefix_is_the_whole_key() -> None:
    assert relative_key("other/a.jpg", "catalog/") == "other/a.jpg"


def test_report_keys_sit_in_the_reports_folder_under_the_out_prefix() -> None:
    assert report_keys("OUT/", "job-1") == ("OUT/_reports/job-1.jsonl", "OUT/_reports/job-1.summary.json")


# --- safe_local_path ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["a.jpg", "shoes/a.jpg", "shoes/summer/2024/a b.jpg", "shoes/..a.jpg", "ü/é.png"]
)
def test_a_normal_key_maps_to_a_path_below_the_root(tmp_path: Path, key: str) -> None:
    path = safe_local_path(tmp_path, key)

    assert path == tmp_path.joinpath(*key.split("/"))
    assert tmp_path.resolve() in path.resolve().parents


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("../escape.jpg", id="parent"),
        pytest.param("shoes/../../escape.jpg", id="parent-in-the-middle"),
        pytest.param("shoes/..", id="parent-at-the-end"),
        pytest.param("/etc/passwd", id="absolute"),
        pytest.param("shoes/a\x00.jpg", id="nul-byte"),
        pytest.param("shoes\\..\\..\\escape.jpg", id="backslashes"),
        pytest.param("shoes\\a.jpg", id="a-backslash"),
        pytest.param("", id="empty"),
        pytest.param(".", id="dot"),
    ],
)
def test_an_unsafe_key_is_refused_as_a_permanent_error(tmp_path: Path, key: str) -> None:
    with pytest.raises(PermanentError) as caught:
        safe_local_path(tmp_path, key)

    assert caught.value.code == "unsafe_key"


def test_a_key_through_a_symlink_leaving_the_root_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)

    with pytest.raises(PermanentError, match="leaves the folder"):
        safe_local_path(root, "link/a.jpg")
