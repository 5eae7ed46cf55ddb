"""Real worker processes and CLI calls for integration tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from celery import Celery


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


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    hostname: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 60) -> int:
        """Warm shutdown: SIGTERM lets the current task finish, then the worker exits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_worker(
    cutout_bin: str,
    env: Mapping[str, str],
    log_dir: Path,
    *,
    queue: str = "cpu",
    concurrency: int = 1,
    ready_timeout_s: float = 90,
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
    worker = WorkerProcess(proc, hostname, log_path)
    app = Celery(broker=env["CUTOUT_REDIS_URL"])
    app.conf.update(accept_content=["json"], task_serializer="json", result_serializer="json")
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
