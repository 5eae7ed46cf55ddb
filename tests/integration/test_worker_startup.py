"""A worker refuses to start without its models, and says how to get them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.fleet import fleet_env, run_cli

pytestmark = pytest.mark.integration


def test_cutout_worker_without_its_model_exits_with_the_pull_command(tmp_path, redis_url, cutout_bin) -> None:  # type: ignore[no-untyped-def]
    env = fleet_env(redis_url=redis_url, s3_endpoint="http://127.0.0.1:1", model_dir=tmp_path, catalog=None)
    result = run_cli(cutout_bin, env, "worker", "--queue", "cpu", check=False, timeout_s=60)
    assert result.returncode == 2
    assert "cutout models pull u2netp" in result.stderr


def test_plain_celery_worker_without_its_model_does_not_start(tmp_path, redis_url) -> None:  # type: ignore[no-untyped-def]
    env = fleet_env(redis_url=redis_url, s3_endpoint="http://127.0.0.1:1", model_dir=tmp_path, catalog=None)
    celery = str(Path(sys.executable).parent / "celery")
    result = subprocess.run(
        [celery, "-A", "cutout_fleet.worker.celery_app", "worker", "-Q", "cpu", "--concurrency", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "cutout models pull u2netp" in result.stderr + result.stdout


def test_a_damaged_model_file_is_refused_at_start_up(tmp_path, redis_url, cutout_bin, real_model_dir) -> None:  # type: ignore[no-untyped-def]
    data = bytearray((real_model_dir / "u2netp.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "u2netp.onnx").write_bytes(bytes(data))
    env = fleet_env(redis_url=redis_url, s3_endpoint="http://127.0.0.1:1", model_dir=tmp_path, catalog=None)
    result = run_cli(cutout_bin, env, "worker", "--queue", "cpu", check=False, timeout_s=60)
    assert result.returncode == 2
    assert "md5" in result.stderr or "sha256" in result.stderr
