"""Enqueue speed and memory: N keys from a manifest into the real Redis, as `cutout enqueue --manifest` does.

    python -m bench.enqueue_speed [--keys 100000] [--redis-url redis://127.0.0.1:6379/15] [--json]

Prints keys/s (median of --repeats runs), the producer's peak RSS growth and traced peak, and Redis
memory per queued key: the queue itself (Celery messages in the list) and, separately, the per-key
job state (output claims).  Uses its own Redis DB, flushed before each run (DB 0 is refused).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import redis

from cutout_fleet.config.settings import WorkerSettings, load_settings
from cutout_fleet.options import ImageOptions
from cutout_fleet.producer.enqueue import EnqueueRequest, enqueue_job
from cutout_fleet.producer.listing import iter_manifest_chunks
from cutout_fleet.producer.manifest import iter_manifest
from cutout_fleet.producer.publish import CeleryPublisher, producer_app
from cutout_fleet.state import RedisJobStore, claims_key, job_key
from cutout_fleet.storage import parse_location

QUEUE = "bench-enqueue"


def write_manifest(path: Path, keys: int) -> None:
    with path.open("w") as handle:
        for i in range(keys):
            handle.write(f"catalog-bucket,catalog/spring-2026/shoes/sku-{i:08d}/front-view.jpg\n")


def one_run(url: str, manifest: Path, keys: int, items_per_task: int, trace: bool) -> dict[str, float]:
    client = redis.Redis.from_url(url)
    client.flushdb()
    before = int(client.info("memory")["used_memory"])
    store = RedisJobStore(client, 3600)
    request = EnqueueRequest(
        source=parse_location(f"s3://catalog-bucket/{manifest.name}"),
        out=parse_location("s3://cutouts-bucket/out"),
        options=ImageOptions(model="u2netp"),
        queue_for=lambda _model: QUEUE,
        items_per_task=items_per_task,
        job_id="bench",
        mapping="full",
    )
    publisher = CeleryPublisher(producer_app(url), WorkerSettings())
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    result = enqueue_job(request, store, iter_manifest_chunks(iter_manifest(str(manifest))), publisher)
    elapsed = time.perf_counter() - start
    traced_peak = tracemalloc.get_traced_memory()[1] if trace else 0
    if trace:
        tracemalloc.stop()
    assert result.total == keys, result
    queue_bytes = int(client.memory_usage(QUEUE, samples=0) or 0)
    claims_bytes = int(client.memory_usage(claims_key("bench"), samples=0) or 0)
    job_bytes = int(client.memory_usage(job_key("bench"), samples=0) or 0)
    after = int(client.info("memory")["used_memory"])
    client.flushdb()
    return {
        "keys_per_s": keys / elapsed,
        "seconds": elapsed,
        "tasks": result.tasks,
        "queue_bytes_per_key": queue_bytes / keys,
        "claims_bytes_per_key": claims_bytes / keys,
        "job_hash_bytes": job_bytes,
        "redis_used_bytes_per_key": (after - before) / keys,
        "traced_peak_mb": traced_peak / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--items-per-task", type=int, default=load_settings().items_per_task)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.redis_url.rstrip("/").endswith("/0"):
        parser.error("refusing to flush Redis DB 0; pass a spare DB")
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "manifest.csv"
        write_manifest(manifest, args.keys)
        rss_before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        runs = [
            one_run(args.redis_url, manifest, args.keys, args.items_per_task, trace=False)
            for _ in range(args.repeats)
        ]
        rss_peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # Flat memory: the traced peak with all the keys against a tenth of them.
        full = one_run(args.redis_url, manifest, args.keys, args.items_per_task, trace=True)
        tenth_manifest = Path(tmp) / "tenth.csv"
        write_manifest(tenth_manifest, args.keys // 10)
        tenth = one_run(args.redis_url, tenth_manifest, args.keys // 10, args.items_per_task, trace=True)
    figures = {
        "keys": args.keys,
        "items_per_task": args.items_per_task,
        "median_keys_per_s": round(statistics.median(r["keys_per_s"] for r in runs)),
        "runs_keys_per_s": [round(r["keys_per_s"]) for r in runs],
        "queue_bytes_per_key": round(statistics.median(r["queue_bytes_per_key"] for r in runs), 1),
        "claims_bytes_per_key": round(statistics.median(r["claims_bytes_per_key"] for r in runs), 1),
        "redis_used_bytes_per_key": round(statistics.median(r["redis_used_bytes_per_key"] for r in runs), 1),
        "producer_rss_growth_mb": round((rss_peak_kb - rss_before_kb) / 1024, 1),
        "traced_peak_mb": {
            f"{args.keys // 10}": round(tenth["traced_peak_mb"], 2),
            f"{args.keys}": round(full["traced_peak_mb"], 2),
        },
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    keys, per_task, runs = args.keys, args.items_per_task, figures["runs_keys_per_s"]
    print(f"enqueue of {keys:,} manifest keys into Redis ({per_task} keys per task), {args.repeats} runs")
    print(f"  median keys/s:                 {figures['median_keys_per_s']:,}  (runs: {runs})")
    print(f"  Redis, queue bytes per key:    {figures['queue_bytes_per_key']}")
    print(f"  Redis, job state bytes per key (output claims): {figures['claims_bytes_per_key']}")
    print(f"  Redis used_memory growth / key: {figures['redis_used_bytes_per_key']}")
    print(f"  producer peak RSS growth:      {figures['producer_rss_growth_mb']} MB")
    print(f"  producer traced peak:          {figures['traced_peak_mb']} MB (10x the keys)")


if __name__ == "__main__":
    main()
