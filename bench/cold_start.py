"""Cold start: from launching `cutout worker` to its first result, per model.

For each model a one-image job is enqueued first (its task waits in Redis), then a worker of that
model's queue is launched; the clock runs from the launch until the job is done (polled every 20 ms).
The real u2netp from CUTOUT_MODEL_DIR; `tiny-birefnet` and `tiny-ben2` are the test models with the
real contracts (a few KB of weights), so their figures are the fleet's own start-up (interpreter, Celery,
session set-up, the gpu worker's CUDA probe in a child) without a large model file to load.

    CUTOUT_MODEL_DIR=/path/to/models CUTOUT_REDIS_URL=redis://127.0.0.1:6379/0 \\
        python -m bench.cold_start [--runs 3] [--redis-db 14] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import redis

from bench.fleet_vs_loop import BUCKET, FAKE_AWS_ENV, log, moto_server, redis_url_for_db
from cutout_fleet.config.settings import load_settings
from cutout_fleet.options import make_options
from cutout_fleet.producer.enqueue import EnqueueRequest, enqueue_job
from cutout_fleet.producer.listing import iter_listing_chunks
from cutout_fleet.producer.publish import CeleryPublisher, producer_app
from cutout_fleet.routing import queue_for_model
from cutout_fleet.state import DONE, FailureGuard, RedisJobStore
from cutout_fleet.storage import open_storage, parse_location, s3_client
from tests.support.fleet import EXAMPLES_DIR, fleet_env
from tests.support.tiny_models import BEN2_MODEL, write_tiny_models

MODELS = ("u2netp", "tiny-birefnet", BEN2_MODEL)
POLL_S = 0.02
TIMEOUT_S = 300.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--redis-db", type=int, default=14)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    os.environ.update(FAKE_AWS_ENV)
    base = load_settings()
    redis_url = redis_url_for_db(base.redis_url, args.redis_db)
    cutout_bin = str(Path(sys.executable).parent / "cutout")
    results: dict[str, list[float]] = {model: [] for model in MODELS}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-cold-")))
        model_dir = tmp / "models"
        catalog = write_tiny_models(model_dir)
        shutil.copy(base.model_dir / "u2netp.onnx", model_dir / "u2netp.onnx")
        redis.Redis.from_url(redis_url).flushdb()
        s3_url = stack.enter_context(moto_server(tmp))
        settings = base.model_copy(
            update={
                "redis_url": redis_url,
                "model_dir": model_dir,
                "model_catalog": catalog,
                "s3": base.s3.model_copy(update={"endpoint_url": s3_url}),
            }
        )
        client = s3_client(settings.s3)
        client.create_bucket(Bucket=BUCKET)
        client.put_object(
            Bucket=BUCKET, Key="src/coffee.png", Body=(EXAMPLES_DIR / "coffee.png").read_bytes()
        )
        store = RedisJobStore.from_url(redis_url, settings.job_ttl_s)
        stack.callback(store.close)
        app = producer_app(redis_url)
        stack.callback(app.close)
        publisher = CeleryPublisher(app, settings.worker)
        for run in range(args.runs):
            for model in MODELS:
                extra = {**FAKE_AWS_ENV, "CUTOUT_WORKER__MODELS": json.dumps([model])}
                if model == BEN2_MODEL:
                    extra["CUTOUT_WORKER__ALLOW_CPU"] = "true"
                env = fleet_env(
                    redis_url=redis_url, s3_endpoint=s3_url, model_dir=model_dir, catalog=catalog, extra=extra
                )
                job_id = _enqueue(settings, store, publisher, client, model, f"out-{model}-{run}/")
                queue = queue_for_model(settings, model)
                command = [
                    *(cutout_bin, "worker", "--queue", queue, "--concurrency", "1", "--loglevel", "WARNING"),
                    *("--without-gossip", "--without-mingle", "--hostname", f"cold-{model}-{run}@localhost"),
                ]
                with (tmp / f"worker-{model}-{run}.log").open("wb") as worker_log:
                    started = time.perf_counter()
                    # Not `start_worker`: it waits for a ping, which would round the figure to its polls.
                    worker = subprocess.Popen(command, env=env, stdout=worker_log, stderr=subprocess.STDOUT)
                    try:
                        _wait_done(store, job_id, started)
                        results[model].append(time.perf_counter() - started)
                    finally:
                        worker.terminate()
                        worker.wait(timeout=60)
                log(f"run {run + 1}: {model}: first result {results[model][-1]:.2f} s after launch")
    medians = {model: round(statistics.median(values), 2) for model, values in results.items()}
    if args.json:
        print(json.dumps({"median_s": medians, "runs_s": results}, indent=2))
    else:
        for model, value in medians.items():
            print(f"{model:<14} launch -> first result: {value:.2f} s (median of {args.runs})")
    return 0


def _enqueue(settings, store, publisher, client, model: str, out_prefix: str) -> str:  # type: ignore[no-untyped-def]
    src = parse_location(f"s3://{BUCKET}/src/")
    dst = parse_location(f"s3://{BUCKET}/{out_prefix}")
    listing = iter_listing_chunks(open_storage(src, settings.s3, client), src.prefix)
    guard = FailureGuard(settings.guard.min_items, settings.guard.max_failure_ratio)
    request = EnqueueRequest(
        src, dst, make_options(model=model), lambda m: queue_for_model(settings, m), 1, guard=guard
    )
    return enqueue_job(request, store, listing, publisher).job_id


def _wait_done(store: RedisJobStore, job_id: str, started: float) -> None:
    while store.state(job_id) != DONE:
        if time.perf_counter() - started > TIMEOUT_S:
            raise RuntimeError(f"job {job_id} not done {TIMEOUT_S:.0f} s after the worker's launch")
        time.sleep(POLL_S)


if __name__ == "__main__":
    sys.exit(main())
