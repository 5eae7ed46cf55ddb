"""`cutout run`: the whole job on one machine, no Redis and no S3 server, same pipeline and reports."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from tests.support.fleet import run_cli, sample_catalog, truncated_jpeg

pytestmark = pytest.mark.integration


@pytest.fixture
def env(real_model_dir):  # type: ignore[no-untyped-def]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CUTOUT_")}
    environment["CUTOUT_MODEL_DIR"] = str(real_model_dir)
    # Embedded mode must not need Redis: point it at a port where nothing listens.
    environment["CUTOUT_REDIS_URL"] = "redis://127.0.0.1:1/0"
    return environment


def _write_tree(root, files: dict[str, bytes]) -> None:  # type: ignore[no-untyped-def]
    for key, data in files.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_a_folder_of_photos_becomes_a_folder_of_cutouts_with_reports(tmp_path, env, cutout_bin) -> None:  # type: ignore[no-untyped-def]
    src, dest = tmp_path / "photos", tmp_path / "cutouts"
    photos = sample_catalog()
    _write_tree(src, {**photos, "bad/broken.jpg": truncated_jpeg(), "notes.txt": b"hello"})

    result = run_cli(
        cutout_bin, env, "run", str(src), "--out", str(dest), "--job-id", "demo", "--json", check=False
    )

    assert result.returncode == 1, result.stderr  # one item failed, so the exit code says so
    job = json.loads(result.stdout)
    assert (job["total"], job["succeeded"], job["failed"], job["ignored"]) == (
        len(photos) + 1,
        len(photos),
        1,
        1,
    )
    for key, data in photos.items():
        cutout = Image.open(dest / (key.rsplit(".", 1)[0] + ".png"))
        assert cutout.mode == "RGBA" and cutout.size == Image.open(io.BytesIO(data)).size
        alpha = np.asarray(cutout.getchannel("A"))
        assert alpha.min() < 50 and alpha.max() > 200
    lines = [json.loads(line) for line in (dest / "_reports" / "demo.jsonl").read_text().splitlines()]
    assert {line["key"] for line in lines} == set(photos) | {"bad/broken.jpg"}
    broken = next(line for line in lines if line["key"] == "bad/broken.jpg")
    assert broken["status"] == "failed" and broken["error_code"] == "undecodable"
    summary = json.loads((dest / "_reports" / "demo.summary.json").read_text())
    assert summary["counts"]["succeeded"] == len(photos)


def test_options_reach_the_pixels_in_embedded_mode(tmp_path, env, cutout_bin) -> None:  # type: ignore[no-untyped-def]
    src, dest = tmp_path / "photos", tmp_path / "cutouts"
    _write_tree(src, {"coffee.png": sample_catalog()["shoes/coffee.png"]})

    run_cli(
        cutout_bin, env, "run", str(src), "--out", str(dest), "--background", "#ff0000", "--format", "webp"
    )

    out = Image.open(dest / "coffee.webp")
    assert out.format == "WEBP" and out.mode == "RGB"
    corner = np.asarray(out)[:5, :5].reshape(-1, 3).mean(axis=0)
    assert corner[0] > 200 and corner[1] < 60 and corner[2] < 60  # the background is red


def test_embedded_mode_reads_and_writes_s3_too(
    tmp_path, env, cutout_bin, s3_client, s3_endpoint, new_bucket
) -> None:  # type: ignore[no-untyped-def]
    bucket = new_bucket("emb")
    s3_client.put_object(Bucket=bucket, Key="in/cat.png", Body=sample_catalog()["shoes/chelsea.png"])
    env = {
        **env,
        "CUTOUT_S3__ENDPOINT_URL": s3_endpoint,
        **{k: os.environ[k] for k in os.environ if k.startswith("AWS_")},
    }

    run_cli(cutout_bin, env, "run", f"s3://{bucket}/in/", "--out", f"s3://{bucket}/out", "--job-id", "s3job")

    assert s3_client.head_object(Bucket=bucket, Key="out/cat.png")["ContentType"] == "image/png"
    assert s3_client.head_object(Bucket=bucket, Key="out/_reports/s3job.jsonl")


def test_a_missing_model_stops_before_any_work_with_the_pull_command(tmp_path, env, cutout_bin) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "photos").mkdir()
    env = {**env, "CUTOUT_MODEL_DIR": str(tmp_path / "empty")}
    result = run_cli(
        cutout_bin, env, "run", str(tmp_path / "photos"), "--out", str(tmp_path / "o"), check=False
    )
    assert result.returncode == 2
    assert "cutout models pull u2netp" in result.stderr
