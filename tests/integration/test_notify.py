"""The completion notice: a signed POST to a local receiver, retried, recorded in the job, sent by workers."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from cutout_fleet.config.settings import NotifySettings, load_settings
from cutout_fleet.errors import ConfigError
from cutout_fleet.notify import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    InvalidNotifyUrl,
    check_notify_url,
    deliver,
    notify_job,
    verify,
)
from cutout_fleet.state import JobSpec, RedisJobStore
from tests.support.fleet import FleetFactory, run_cli, sample_catalog

pytestmark = pytest.mark.integration

SECRET = "s3cret-for-tests"
ATTEMPTS = 3
# Tiny backoff: the retry logic is under test, not the waiting.
POLICY = NotifySettings(secret=SecretStr(SECRET), attempts=ATTEMPTS, backoff_s=0.01, timeout_s=5)
NOTICE_WAIT_S = 240


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 that answers the scripted statuses in turn, then 200."""

    url: str
    statuses: list[int] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    box = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/hooks/cutout")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            box.requests.append(Received(dict(self.headers.items()), body))
            self.send_response(box.statuses.pop(0) if box.statuses else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            box.arrived.set()

        def log_message(self, *args: object) -> None:
            pass

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield box
    server.shutdown()
    server.server_close()


def _done_job(store: RedisJobStore, job_id: str, notify_url: str | None = None) -> None:
    """A job with no items, finished and reported, as finalize_job finds it."""
    store.create(JobSpec(job_id, "s3://in/p/", "s3://out/o", "u2netp", "cpu", {}, notify_url=notify_url))
    store.finalize(job_id)
    store.set_report(job_id, f"o/_reports/{job_id}.jsonl")


def test_a_delivered_notice_is_signed_over_its_exact_body(receiver: Receiver) -> None:
    # Given a receiver that answers 200
    body = b'{"job_id":"j1","state":"done"}'

    # When the notice is delivered
    notice = deliver(receiver.url, body, POLICY)

    # Then it arrived once, and its signature verifies with the secret and fails with any other
    assert (notice.status, notice.attempts, notice.error) == ("delivered", 1, None)
    [request] = receiver.requests
    assert request.body == body and request.headers["Content-Type"] == "application/json"
    timestamp, signature = request.headers[TIMESTAMP_HEADER], request.headers[SIGNATURE_HEADER]
    assert signature.startswith("sha256=")
    assert verify(SECRET, timestamp, request.body, signature)
    assert not verify("another-secret", timestamp, request.body, signature)
    assert not verify(SECRET, timestamp, request.body + b" ", signature)


def test_a_replayed_notice_is_refused_for_its_age(receiver: Receiver) -> None:
    # Given a notice that was delivered
    deliver(receiver.url, b"{}", POLICY)
    [request] = receiver.requests
    timestamp, signature = request.headers[TIMESTAMP_HEADER], request.headers[SIGNATURE_HEADER]

    # When a receiver checks it ten minutes later
    replayed = verify(SECRET, timestamp, request.body, signature, now=int(timestamp) + 600)

    # Then it is refused, though the signature itself is right
    assert not replayed


def test_a_server_error_is_retried_with_backoff_until_delivered(receiver: Receiver) -> None:
    # Given a receiver that fails twice with 500, then answers 200
    receiver.statuses[:] = [500, 503]
    waits: list[float] = []

    # When the notice is delivered
    notice = deliver(receiver.url, b"{}", POLICY, sleep=waits.append)

    # Then the third attempt delivered it, after waits that doubled, each attempt freshly signed
    assert (notice.status, notice.attempts) == ("delivered", 3)
    assert waits == [0.01, 0.02]
    assert len(receiver.requests) == 3
    assert all(
        verify(SECRET, r.headers[TIMESTAMP_HEADER], r.body, r.headers[SIGNATURE_HEADER])
        for r in receiver.requests
    )


def test_a_client_error_is_not_retried(receiver: Receiver) -> None:
    # Given a receiver that refuses the notice with 401
    receiver.statuses[:] = [401]

    # When the notice is delivered
    notice = deliver(receiver.url, b"{}", POLICY, sleep=lambda _s: None)

    # Then one attempt was made, and the failure says what the receiver answered
    assert (notice.status, notice.attempts) == ("failed", 1)
    assert notice.error is not None and "401" in notice.error


def test_a_notice_that_never_gets_through_gives_up_and_is_recorded_in_the_job(
    receiver: Receiver, redis_client: redis.Redis
) -> None:
    # Given a finished job whose receiver answers 500 every time
    store = RedisJobStore(redis_client, 3600)
    _done_job(store, "job-down", notify_url=receiver.url)
    receiver.statuses[:] = [500] * 10

    # When its notice is sent
    notify_job(store, "job-down", POLICY)

    # Then it gave up after the configured attempts, and the job (as `cutout status --json`) says so
    assert len(receiver.requests) == ATTEMPTS
    job = store.get("job-down")
    assert job is not None
    shown = job.as_dict()
    assert (shown["notify_status"], shown["notify_attempts"]) == ("failed", ATTEMPTS)
    assert "HTTP 500" in str(shown["notify_error"]) and shown["notify_url"] == receiver.url


def test_an_unreachable_receiver_is_retried_then_recorded(redis_client: redis.Redis) -> None:
    # Given a finished job whose URL is a port where nothing listens
    store = RedisJobStore(redis_client, 3600)
    _done_job(store, "job-nobody", notify_url="http://127.0.0.1:1/hook")

    # When its notice is sent
    notice = notify_job(store, "job-nobody", POLICY)

    # Then every attempt was made and the connection error is recorded
    assert notice is not None and (notice.status, notice.attempts) == ("failed", ATTEMPTS)
    job = store.get("job-nobody")
    assert job is not None and job.notify_error is not None and "refused" in job.notify_error.lower()


def test_a_completion_is_notified_once_when_the_report_task_runs_again(
    receiver: Receiver, redis_client: redis.Redis
) -> None:
    # Given a finished job whose notice was delivered
    store = RedisJobStore(redis_client, 3600)
    _done_job(store, "job-twice")
    assert notify_job(store, "job-twice", POLICY, receiver.url) is not None

    # When the report task runs again (a redelivery) and would notify again
    again = notify_job(store, "job-twice", POLICY, receiver.url)

    # Then nothing more is sent
    assert again is None and len(receiver.requests) == 1


def test_only_http_and_https_urls_are_accepted() -> None:
    # Given URLs that are not http(s), and settings that name one
    # When they are checked
    # Then each is refused with the reason
    for url in ("file:///etc/passwd", "ftp://host/x", "gopher://h", "http://"):
        with pytest.raises(InvalidNotifyUrl):
            check_notify_url(url)
    assert check_notify_url("https://hooks.example.com/x") == "https://hooks.example.com/x"
    with pytest.raises(ConfigError, match="CUTOUT_NOTIFY"):
        load_settings(notify={"url": "file:///tmp/x", "secret": SECRET})


def test_a_default_url_without_a_secret_is_refused_and_the_secret_is_masked() -> None:
    # Given notice settings with and without a secret
    # When they are loaded
    # Then a URL without a secret is refused, and a secret never shows in the settings' logged forms
    with pytest.raises(ConfigError, match="CUTOUT_NOTIFY__SECRET"):
        load_settings(notify={"url": "https://hooks.example.com/x"})
    settings = load_settings(notify={"url": "https://hooks.example.com/x", "secret": SECRET})
    assert SECRET not in json.dumps(settings.redacted()) and SECRET not in repr(settings)


def test_a_fleet_job_that_finishes_posts_its_signed_summary(
    make_fleet: FleetFactory, receiver: Receiver
) -> None:
    # Given a fleet whose workers have a default notice URL and secret (set through the environment)
    settings = {"CUTOUT_NOTIFY__URL": receiver.url, "CUTOUT_NOTIFY__SECRET": SECRET}
    with make_fleet(models=["u2netp"], **settings) as fleet:
        fleet.start_worker()
        src, out = fleet.new_bucket("in"), fleet.new_bucket("out")
        photos = dict(list(sample_catalog().items())[:2])
        fleet.upload(src, "p/", photos)

        # When a job is enqueued and its worker finishes it
        job = fleet.enqueue(f"s3://{src}/p/", "--out", f"s3://{out}/cut")
        assert receiver.arrived.wait(NOTICE_WAIT_S), fleet.logs()

        # Then the receiver got the job's summary, signed, with its report keys
        [request] = receiver.requests
        headers = request.headers
        assert verify(SECRET, headers[TIMESTAMP_HEADER], request.body, headers[SIGNATURE_HEADER])
        summary = json.loads(request.body)
        assert (summary["job_id"], summary["state"]) == (job["job_id"], "done")
        assert summary["counts"]["succeeded"] == len(photos) and summary["counts"]["failed"] == 0
        assert summary["reports"]["jsonl"] == f"cut/_reports/{job['job_id']}.jsonl"
        fleet.wait_for_object(out, summary["reports"]["summary"])

        # And `cutout status --json` shows the notice delivered
        fleet.wait_until(
            lambda: fleet.store.get(job["job_id"]).notify_status is not None,  # type: ignore[union-attr]
            timeout_s=30,
            what=lambda: "the notice outcome was not recorded",
        )
        status = fleet.cli_json("status", job["job_id"], "--json")
        assert (status["notify_status"], status["notify_attempts"]) == ("delivered", 1), status


def test_an_embedded_run_posts_its_notice(
    tmp_path: Path, real_model_dir: Path, cutout_bin: str, receiver: Receiver
) -> None:
    # Given a folder with one photo and the notice settings in the environment
    name, data = next(iter(sample_catalog().items()))
    (tmp_path / "in" / name).parent.mkdir(parents=True)
    (tmp_path / "in" / name).write_bytes(data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUTOUT_")}
    env.update(
        CUTOUT_MODEL_DIR=str(real_model_dir),
        CUTOUT_REDIS_URL="redis://127.0.0.1:1/0",
        CUTOUT_NOTIFY__URL=receiver.url,
        CUTOUT_NOTIFY__SECRET=SECRET,
    )

    # When `cutout run` processes it
    result = run_cli(cutout_bin, env, "run", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--json")

    # Then the notice arrived, signed, and the printed job records it delivered
    [request] = receiver.requests
    assert verify(SECRET, request.headers[TIMESTAMP_HEADER], request.body, request.headers[SIGNATURE_HEADER])
    assert json.loads(request.body)["counts"]["succeeded"] == 1
    assert json.loads(result.stdout)["notify_status"] == "delivered"
