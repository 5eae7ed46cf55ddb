"""`cutout flower`: a real Flower process on the test Redis, never without a login, on the loopback."""

from __future__ import annotations

import base64
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import wait_for
from tests.support.servers import free_port

pytestmark = pytest.mark.integration


USERNAME = "operator"
# A comma and a colon: Flower's FLOWER_BASIC_AUTH would split this password; the settings must not.
PASSWORD = "s3cret,with:colon-4e1d"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
HTTP_TIMEOUT_S = 10.0
LISTEN = "0A"  # the TCP state LISTEN in /proc/net/tcp


@dataclass
class RunningFlower:
    proc: subprocess.Popen[bytes]
    port: int

    def get(self, path: str, login: str | None = None) -> int:
        """The HTTP status of GET `path`, with basic auth `login` (user:password) when given."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if login is not None:
            request.add_header("Authorization", "Basic " + base64.b64encode(login.encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code


def flower_env(redis_url: str, secrets_dir: Path) -> dict[str, str]:
    """The environment of a fresh operator's shell: no Flower settings but those the test gives."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUTOUT_", "FLOWER_"))}
    env.update(CUTOUT_REDIS_URL=redis_url, CUTOUT_SECRETS_DIR=str(secrets_dir))
    return env


def listening_addresses(port: int) -> set[str]:
    """The local addresses (hex, as /proc/net/tcp{,6} write them) of sockets listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, _, port_hex = fields[1].rpartition(":")
            if int(port_hex, 16) == port and fields[3] == LISTEN:
                found.add(address)
    return found


@pytest.fixture(scope="module")
def running_flower(
    redis_url: str, cutout_bin: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningFlower]:
    """`cutout flower` with the login in the secrets directory's files, on a free port; killed at the end."""
    home = tmp_path_factory.mktemp("flower")
    secrets = home / "secrets"
    secrets.mkdir()
    (secrets / "cutout_flower__username").write_text(USERNAME + "\n")
    (secrets / "cutout_flower__password").write_text(PASSWORD + "\n")
    port = free_port()
    with (home / "flower.log").open("wb") as log:
        proc = subprocess.Popen(
            [cutout_bin, "flower", "--port", str(port)],
            cwd=home,
            env=flower_env(redis_url, secrets),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    flower = RunningFlower(proc, port)

    def serving() -> bool:
        try:
            return flower.get("/healthcheck") == 200
        except OSError:
            return proc.poll() is not None  # stop waiting: the assertion below says why

    try:
        wait_for(serving, START_TIMEOUT_S, 0.2)
        assert proc.poll() is None, f"cutout flower exited: {(home / 'flower.log').read_text()}"
        yield flower
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_refuses_to_start_without_a_login(redis_url: str, cutout_bin: str, tmp_path: Path) -> None:
    # Given no CUTOUT_FLOWER__USERNAME / __PASSWORD and an empty secrets directory
    secrets = tmp_path / "secrets"
    secrets.mkdir()

    # When the operator starts Flower
    result = subprocess.run(
        [cutout_bin, "flower", "--port", str(free_port())],
        cwd=tmp_path,
        env=flower_env(redis_url, secrets),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
    )

    # Then it exits 2, naming both settings, and serves nothing
    assert result.returncode == 2
    assert "CUTOUT_FLOWER__USERNAME" in result.stderr and "CUTOUT_FLOWER__PASSWORD" in result.stderr
    assert "Traceback" not in result.stderr


def test_listens_on_the_loopback_only_by_default(running_flower: RunningFlower) -> None:
    # Given `cutout flower` started without --address
    # Then its one listening socket is 127.0.0.1 (0100007F in /proc/net/tcp)
    assert listening_addresses(running_flower.port) == {"0100007F"}


def test_answers_401_without_the_login(running_flower: RunningFlower) -> None:
    # When a browser asks for the dashboard without credentials, or with a wrong password
    # Then Flower refuses
    assert running_flower.get("/") == 401
    assert running_flower.get("/", login=f"{USERNAME}:wrong") == 401


def test_answers_200_with_the_login_from_the_secrets_directory(running_flower: RunningFlower) -> None:
    # When the operator logs in with the user and password from the secrets files
    # Then the dashboard answers
    assert running_flower.get("/", login=f"{USERNAME}:{PASSWORD}") == 200


def test_keeps_the_password_off_its_command_line(running_flower: RunningFlower) -> None:
    # Given the running process, as `ps` shows it to every user of the machine
    cmdline = Path(f"/proc/{running_flower.proc.pid}/cmdline").read_bytes().decode()

    # Then the password is not there
    assert PASSWORD not in cmdline


def test_metrics_answer_without_the_login(running_flower: RunningFlower) -> None:
    # Flower serves /metrics (and /healthcheck) to anyone: deploy/compose.yaml and the README say so.
    assert running_flower.get("/metrics") == 200


def test_refuses_a_login_on_its_command_line(redis_url: str, cutout_bin: str, tmp_path: Path) -> None:
    # Given a login in the settings, and another one on the command line (where `ps` shows it)
    env = {**flower_env(redis_url, tmp_path), "CUTOUT_FLOWER__USERNAME": "u", "CUTOUT_FLOWER__PASSWORD": "p"}

    # When the operator starts Flower with --basic-auth passed on
    result = subprocess.run(
        [cutout_bin, "flower", "--port", str(free_port()), "--basic-auth=x:y"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
    )

    # Then it refuses: the login comes from the settings only
    assert result.returncode == 2
    assert "not --basic-auth" in result.stderr
