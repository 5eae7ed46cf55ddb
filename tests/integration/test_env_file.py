"""A `.env` in the working directory cannot redirect a command (issue 11, row 11).

Settings come from a file only when it is named (`cutout --env-file FILE` or CUTOUT_ENV_FILE), and the
command then says on stderr which file it read.  Every test runs the real `cutout` command in a folder
that holds a hostile `.env`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.support.fleet import sample_catalog

pytestmark = pytest.mark.integration

CLI_TIMEOUT_S = 120.0
DOTENV_MODEL_DIR = "/models-named-by-a-stray-dotenv"


def _closed_port() -> int:
    """A loopback port where nothing listens (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cutout(
    cutout_bin: str, cwd: Path, env: Mapping[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [cutout_bin, *args], cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=CLI_TIMEOUT_S
    )


@pytest.fixture
def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("CUTOUT_", "AWS_ENDPOINT_URL"))}


@pytest.fixture
def s3_run(
    tmp_path: Path, clean_env: dict[str, str], real_model_dir: Path, s3_client, s3_endpoint, new_bucket
):  # type: ignore[no-untyped-def]
    """(bucket, env, workdir): a bucket with a photo under in/; the env reaches the S3 server the standard
    way (boto3's AWS_ENDPOINT_URL_S3), and the workdir holds a `.env` that points S3 somewhere else."""
    bucket = new_bucket("dotenv")
    s3_client.put_object(Bucket=bucket, Key="in/coffee.png", Body=sample_catalog()["shoes/coffee.png"])
    env = {
        **clean_env,
        **{k: v for k, v in os.environ.items() if k.startswith("AWS_") and "ENDPOINT" not in k},
        "AWS_ENDPOINT_URL_S3": s3_endpoint,
        "CUTOUT_MODEL_DIR": str(real_model_dir),
        "CUTOUT_REDIS_URL": "redis://127.0.0.1:1/0",
    }
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / ".env").write_text(
        f"CUTOUT_S3__ENDPOINT_URL=http://127.0.0.1:{_closed_port()}\nCUTOUT_S3__MAX_ATTEMPTS=1\n"
    )
    return bucket, env, workdir


def test_a_dotenv_in_the_working_directory_does_not_redirect_cutout_run(
    s3_run, cutout_bin: str, s3_client
) -> None:  # type: ignore[no-untyped-def]
    # Given a `.env` in the working directory that sends S3 requests to another endpoint
    bucket, env, workdir = s3_run

    # When `cutout run` runs there without naming it
    result = _cutout(cutout_bin, workdir, env, "run", f"s3://{bucket}/in/", "--out", f"s3://{bucket}/out")

    # Then it talks to the endpoint the environment configured, and reads no settings file
    assert result.returncode == 0, result.stderr
    assert s3_client.head_object(Bucket=bucket, Key="out/coffee.png")["ContentType"] == "image/png"
    assert "settings read from" not in result.stderr


def test_a_dotenv_named_with_env_file_is_read_and_announced(s3_run, cutout_bin: str) -> None:  # type: ignore[no-untyped-def]
    # Given the same `.env`
    bucket, env, workdir = s3_run

    # When it is named on the command line
    result = _cutout(
        cutout_bin,
        workdir,
        env,
        "--env-file",
        ".env",
        "run",
        f"s3://{bucket}/in/",
        "--out",
        f"s3://{bucket}/o",
    )

    # Then its endpoint is used (where nothing answers, so the run fails), and stderr names the file
    assert result.returncode != 0
    assert f"settings read from {workdir / '.env'}" in result.stderr


def test_every_command_ignores_a_dotenv_unless_it_is_named(
    tmp_path: Path, cutout_bin: str, clean_env: dict[str, str]
) -> None:
    # Given a `.env` in the working directory that names another model folder
    (tmp_path / ".env").write_text(f"CUTOUT_MODEL_DIR={DOTENV_MODEL_DIR}\n")

    # When `cutout models list` runs there: plainly, with --env-file, and with CUTOUT_ENV_FILE
    plain = _cutout(cutout_bin, tmp_path, clean_env, "models", "list", "--json")
    named = _cutout(cutout_bin, tmp_path, clean_env, "--env-file", ".env", "models", "list", "--json")
    by_variable = _cutout(
        cutout_bin, tmp_path, {**clean_env, "CUTOUT_ENV_FILE": ".env"}, "models", "list", "--json"
    )

    # Then only the runs that named the file use it, and those say so on stderr
    for result in (plain, named, by_variable):
        assert result.returncode == 0, result.stderr
    assert not any(row["path"].startswith(DOTENV_MODEL_DIR) for row in json.loads(plain.stdout))
    assert all(row["path"].startswith(DOTENV_MODEL_DIR) for row in json.loads(named.stdout))
    assert all(row["path"].startswith(DOTENV_MODEL_DIR) for row in json.loads(by_variable.stdout))
    assert "settings read from" not in plain.stderr
    assert f"settings read from {tmp_path / '.env'}" in named.stderr
    assert "settings read from .env" in by_variable.stderr
