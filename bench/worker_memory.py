"""A worker's resident memory over many images: does it grow?

One real `cutout worker` (prefork, one pool process), moto_server and Redis, as `bench.fleet_vs_loop`
sets them up; the same 24-image job (the sample photos, u2netp) runs again and again until `--images`
have been processed.  After each job the pool process's RSS (VmRSS from /proc) is sampled.  It prints
the RSS after the first `--warm-up` images (sessions created, arenas grown), at the end, the growth
between the two in %, and the peak (VmHWM).

    CUTOUT_MODEL_DIR=/path/to/models CUTOUT_REDIS_URL=redis://127.0.0.1:6379/0 \\
        python -m bench.worker_memory [--images 2000] [--warm-up 96] [--redis-db 14] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import redis

from bench.fleet_vs_loop import (
    BUCKET,
    FAKE_AWS_ENV,
    MODEL,
    SOURCE_PREFIX,
    Fleet,
    bench_images,
    log,
    moto_server,
    redis_url_for_db,
    running_worker,
)
from cutout_fleet.config.settings import load_settings
from cutout_fleet.producer.publish import CeleryPublisher, producer_app
from cutout_fleet.routing import queue_for_model
from cutout_fleet.state import RedisJobStore
from cutout_fleet.storage import s3_client
from tests.support.fleet import fleet_env

KIB = 1024


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--warm-up", type=int, default=96)
    parser.add_argument("--redis-db", type=int, default=14)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    os.environ.update(FAKE_AWS_ENV)  # moto takes any credentials; boto3 wants some
    base = load_settings()
    redis_url = redis_url_for_db(base.redis_url, args.redis_db)
    images = bench_images(2)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-memory-")))
        redis.Redis.from_url(redis_url).flushdb()
        s3_url = stack.enter_context(moto_server(tmp))
        settings = base.model_copy(
            update={"redis_url": redis_url, "s3": base.s3.model_copy(update={"endpoint_url": s3_url})}
        )
        client = s3_client(settings.s3)
        client.create_bucket(Bucket=BUCKET)
        for key, data in images.items():
            client.put_object(Bucket=BUCKET, Key=SOURCE_PREFIX + key, Body=data)
        env = fleet_env(
            redis_url=redis_url,
            s3_endpoint=s3_url,
            model_dir=settings.model_dir,
            catalog=None,
            extra=FAKE_AWS_ENV,
        )
        route = lambda model: queue_for_model(settings, model)  # noqa: E731
        worker = stack.enter_context(running_worker(env, tmp, route(MODEL), 1))
        store = RedisJobStore.from_url(redis_url, settings.job_ttl_s)
        stack.callback(store.close)
        app = producer_app(redis_url)
        stack.callback(app.close)
        fleet = Fleet(settings, store, CeleryPublisher(app, settings.worker), client, worker, route)

        done, samples, job = 0, [], 0
        while done < args.images:
            # --force by a fresh output prefix: every job does the whole work again
            fleet.run_job(SOURCE_PREFIX, f"out-{job}/", expected=len(images))
            job += 1
            done += len(images)
            (pid,) = worker.pool_pids()
            samples.append((done, _status_kib(pid, "VmRSS")))
            log(f"{done} images: pool RSS {samples[-1][1] / KIB:.0f} MiB")
        peak_kib = _status_kib(pid, "VmHWM")
    warm = next(kib for count, kib in samples if count >= args.warm_up)
    end = samples[-1][1]
    result = {
        "images": done,
        "rss_after_warm_up_mib": round(warm / KIB, 1),
        "rss_at_end_mib": round(end / KIB, 1),
        "growth_percent": round((end - warm) / warm * 100, 2),
        "peak_mib": round(peak_kib / KIB, 1),
        "samples": [(count, round(kib / KIB, 1)) for count, kib in samples],
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{done} images: RSS {result['rss_after_warm_up_mib']} MiB after {args.warm_up}, "
            f"{result['rss_at_end_mib']} MiB at the end: {result['growth_percent']:+.2f} %; "
            f"peak {result['peak_mib']} MiB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
