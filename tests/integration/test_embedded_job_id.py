"""`cutout run --job-id` is checked as `cutout enqueue`'s is: whole, before anything is written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.fleet import run_cli, sample_catalog

pytestmark = pytest.mark.integration

EXIT_USAGE = 2


@pytest.fixture
def env(real_model_dir: Path) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CUTOUT_")}
    environment["CUTOUT_MODEL_DIR"] = str(real_model_dir)
    environment["CUTOUT_REDIS_URL"] = "redis://127.0.0.1:1/0"  # embedded mode needs no Redis
    return environment


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    name, data = next(iter(sample_catalog().items()))
    (folder / name.rsplit("/", 1)[-1]).write_bytes(data)
    return folder


@pytest.mark.parametrize("job_id", ["x\n", "../x", "-x"])
def test_a_bad_job_id_exits_2_and_writes_nothing(
    tmp_path: Path, photos: Path, env: dict[str, str], cutout_bin: str, job_id: str
) -> None:
    # Given a folder with a photo
    out = tmp_path / "cutouts"

    # When `cutout run` is given a job id that no message could carry
    result = run_cli(cutout_bin, env, "run", str(photos), "--out", str(out), "--job-id", job_id, check=False)

    # Then it exits 2 with the rule, without a traceback, and writes no output or report
    assert result.returncode == EXIT_USAGE, result.stderr
    assert f"job id {job_id!r} is not valid: use 1-64 letters, digits" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
