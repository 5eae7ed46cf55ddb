"""Catalog-ready outputs through the fleet: S3 -> enqueue (a preset, a manifest with per-key presets)
-> Redis -> a real worker -> S3, with the options and the fill in each output's metadata; masks
claimed like cutouts."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from tests.support.fleet import Fleet, FleetFactory, sample_catalog

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet(make_fleet: FleetFactory) -> Iterator[Fleet]:
    with make_fleet(models=["u2netp"], CUTOUT_ITEMS_PER_TASK="2") as fleet:
        fleet.start_worker(concurrency=1)
        yield fleet


def _photos() -> dict[str, bytes]:
    photos = sample_catalog()
    return {"coffee.png": photos["shoes/coffee.png"], "astronaut.png": photos["shoes/astronaut.png"]}


def test_a_preset_job_writes_framed_jpegs_and_masks_with_their_options_and_fill_in_metadata(
    fleet: Fleet,
) -> None:
    # Given a prefix of photos
    src, out = fleet.new_bucket("in"), fleet.new_bucket("out")
    fleet.upload(src, "p/", _photos())

    # When it is enqueued with the marketplace preset, a smaller canvas and masks beside the cutouts
    job = fleet.enqueue(f"s3://{src}/p/", "--out", f"s3://{out}/o", "--preset", "marketplace-main",
                        "--canvas", "800x800", "--output", "both")  # fmt: skip
    status = fleet.wait_for_job(job["job_id"], timeout_s=240, check=True)

    # Then each photo became an 800x800 white JPEG, with its mask and metadata
    assert (status["succeeded"], status["failed"]) == (2, 0), fleet.logs()
    lines = {line["key"]: line for line in fleet.read_jsonl(out, f"o/_reports/{job['job_id']}.jsonl")}
    for name in _photos():
        stem = name.rsplit(".", 1)[0]
        obj = fleet.s3.get_object(Bucket=out, Key=f"o/{stem}.jpg")
        assert obj["ContentType"] == "image/jpeg"
        image = Image.open(io.BytesIO(obj["Body"].read()))
        assert image.format == "JPEG" and image.size == (800, 800)
        assert np.abs(np.asarray(image)[0, 0].astype(int) - 255).max() <= 3
        meta = obj["Metadata"]
        options = json.loads(meta["cutout-options"])
        assert options["canvas"] == "800x800" and options["fill"] == 0.85 and options["format"] == "jpeg"
        line = lines[f"p/{name}"]
        assert float(meta["cutout-fill-reached"]) == pytest.approx(line["fill_reached"], abs=1e-3)
        assert line["fill_reached"] == pytest.approx(0.85, abs=1e-3)  # 800 px needs no more than 4x
        mask = fleet.s3.get_object(Bucket=out, Key=f"o/{stem}.mask.png")
        assert mask["ContentType"] == "image/png" and line["mask_key"] == f"o/{stem}.mask.png"
        assert Image.open(io.BytesIO(mask["Body"].read())).mode == "L"

    # And running it again skips every item: the preset expanded to the same options hash
    spelled_out = ["--crop", "subject", "--fill", "0.85", "--margin", "2%", "--background", "white",
                   "--format", "jpeg", "--quality", "90"]  # fmt: skip
    again = fleet.enqueue(
        f"s3://{src}/p/", "--out", f"s3://{out}/o", "--canvas", "800x800", "--output", "both", *spelled_out
    )
    status = fleet.wait_for_job(again["job_id"], timeout_s=120, check=True)
    assert (status["skipped"], status["succeeded"]) == (2, 0), status


def test_a_mask_that_would_overwrite_another_items_output_fails_as_a_collision(fleet: Fleet) -> None:
    # Given a.png, whose mask would be a.mask.png, and a.mask.jpg, whose cutout would be a.mask.png
    src, out = fleet.new_bucket("in"), fleet.new_bucket("out")
    photo = _photos()["coffee.png"]
    fleet.upload(src, "p/", {"a.png": photo, "a.mask.jpg": photo})

    # When both are enqueued with masks beside their cutouts
    job = fleet.enqueue(f"s3://{src}/p/", "--out", f"s3://{out}/o", "--output", "both")
    status = fleet.wait_for_job(job["job_id"], timeout_s=240, check=True)

    # Then one of them fails as an output collision naming the other, and no file is overwritten
    assert (status["total"], status["succeeded"], status["failed"]) == (2, 1, 1), status
    lines = fleet.read_jsonl(out, f"o/_reports/{job['job_id']}.jsonl")
    loser = next(line for line in lines if line["status"] == "failed")
    assert loser["error_code"] == "output_collision" and "o/a.mask.png" in loser["error"]


def test_a_manifest_line_can_name_a_preset_and_override_it(fleet: Fleet) -> None:
    # Given a JSONL manifest: one line with a preset, one with the preset and its own canvas, one plain
    src, out = fleet.new_bucket("in"), fleet.new_bucket("out")
    photo = _photos()["coffee.png"]
    fleet.upload(src, "p/", {"a.png": photo, "b.png": photo, "c.png": photo})
    manifest = "\n".join(
        json.dumps(line)
        for line in [
            {"key": "p/a.png", "bucket": src, "preset": "transparent-square"},
            {"key": "p/b.png", "bucket": src, "preset": "marketplace-main", "canvas": "600x400"},
            {"key": "p/c.png", "bucket": src},
        ]
    )
    fleet.upload(src, "", {"m.jsonl": manifest.encode()})

    # When the manifest is enqueued
    job = fleet.enqueue("--manifest", f"s3://{src}/m.jsonl", "--out", f"s3://{out}/o")
    status = fleet.wait_for_job(job["job_id"], timeout_s=240, check=True)

    # Then each key got its own options
    assert (status["succeeded"], status["failed"]) == (3, 0), fleet.logs()
    a = Image.open(io.BytesIO(fleet.s3.get_object(Bucket=out, Key="o/p/a.png")["Body"].read()))
    b = Image.open(io.BytesIO(fleet.s3.get_object(Bucket=out, Key="o/p/b.jpg")["Body"].read()))
    c = Image.open(io.BytesIO(fleet.s3.get_object(Bucket=out, Key="o/p/c.png")["Body"].read()))
    assert a.mode == "RGBA" and a.size[0] == a.size[1]
    assert b.format == "JPEG" and b.size == (600, 400)
    assert c.mode == "RGBA" and c.size == (600, 400)  # the photo's own size: no framing


def test_a_manifest_line_with_an_unknown_preset_is_refused_before_anything_is_enqueued(fleet: Fleet) -> None:
    src, out = fleet.new_bucket("in"), fleet.new_bucket("out")
    fleet.upload(
        src, "", {"m.jsonl": json.dumps({"key": "p/a.png", "bucket": src, "preset": "amazon"}).encode()}
    )
    result = fleet.cli("enqueue", "--manifest", f"s3://{src}/m.jsonl", "--out", f"s3://{out}/o", check=False)
    assert result.returncode == 2
    assert "line 1" in result.stderr and "no preset named 'amazon'" in result.stderr
