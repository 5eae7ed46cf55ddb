"""The gpu queue on a machine without CUDA: a worker of a gpu model refuses to start unless
CUTOUT_WORKER__ALLOW_CPU=true, and then a job for a model with BEN2's contract (tiny-ben2) goes to the gpu
queue and its worker processes it; `cutout run` follows the same rule."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.fleet import (
    EXAMPLES_DIR,
    SAMPLE_PHOTOS,
    FleetFactory,
    fleet_env,
    run_cli,
    sample_catalog,
    start_worker,
)
from tests.support.tiny_models import BEN2_MODEL

pytestmark = pytest.mark.integration

ALLOW_CPU = "CUTOUT_WORKER__ALLOW_CPU"
GPU_WORKER = {"CUTOUT_WORKER__MODELS": json.dumps([BEN2_MODEL])}


def gpu_worker_env(model_setup: tuple[Path, Path], redis_url: str) -> dict[str, str]:
    """A gpu-queue worker's environment for the tiny BEN2 model, without CUTOUT_WORKER__ALLOW_CPU."""
    model_dir, catalog = model_setup
    env = fleet_env(
        redis_url=redis_url,
        s3_endpoint="http://127.0.0.1:1",
        model_dir=model_dir,
        catalog=catalog,
        extra=GPU_WORKER,
    )
    env.pop(ALLOW_CPU, None)
    return env


def test_cutout_worker_on_the_gpu_queue_without_cuda_refuses_to_start(
    model_setup: tuple[Path, Path], redis_url: str, cutout_bin: str
) -> None:
    env = gpu_worker_env(model_setup, redis_url)

    result = run_cli(cutout_bin, env, "worker", "--queue", "gpu", check=False, timeout_s=120)

    assert result.returncode != 0
    assert f"{ALLOW_CPU}=true" in result.stderr and BEN2_MODEL in result.stderr, result.stderr


def test_a_plain_celery_worker_of_a_gpu_model_without_cuda_refuses_to_start(
    model_setup: tuple[Path, Path], redis_url: str
) -> None:
    env = gpu_worker_env(model_setup, redis_url)
    celery = str(Path(sys.executable).parent / "celery")

    result = subprocess.run(
        [celery, "-A", "cutout_fleet.worker.celery_app", "worker", "-Q", "gpu", "--concurrency", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode != 0
    assert f"{ALLOW_CPU}=true" in result.stderr + result.stdout


def test_a_ben2_job_goes_to_the_gpu_queue_and_its_worker_cuts_it_out(make_fleet: FleetFactory) -> None:
    with make_fleet(models=[BEN2_MODEL], **{ALLOW_CPU: "true", "CUTOUT_ITEMS_PER_TASK": "2"}) as fleet:
        # Given only a worker of the gpu queue, allowed to run its gpu model on this machine's CPU
        worker = start_worker(fleet.cutout_bin, fleet.env(), fleet.log_dir, queue="gpu", concurrency=1)
        fleet.workers.append(worker)
        src, out = fleet.new_bucket("in"), fleet.new_bucket("out")
        photos = {key: data for key, data in sample_catalog().items() if key.startswith("shoes/")}
        fleet.upload(src, "catalog/", photos)

        # When a job asks for the model with BEN2's contract
        job = fleet.enqueue(f"s3://{src}/catalog/", "--out", f"s3://{out}/cutouts", "--model", BEN2_MODEL)
        status = fleet.wait_for_job(job["job_id"], timeout_s=240, check=True)

        # Then the gpu worker, the only one, processed every photo into a cutout of the photo's size
        assert status["state"] == "done" and status["succeeded"] == len(photos), fleet.logs()
        for key, data in photos.items():
            cutout = Image.open(io.BytesIO(fleet.read(out, "cutouts/" + key.rsplit(".", 1)[0] + ".png")))
            assert cutout.mode == "RGBA" and cutout.size == Image.open(io.BytesIO(data)).size
            alpha = np.asarray(cutout.getchannel("A"))
            assert alpha.min() < 50 and alpha.max() > 200
        # And its log says which providers the model got, and that this is the slow fallback
        log = worker.log()
        assert f"loaded model {BEN2_MODEL}" in log and "providers ['CPUExecutionProvider']" in log
        assert "100x slower" in log and f"{ALLOW_CPU}=true" in log

        # And a catalog job on the gpu queue frames each photo as its preset says
        framed = fleet.enqueue(f"s3://{src}/catalog/", "--out", f"s3://{out}/tiles", "--model", BEN2_MODEL,
                               "--preset", "shop-tile", "--canvas", "400x300")  # fmt: skip
        status = fleet.wait_for_job(framed["job_id"], timeout_s=240, check=True)
        assert status["succeeded"] == len(photos), fleet.logs()
        for key in photos:
            tile = Image.open(io.BytesIO(fleet.read(out, "tiles/" + key.rsplit(".", 1)[0] + ".jpg")))
            assert tile.format == "JPEG" and tile.size == (400, 300)


@pytest.fixture
def run_env(model_setup: tuple[Path, Path]) -> dict[str, str]:
    model_dir, catalog = model_setup
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CUTOUT_")}
    environment.update(
        CUTOUT_MODEL_DIR=str(model_dir),
        CUTOUT_MODEL_CATALOG=str(catalog),
        CUTOUT_REDIS_URL="redis://127.0.0.1:1/0",  # embedded mode needs no Redis
    )
    return environment


def test_cutout_run_with_a_ben2_model_runs_on_the_cpu_when_allowed(
    tmp_path: Path, run_env: dict[str, str], cutout_bin: str
) -> None:
    out = tmp_path / "out"

    result = run_cli(
        cutout_bin,
        {**run_env, ALLOW_CPU: "true"},
        "run",
        str(EXAMPLES_DIR),
        "--out",
        str(out),
        "--model",
        BEN2_MODEL,
        "--json",
    )

    job = json.loads(result.stdout)
    assert (job["succeeded"], job["failed"]) == (len(SAMPLE_PHOTOS), 0), result.stderr
    for name in SAMPLE_PHOTOS:
        cutout = Image.open(out / (name.rsplit(".", 1)[0] + ".png"))
        assert cutout.mode == "RGBA" and cutout.size == Image.open(EXAMPLES_DIR / name).size


def test_cutout_run_with_a_ben2_model_without_cuda_is_refused_before_any_work(
    tmp_path: Path, run_env: dict[str, str], cutout_bin: str
) -> None:
    out = tmp_path / "out"

    result = run_cli(
        cutout_bin, run_env, "run", str(EXAMPLES_DIR), "--out", str(out), "--model", BEN2_MODEL, check=False
    )

    assert result.returncode != 0
    assert f"{ALLOW_CPU}=true" in result.stderr and BEN2_MODEL in result.stderr, result.stderr
    assert not out.exists() or not any(out.rglob("*.png"))
