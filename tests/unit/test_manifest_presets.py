"""JSONL manifest lines with catalog options: presets by name, and options checked with the job's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cutout_fleet.options import make_options, options_hash
from cutout_fleet.presets import load_presets
from cutout_fleet.producer.manifest import LineOptions, ManifestError, iter_manifest


def _manifest(tmp_path: Path, *lines: dict[str, object]) -> str:
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps({"bucket": "shop", **line}) + "\n" for line in lines))
    return str(path)


def _options(
    tmp_path: Path, *lines: dict[str, object], job: dict[str, object] | None = None
) -> list[dict[str, object]]:
    line_options = LineOptions(load_presets(), make_options(**(job or {})))
    return [entry.options for entry in iter_manifest(_manifest(tmp_path, *lines), line_options=line_options)]


def test_a_line_with_a_preset_carries_the_presets_options(tmp_path: Path) -> None:
    (options,) = _options(tmp_path, {"key": "a.jpg", "preset": "marketplace-main"})
    assert options == dict(load_presets().get("marketplace-main").options)


def test_a_lines_own_options_win_over_its_preset(tmp_path: Path) -> None:
    (options,) = _options(tmp_path, {"key": "a.jpg", "preset": "marketplace-main", "canvas": "600X400"})
    assert options["canvas"] == "600x400" and options["fill"] == 0.85


def test_a_preset_line_and_a_spelled_out_line_hash_the_same(tmp_path: Path) -> None:
    preset, spelled = _options(
        tmp_path,
        {"key": "a.jpg", "preset": "transparent-square"},
        {"key": "b.jpg", "crop": "subject", "canvas": "square", "margin": "5%", "format": "png"},
    )
    digest = [options_hash(make_options(**options), "sha256:x") for options in (preset, spelled)]
    assert digest[0] == digest[1]


def test_a_line_is_checked_together_with_the_jobs_options(tmp_path: Path) -> None:
    # jpeg needs a colour: the job gives it, so the line may ask for jpeg alone
    (options,) = _options(tmp_path, {"key": "a.jpg", "format": "jpeg"}, job={"background": "white"})
    assert options == {"format": "jpeg"}
    with pytest.raises(ManifestError, match=r"line 1: invalid options: .*--background white"):
        _options(tmp_path, {"key": "a.jpg", "format": "jpeg"})


def test_an_unknown_preset_on_a_line_is_refused_with_its_line_number(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"line 2: no preset named 'amazon'"):
        _options(tmp_path, {"key": "a.jpg"}, {"key": "b.jpg", "preset": "amazon"})


def test_a_preset_that_is_not_a_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match='"preset" must be a preset name'):
        _options(tmp_path, {"key": "a.jpg", "preset": 3})


def test_catalog_options_are_named_on_a_line_as_the_flags(tmp_path: Path) -> None:
    (options,) = _options(
        tmp_path,
        {"key": "a.jpg", "crop": "subject", "on_no_subject": "keep", "output": "both", "shadow": "drop",
         "canvas": "square", "align": "bottom", "max_upscale": 2, "visible_threshold": 200},
    )  # fmt: skip
    assert options["on_no_subject"] == "keep" and options["output"] == "both" and options["max_upscale"] == 2
