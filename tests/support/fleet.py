"""A test fleet: real Redis, the S3 server, model files and real `cutout worker` processes.

Integration tests get a `Fleet` from the `make_fleet` fixture (tests/conftest.py):

    with make_fleet(models=["tiny-u2netp"], CUTOUT_ITEMS_PER_TASK="2") as fleet:
        fleet.start_worker(concurrency=2)
        job = fleet.enqueue(f"s3://{bucket}/in/", "--out", f"s3://{bucket}/out")
        status = fleet.wait_for_job(job["job_id"])

Opening a fleet flushes its Redis DB; closing it warm-stops every worker it started and fails the test
if one that the test did not kill exits with an error.  Every wait polls a condition, with a bound.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from cutout_fleet.state import JobRecord, RedisJobStore
from tests.support.processes import children, kill9, wait_for
from tests.support.servers import create_bucket

# Settings every fleet process gets unless a test says otherwise: tests share a few cores, so one
# onnxruntime thread per model session keeps timings steady.
FLEET_DEFAULTS = {"CUTOUT_WORKER__INTRA_OP_THREADS": "1"}
DEFAULT_QUEUE = "cpu"
QUEUE_SETTING = "CUTOUT_QUEUES__CPU"
JOB_TTL_S = 3600
WORKER_READY_S = 90.0
WORKER_STOP_S = 60.0
JOB_WAIT_S = 120.0
DRAIN_WAIT_S = 120.0
OBJECT_WAIT_S = 30.0
CLI_TIMEOUT_S = 300.0
POLL_S = 0.05
INSPECT_TIMEOUT_S = 1.0
LOG_TAIL_CHARS = 8000
# kombu's Redis transport keeps delivered, not yet acknowledged messages in this hash.
UNACKED_KEY = "unacked"


def fleet_env(
    *,
    redis_url: str,
    s3_endpoint: str,
    model_dir: Path,
    catalog: Path | None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment a worker or the CLI gets: everything through settings, nothing hard-coded."""
    env = dict(os.environ)
    env.update(
        {
            "CUTOUT_REDIS_URL": redis_url,
            "CUTOUT_S3__ENDPOINT_URL": s3_endpoint,
            "CUTOUT_MODEL_DIR": str(model_dir),
            "CUTOUT_STATUS_POLL_S": "0.2",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if catalog is not None:
        env["CUTOUT_MODEL_CATALOG"] = str(catalog)
    if extra is not None:
        env.update(extra)
    return env


def control_app(broker_url: str) -> Celery:
    """A Celery app for control commands only (ping, inspect): it sends no tasks."""
    app = Celery(broker=broker_url)
    app.conf.update(accept_content=["json"], task_serializer="json", result_serializer="json")
    return app


@dataclass
class WorkerProcess:
    """One real `cutout worker` process (the prefork parent; its pool processes are its children)."""

    proc: subprocess.Popen[bytes]
    hostname: str
    log_path: Path
    broker_url: str
    killed: bool = False  # by the test, on purpose: its exit code says nothing about the worker

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pool_pids(self) -> list[int]:
        return children(self.proc.pid)

    def answers_ping(self, timeout_s: float = 5.0) -> bool:
        app = control_app(self.broker_url)
        try:
            replies = app.control.ping(destination=[self.hostname], timeout=timeout_s)
        finally:
            app.close()
        return any(self.hostname in reply for reply in replies or [])

    def stop(self, timeout_s: float = WORKER_STOP_S) -> int:
        """Warm shutdown: SIGTERM lets the current task finish, then the worker exits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill_pool(self) -> int:
        """SIGKILL every pool process, as the OOM killer would; the parent lives on.  Returns how many."""
        pool = self.pool_pids()
        for pid in pool:
            kill9(pid)
        return len(pool)

    def kill(self) -> None:
        """SIGKILL the parent and its pool at once: no warm shutdown, no requeue by Celery."""
        self.killed = True
        for pid in [self.proc.pid, *self.pool_pids()]:
            kill9(pid)
        self.proc.wait(timeout=10)


def start_worker(
    cutout_bin: str,
    env: Mapping[str, str],
    log_dir: Path,
    *,
    queue: str = DEFAULT_QUEUE,
    concurrency: int = 1,
    ready_timeout_s: float = WORKER_READY_S,
) -> WorkerProcess:
    """Start `cutout worker` and return once it answers a ping (not after a sleep)."""
    hostname = f"test-{uuid.uuid4().hex[:8]}@localhost"
    log_path = log_dir / f"worker-{hostname.split('@')[0]}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                cutout_bin,
                "worker",
                "--queue",
                queue,
                "--concurrency",
                str(concurrency),
                "--hostname",
                hostname,
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
            ],
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    worker = WorkerProcess(proc, hostname, log_path, env["CUTOUT_REDIS_URL"])
    app = control_app(worker.broker_url)
    deadline = time.monotonic() + ready_timeout_s
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}:\n{worker.log()}")
            if app.control.ping(destination=[hostname], timeout=0.5):
                return worker
        raise RuntimeError(f"worker did not answer a ping in {ready_timeout_s}s:\n{worker.log()}")
    except BaseException:
        worker.stop(timeout_s=5)
        raise
    finally:
        app.close()


@dataclass
class Fleet:
    """One test's fleet.  Build it with `open_fleet` (the `make_fleet` fixture), never directly."""

    redis_url: str
    s3_endpoint: str
    s3: Any  # a boto3 S3 client on the S3 server, for the test's own reads and writes
    model_dir: Path
    catalog: Path
    cutout_bin: str
    log_dir: Path
    settings: dict[str, str]  # CUTOUT_* variables every process of this fleet gets
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def queue(self) -> str:
        """The queue its workers serve and its jobs go to (a test may give the fleet a queue of its own)."""
        return self.settings.get(QUEUE_SETTING, DEFAULT_QUEUE)

    @functools.cached_property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    @functools.cached_property
    def store(self) -> RedisJobStore:
        return RedisJobStore.from_url(self.redis_url, JOB_TTL_S)

    @functools.cached_property
    def control(self) -> Celery:
        return control_app(self.redis_url)

    # -- processes ---------------------------------------------------------------------------------------

    def env(self, **overrides: str) -> dict[str, str]:
        """The environment of a worker or a CLI call: the fleet's settings, then `overrides`."""
        return fleet_env(
            redis_url=self.redis_url,
            s3_endpoint=self.s3_endpoint,
            model_dir=self.model_dir,
            catalog=self.catalog,
            extra={**self.settings, **overrides},
        )

    def start_worker(self, *, concurrency: int = 1, env: Mapping[str, str] | None = None) -> WorkerProcess:
        """A real `cutout worker` on the fleet's queue, ready (it answered a ping); stopped at close."""
        env = self.env() if env is None else env
        queue = env.get(QUEUE_SETTING, DEFAULT_QUEUE)
        worker = start_worker(self.cutout_bin, env, self.log_dir, queue=queue, concurrency=concurrency)
        self.workers.append(worker)
        return worker

    def logs(self) -> str:
        """The tail of every worker's log, for assertion messages."""
        return "\n".join(f"--- {w.hostname}\n{w.log()[-LOG_TAIL_CHARS:]}" for w in self.workers)

    def close(self) -> None:
        """Warm-stop every worker still running; each must exit 0 unless the test killed it."""
        errors = []
        for worker in self.workers:
            code = worker.stop()
            if code != 0 and not worker.killed:
                errors.append(f"{worker.hostname} exited {code}:\n{worker.log()[-LOG_TAIL_CHARS:]}")
        if "control" in self.__dict__:  # the cached Celery app, only if a wait made one
            self.control.close()
        self.redis.close()
        assert not errors, "a worker did not shut down cleanly:\n" + "\n".join(errors)

    # -- the CLI -----------------------------------------------------------------------------------------

    def cli(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        timeout_s: float = CLI_TIMEOUT_S,
    ) -> subprocess.CompletedProcess[str]:
        return run_cli(
            self.cutout_bin, self.env() if env is None else env, *args, timeout_s=timeout_s, check=check
        )

    def cli_json(
        self, *args: str, env: Mapping[str, str] | None = None, timeout_s: float = CLI_TIMEOUT_S
    ) -> Any:
        return json.loads(self.cli(*args, env=env, timeout_s=timeout_s).stdout)

    def enqueue(self, *args: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """`cutout enqueue ARGS --json`: the job (or the dry-run report) it prints."""
        return dict(self.cli_json("enqueue", *args, "--json", env=env))

    def wait_for_job(
        self, job_id: str, *, timeout_s: float = JOB_WAIT_S, check: bool = False
    ) -> dict[str, Any]:
        """`cutout status JOB --wait --json`, once the job ended; `check`: it must end done (exit 0, or 1
        when some items failed)."""
        result = self.cli("status", job_id, "--wait", "--json", check=False, timeout_s=timeout_s)
        if check and result.returncode not in (0, 1):
            raise AssertionError(f"status {job_id} --wait exited {result.returncode}:\n{result.stderr}")
        try:
            return dict(json.loads(result.stdout))
        except json.JSONDecodeError:
            raise AssertionError(
                f"cutout status {job_id} --wait exited {result.returncode} without JSON:\n{result.stderr}"
            ) from None

    # -- S3 ----------------------------------------------------------------------------------------------

    def new_bucket(self, label: str) -> str:
        """A fresh, empty bucket with a unique name."""
        return create_bucket(self.s3, label)

    def upload(self, bucket: str, prefix: str, files: Mapping[str, bytes]) -> dict[str, str]:
        """Put each file under `prefix`; returns key -> ETag."""
        etags = {}
        for key, data in files.items():
            response = self.s3.put_object(Bucket=bucket, Key=prefix + key, Body=data)
            etags[prefix + key] = response["ETag"].strip('"')
        return etags

    def read(self, bucket: str, key: str) -> bytes:
        return bytes(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    def read_jsonl(self, bucket: str, key: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.read(bucket, key).decode().splitlines() if line]

    def wait_for_object(self, bucket: str, key: str, timeout_s: float = OBJECT_WAIT_S) -> bytes:
        """An object written just after something the test waited for (a report after the last item)."""

        def written() -> bool:
            try:
                self.s3.head_object(Bucket=bucket, Key=key)
            except self.s3.exceptions.ClientError:
                return False
            return True

        assert wait_for(written, timeout_s, POLL_S), f"s3://{bucket}/{key} did not appear in {timeout_s}s"
        return self.read(bucket, key)

    # -- waiting on the fleet ----------------------------------------------------------------------------

    def wait_until(self, condition: Callable[[], bool], timeout_s: float, what: Callable[[], str]) -> None:
        """Poll `condition` until it holds; after `timeout_s`, fail with `what()` and the workers' logs."""
        if not wait_for(condition, timeout_s, POLL_S):
            raise AssertionError(f"not within {timeout_s}s: {what()}\n{self.logs()}")

    def wait_for_state(self, job_id: str, state: str, timeout_s: float = JOB_WAIT_S) -> JobRecord:
        """Poll the job store until the job is in `state`."""

        def reached() -> bool:
            job = self.store.get(job_id)
            return job is not None and job.state == state

        self.wait_until(
            reached, timeout_s, lambda: f"job {job_id} in state {state!r}: {self.store.get(job_id)}"
        )
        job = self.store.get(job_id)
        assert job is not None
        return job

    def idle(self) -> bool:
        """Nothing queued, nothing delivered and unacknowledged, and no live worker holding a task."""
        if self.redis.llen(self.queue) or self.redis.hlen(UNACKED_KEY):
            return False
        hosts = [w.hostname for w in self.workers if w.proc.poll() is None]
        if not hosts:
            return True
        inspect = self.control.control.inspect(destination=hosts, timeout=INSPECT_TIMEOUT_S)
        active, reserved = inspect.active() or {}, inspect.reserved() or {}
        if set(active) != set(hosts):
            return False  # a worker that did not answer may be busy
        return not any(active.values()) and not any(reserved.values())

    def wait_drained(self, timeout_s: float = DRAIN_WAIT_S) -> None:
        """Wait until every task sent so far has run to its end (the in-flight one included)."""
        # Idle twice in a row: a message that BRPOP took off the list is, for an instant before kombu
        # records it as unacked, in neither place.
        self.wait_until(lambda: self.idle() and self.idle(), timeout_s, lambda: f"{self.queue} drained")


# What the `make_fleet` fixture is: `make_fleet(models=[...], **settings)` -> a context giving a Fleet.
FleetFactory = Callable[..., AbstractContextManager[Fleet]]


@contextmanager
def open_fleet(
    *,
    redis_url: str,
    s3_endpoint: str,
    s3: Any,
    model_dir: Path,
    catalog: Path,
    cutout_bin: str,
    log_dir: Path,
    models: Sequence[str],
    **settings: str,
) -> Iterator[Fleet]:
    """A fleet on a flushed Redis DB, serving `models` (CUTOUT_WORKER__MODELS) with `settings` on top."""
    fleet = Fleet(
        redis_url=redis_url,
        s3_endpoint=s3_endpoint,
        s3=s3,
        model_dir=model_dir,
        catalog=catalog,
        cutout_bin=cutout_bin,
        log_dir=log_dir,
        settings={**FLEET_DEFAULTS, "CUTOUT_WORKER__MODELS": json.dumps(list(models)), **settings},
    )
    fleet.redis.flushdb()
    try:
        yield fleet
    finally:
        fleet.close()


def run_cli(
    cutout_bin: str, env: Mapping[str, str], *args: str, timeout_s: float = 300, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [cutout_bin, *args], env=dict(env), capture_output=True, text=True, timeout=timeout_s
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"cutout {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def run_cli_json(cutout_bin: str, env: Mapping[str, str], *args: str, timeout_s: float = 300) -> dict:
    return json.loads(run_cli(cutout_bin, env, *args, timeout_s=timeout_s).stdout)


EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples" / "photos"
SAMPLE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")


def sample_catalog() -> dict[str, bytes]:
    """Twelve real photos in the formats a catalog holds (PNG, JPEG, WebP, upper-case extension)."""
    import io

    from PIL import Image

    files: dict[str, bytes] = {}
    for name in SAMPLE_PHOTOS:
        stem = name.rsplit(".", 1)[0]
        data = (EXAMPLES_DIR / name).read_bytes()
        files[f"shoes/{name}"] = data
        image = Image.open(io.BytesIO(data)).convert("RGB")
        jpeg, webp = io.BytesIO(), io.BytesIO()
        image.save(jpeg, "JPEG", quality=90)
        image.save(webp, "WEBP", quality=90)
        files[f"bags/{stem}.JPG"] = jpeg.getvalue()
        files[f"hats/{stem}.webp"] = webp.getvalue()
    return files


def truncated_jpeg() -> bytes:
    data = (EXAMPLES_DIR / "rocket.jpg").read_bytes()
    return data[: len(data) // 3]
