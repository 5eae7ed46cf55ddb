"""What the fleet costs per image: one real worker (Redis + Celery + S3 over HTTP) vs a bare in-process loop.

Both sides run the same pipeline (`make_cutout`: decode -> model -> mask/background -> encode) on the
same images with the same model and onnxruntime thread setting, on this machine, over loopback:

- loop:  one process, one ModelSession made once (untimed); per image read the file, make_cutout,
         write the PNG to a temporary folder.  images/s = n / wall time of the loop.
- fleet: moto_server (S3 over HTTP) + Redis + one `cutout worker` (prefork), warmed up with a one-image
         job first.  The clock runs from just before `enqueue_job` (called in this process with the
         CeleryPublisher and the RedisJobStore, so no CLI interpreter start-up is counted) until the
         job's state is `done` (polled every 20 ms).  images/s = n / that time.

Runs are interleaved (loop, fleet, loop, fleet, ...) so drift on the machine hits both alike.

    python -m bench.fleet_vs_loop [--copies N] [--repeats R] [--redis-db D] [--concurrency C]
                                  [--intra-op-threads T] [--model-dir DIR] [--json]

The model comes from CUTOUT_MODEL_DIR (or --model-dir); Redis from CUTOUT_REDIS_URL with the DB
replaced by --redis-db (flushed first; DB 0 is refused).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import onnxruntime as ort
import redis

from cutout_fleet.catalog import load_catalog
from cutout_fleet.cli.common import queue_for
from cutout_fleet.config.settings import Settings, load_settings
from cutout_fleet.errors import ConfigError
from cutout_fleet.keys import report_keys
from cutout_fleet.options import ImageOptions, make_options
from cutout_fleet.producer.enqueue import EnqueueRequest, enqueue_job
from cutout_fleet.producer.listing import iter_listing_chunks
from cutout_fleet.producer.publish import CeleryPublisher, producer_app
from cutout_fleet.state import DONE, RUNNING, FailureGuard, RedisJobStore
from cutout_fleet.storage import open_storage, parse_location, s3_client
from cutout_fleet.worker.models.runner import ModelSession
from cutout_fleet.worker.pipeline import Timings, make_cutout
from tests.support import servers
from tests.support.fleet import WorkerProcess, fleet_env, sample_catalog, start_worker
from tests.support.s3_fault_proxy import S3FaultProxy
from tests.support.tiny_models import write_tiny_models

MODEL = "u2netp"
BUCKET = "bench"
SOURCE_PREFIX = "src/"
WARMUP_PREFIX = "warmup/"
WARMUP_KEY = "shoes/astronaut.png"  # one of sample_catalog()'s keys
DEFAULT_COPIES = 2  # x 12 sample variants = 24 images per run
DEFAULT_REPEATS = 3
DEFAULT_REDIS_DB = 14
POLL_INTERVAL_S = 0.02
JOB_TIMEOUT_S = 240.0
REPORT_TIMEOUT_S = 60.0
MOTO_START_TIMEOUT_S = 30.0
LOG_TAIL_CHARS = 3000
BUSY_MACHINE_CORES = 0.1  # other processes' mean load during a run above which the figures are suspect
QUIET_SAMPLE_S = 1.0
DEFAULT_QUIET_WAIT_S = 20.0
# moto accepts anything; fixed fake credentials make sure nothing here can reach a real account.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Stage rows in pipeline order; the loop has read/write where the fleet has check/download/upload.
STAGE_ORDER = ("check", "read", "download", "decode", "model", "mask", "encode", "write", "upload")


class BenchError(Exception):
    """The benchmark cannot give a meaningful figure; the message says why."""


@dataclass
class Run:
    """One timed pass over the images."""

    n: int
    wall_s: float
    stage_median_ms: dict[str, float]
    mean_item_ms: float  # mean over images of the sum of their stage timings
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.n / self.wall_s

    @property
    def outside_stages_ms(self) -> float:
        """Wall time per image not spent inside any timed stage (queueing, bookkeeping, dispatch)."""
        return self.wall_s * 1000.0 / self.n - self.mean_item_ms


def stage_medians(per_item: list[dict[str, float]]) -> dict[str, float]:
    stages = {stage for item in per_item for stage in item}
    return {s: round(statistics.median(i[s] for i in per_item if s in i), 2) for s in stages}


def mean_item_ms(per_item: list[dict[str, float]]) -> float:
    return statistics.fmean(sum(item.values()) for item in per_item)


# -- other load on the machine ----------------------------------------------------------------------
class CpuMeter:
    """CPU used during a run by processes outside this benchmark (other jobs on a shared machine).

    Busy time of all CPUs (/proc/stat, steal included) minus that of this process, its descendants
    (worker, moto_server) and redis-server (which the fleet uses), in cores.  Linux only; 0 elsewhere.
    """

    def __init__(self) -> None:
        self.available = Path("/proc/stat").exists()
        self.ticks_per_s = os.sysconf("SC_CLK_TCK") if self.available else 100

    @staticmethod
    def _busy_ticks() -> int:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return sum(values) - values[3] - values[4]  # all but idle and iowait

    @staticmethod
    def _processes() -> dict[int, tuple[int, str, int]]:
        """pid -> (parent pid, command name, utime + stime ticks)."""
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            name = text[text.index("(") + 1 : text.rindex(")")]
            fields = text[text.rindex(")") + 2 :].split()
            found[int(entry.name)] = (int(fields[1]), name, int(fields[11]) + int(fields[12]))
        return found

    def _ours(self) -> dict[int, int]:
        procs = self._processes()
        ours = {os.getpid()}
        grew = True
        while grew:
            more = {pid for pid, (ppid, _, _) in procs.items() if ppid in ours} - ours
            ours |= more
            grew = bool(more)
        ours |= {pid for pid, (_, name, _) in procs.items() if name == "redis-server"}
        return {pid: procs[pid][2] for pid in ours if pid in procs}

    @contextmanager
    def measure(self, into: dict[str, float]) -> Iterator[None]:
        """Sets into["other_cpu_cores"]: the mean number of cores other processes kept busy."""
        if not self.available:
            yield
            into["other_cpu_cores"] = 0.0
            return
        busy0, ours0, start = self._busy_ticks(), self._ours(), time.perf_counter()
        yield
        busy1, ours1, wall_s = self._busy_ticks(), self._ours(), time.perf_counter() - start
        ours_ticks = sum(t - ours0.get(pid, 0) for pid, t in ours1.items())
        other_ticks = max(busy1 - busy0 - ours_ticks, 0)
        into["other_cpu_cores"] = round(other_ticks / self.ticks_per_s / wall_s, 3)

    def wait_quiet(self, max_wait_s: float) -> float:
        """Wait until other processes leave the CPUs idle (at most max_wait_s); returns the last sample."""
        deadline = time.monotonic() + max_wait_s
        while True:
            sample: dict[str, float] = {}
            with self.measure(sample):
                time.sleep(QUIET_SAMPLE_S)
            if sample["other_cpu_cores"] <= BUSY_MACHINE_CORES or time.monotonic() >= deadline:
                return sample["other_cpu_cores"]


# -- inputs ----------------------------------------------------------------------------------------
def bench_images(copies: int) -> dict[str, bytes]:
    """`copies` x the 12 sample variants (PNG, JPEG, WebP of the 4 example photos), keyed c<i>/<key>."""
    catalog = sample_catalog()
    return {f"c{i}/{key}": data for i in range(copies) for key, data in catalog.items()}


def write_local(images: dict[str, bytes], root: Path) -> list[Path]:
    paths = []
    for key, data in images.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths.append(path)
    return paths


# -- the bare loop ---------------------------------------------------------------------------------
def run_loop(
    session: ModelSession,
    paths: list[Path],
    src_root: Path,
    out_root: Path,
    settings: Settings,
    meter: CpuMeter | None = None,
    model: str = MODEL,
) -> Run:
    options = make_options(model=model)
    outputs = [out_root / p.relative_to(src_root).with_suffix(options.extension) for p in paths]
    for out in outputs:
        out.parent.mkdir(parents=True, exist_ok=True)
    per_item: list[dict[str, float]] = []
    extra: dict[str, float] = {}
    with (meter or CpuMeter()).measure(extra):
        start = time.perf_counter()
        for path, out in zip(paths, outputs, strict=True):
            timings = Timings()
            with timings.stage("read"):
                data = path.read_bytes()
            cutout = make_cutout(data, session, options, settings.limits, timings, name=path.name)
            with timings.stage("write"):
                out.write_bytes(cutout.data)
            per_item.append(timings.ms)
        wall_s = time.perf_counter() - start
    return Run(len(paths), wall_s, stage_medians(per_item), mean_item_ms(per_item), extra)


# -- the fleet -------------------------------------------------------------------------------------
def log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-LOG_TAIL_CHARS:] if path.exists() else "(no log)"


@contextmanager
def moto_server(log_dir: Path) -> Iterator[str]:
    """moto_server on a free loopback port, as the tests start it; terminated on exit."""
    try:
        with servers.moto_server(log_dir / "moto.log") as url:
            yield url
    except RuntimeError as exc:
        raise BenchError(f"{exc}:\n{log_tail(log_dir / 'moto.log')}") from None


@contextmanager
def running_worker(
    env: dict[str, str], log_dir: Path, queue: str, concurrency: int
) -> Iterator[WorkerProcess]:
    cutout_bin = Path(sys.executable).parent / "cutout"
    if not cutout_bin.exists():
        raise BenchError(f"{cutout_bin} is missing: install the project (pip install -e .) in this venv")
    worker = start_worker(str(cutout_bin), env, log_dir, queue=queue, concurrency=concurrency)
    try:
        yield worker
    finally:
        worker.stop()


@dataclass
class Fleet:
    settings: Settings
    store: RedisJobStore
    publisher: CeleryPublisher
    s3: Any  # boto3 S3 client
    worker: WorkerProcess
    route: Callable[[str], str]
    options: ImageOptions = field(default_factory=lambda: make_options(model=MODEL))
    meter: CpuMeter = field(default_factory=CpuMeter)

    def _fail(self, message: str) -> BenchError:
        return BenchError(f"{message}\n--- worker log (tail) ---\n{log_tail(self.worker.log_path)}")

    def run_job(self, source_prefix: str, out_prefix: str, expected: int) -> Run:
        src = parse_location(f"s3://{BUCKET}/{source_prefix}")
        dst = parse_location(f"s3://{BUCKET}/{out_prefix}")
        listing = iter_listing_chunks(open_storage(src, self.settings.s3, self.s3), src.prefix)
        guard = FailureGuard(self.settings.guard.min_items, self.settings.guard.max_failure_ratio)
        request = EnqueueRequest(
            src, dst, self.options, self.route, self.settings.items_per_task, guard=guard
        )
        load: dict[str, float] = {}
        with self.meter.measure(load):
            start = time.perf_counter()
            result = enqueue_job(request, self.store, listing, self.publisher)
            enqueued = time.perf_counter()
            self._wait_done(result.job_id, start)
            wall_s = time.perf_counter() - start
        job = self.store.get(result.job_id)
        if job is None or job.total != expected or job.succeeded != expected:
            counts = job.counts() if job else "job missing"
            raise self._fail(f"job {result.job_id}: expected {expected} succeeded items, got {counts}")
        summary = self._summary(result.job_id, dst.prefix)
        per_item = [o.timings_ms for o in self.store.iter_outcomes(result.job_id)]
        extra = {
            "enqueue_call_ms": round((enqueued - start) * 1000.0, 1),
            "first_outcome_after_s": round((job.first_outcome_at or job.created_at) - job.created_at, 3),
            "summary_images_per_s": float(summary.get("images_per_s") or 0.0),
            **load,
        }
        return Run(expected, wall_s, dict(summary["median_timings_ms"]), mean_item_ms(per_item), extra)

    def _wait_done(self, job_id: str, start: float) -> None:
        while True:
            state = self.store.state(job_id)
            if state == DONE:
                return
            if state != RUNNING:
                job = self.store.get(job_id)
                raise self._fail(f"job {job_id} ended {state}: {job.stop_reason if job else ''}")
            if self.worker.proc.poll() is not None:
                raise self._fail(f"the worker exited with {self.worker.proc.returncode}")
            if time.perf_counter() - start > JOB_TIMEOUT_S:
                raise self._fail(f"job {job_id} not done after {JOB_TIMEOUT_S:.0f}s")
            time.sleep(POLL_INTERVAL_S)

    def _summary(self, job_id: str, out_prefix: str) -> dict[str, Any]:
        """The job's summary JSON from S3, once the worker has written the report (untimed)."""
        deadline = time.monotonic() + REPORT_TIMEOUT_S
        while not (job := self.store.get(job_id)) or not job.report_key:
            if time.monotonic() > deadline:
                raise self._fail(f"job {job_id}: no report after {REPORT_TIMEOUT_S:.0f}s")
            time.sleep(POLL_INTERVAL_S)
        summary_key = report_keys(out_prefix, job_id)[1]
        body = self.s3.get_object(Bucket=BUCKET, Key=summary_key)["Body"].read()
        return dict(json.loads(body))


# -- set-up ----------------------------------------------------------------------------------------
def redis_url_for_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise BenchError(f"CUTOUT_REDIS_URL {url!r}: the benchmark needs a redis:// URL to pick --redis-db")
    return urlunsplit(parts._replace(path=f"/{db}"))


def machine_facts(session: ModelSession, intra_op_threads: int) -> dict[str, object]:
    model_name = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": model_name,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "providers": session.providers,
        "intra_op_threads": intra_op_threads,
        "intra_op_threads_meaning": (
            "onnxruntime default (one per physical core)" if intra_op_threads == 0 else "fixed"
        ),
    }


def median(values: list[float]) -> float:
    return statistics.median(values)


def summarize(
    loops: list[Run], fleets: list[Run], config: dict[str, object], machine: dict[str, object]
) -> dict[str, Any]:
    loop_rates = [r.images_per_s for r in loops]
    fleet_rates = [r.images_per_s for r in fleets]
    loop_med, fleet_med = median(loop_rates), median(fleet_rates)

    def stages(runs: list[Run]) -> dict[str, float]:
        names = [s for s in STAGE_ORDER if any(s in r.stage_median_ms for r in runs)]
        return {
            s: round(median([r.stage_median_ms[s] for r in runs if s in r.stage_median_ms]), 2) for s in names
        }

    def side(runs: list[Run], rates: list[float]) -> dict[str, object]:
        return {
            "images_per_s": [round(x, 3) for x in rates],
            "median_images_per_s": round(median(rates), 3),
            "median_stage_ms": stages(runs),
            "median_item_stage_sum_ms": round(median([r.mean_item_ms for r in runs]), 1),
            "median_wall_per_image_ms": round(median([r.wall_s * 1000.0 / r.n for r in runs]), 1),
            "median_outside_stages_ms": round(median([r.outside_stages_ms for r in runs]), 1),
            "other_cpu_cores": [r.extra.get("other_cpu_cores", 0.0) for r in runs],
        }

    fleet = side(fleets, fleet_rates)
    for name in ("enqueue_call_ms", "first_outcome_after_s", "summary_images_per_s"):
        fleet[f"median_{name}"] = round(median([r.extra[name] for r in fleets]), 3)
    return {
        "machine": machine,
        "config": config,
        "loop": side(loops, loop_rates),
        "fleet": fleet,
        "ratio_fleet_over_loop": {
            "per_pair": [round(f / lo, 3) for f, lo in zip(fleet_rates, loop_rates, strict=True)],
            "median_of_pair_ratios": round(
                median([f / lo for f, lo in zip(fleet_rates, loop_rates, strict=True)]), 3
            ),
            "ratio_of_medians": round(fleet_med / loop_med, 3),
        },
        "overhead_ms_per_image": round((1.0 / fleet_med - 1.0 / loop_med) * 1000.0, 1),
    }


def print_text(result: dict[str, Any]) -> None:
    m, c, loop, fleet, ratio = (
        result[k] for k in ("machine", "config", "loop", "fleet", "ratio_fleet_over_loop")
    )
    print(f"fleet vs bare loop: {c['model']}, {c['images']} images x {c['repeats']} repeats, interleaved")
    print(
        f"machine: {m['cpu_count']} CPUs ({m['cpus_usable']} usable), {m['cpu_model']}, {m['platform']}, "
        f"Python {m['python']}, onnxruntime {m['onnxruntime']} {m['providers']}"
    )
    print(
        f"threads: intra_op_threads={m['intra_op_threads']} ({m['intra_op_threads_meaning']}) in both; "
        f"worker concurrency {c['concurrency']} (prefork), items_per_task {c['items_per_task']}, "
        f"Redis DB {c['redis_db']}, S3 = moto_server over loopback HTTP"
    )
    print()
    print(f"{'':16}" + "".join(f"{'run ' + str(i + 1):>9}" for i in range(c["repeats"])) + f"{'median':>9}")
    print(
        f"{'loop images/s':16}"
        + "".join(f"{x:9.2f}" for x in loop["images_per_s"])
        + f"{loop['median_images_per_s']:9.2f}"
    )
    print(
        f"{'fleet images/s':16}"
        + "".join(f"{x:9.2f}" for x in fleet["images_per_s"])
        + f"{fleet['median_images_per_s']:9.2f}"
    )
    print(
        f"{'fleet/loop':16}"
        + "".join(f"{x:9.3f}" for x in ratio["per_pair"])
        + f"{ratio['median_of_pair_ratios']:9.3f}"
    )
    for name, side in (("loop", loop), ("fleet", fleet)):
        print(
            f"{'other load ' + name:16}" + "".join(f"{x:9.2f}" for x in side["other_cpu_cores"]) + "  cores"
        )
    print()
    print(
        f"ratio fleet/loop: median of per-pair ratios {ratio['median_of_pair_ratios']:.3f}, "
        f"ratio of medians {ratio['ratio_of_medians']:.3f}"
    )
    print(
        f"overhead per image: {result['overhead_ms_per_image']:.1f} ms  ((1/fleet_rate - 1/loop_rate) * 1000)"
    )
    print()
    print(f"{'median ms per image':24}{'loop':>9}{'fleet':>9}")
    for stage in STAGE_ORDER:
        a, b = loop["median_stage_ms"].get(stage), fleet["median_stage_ms"].get(stage)
        if a is None and b is None:
            continue
        print(f"{stage:24}" + "".join(f"{x:9.2f}" if x is not None else f"{'-':>9}" for x in (a, b)))
    for label, name in (
        ("stage sum (mean/image)", "median_item_stage_sum_ms"),
        ("wall per image", "median_wall_per_image_ms"),
        ("outside the stages", "median_outside_stages_ms"),
    ):
        print(f"{label:24}{loop[name]:9.1f}{fleet[name]:9.1f}")
    print()
    print(
        f"fleet extras (medians): enqueue_job call {fleet['median_enqueue_call_ms']:.1f} ms, "
        f"first outcome {fleet['median_first_outcome_after_s']:.3f} s after job creation, "
        f"summary images/s (Redis clock, created->finished) {fleet['median_summary_images_per_s']:.2f}"
    )
    busiest = max(loop["other_cpu_cores"] + fleet["other_cpu_cores"])
    if busiest > BUSY_MACHINE_CORES:
        print(
            f"WARNING: other processes kept up to {busiest:.2f} cores busy during a run: "
            "the machine was shared, so these figures are noisy; run again on a quiet machine"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fleet_vs_loop", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--copies", type=int, default=DEFAULT_COPIES, help="copies of the 12 sample variants")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    parser.add_argument("--redis-db", type=int, default=DEFAULT_REDIS_DB, help="flushed first; 0 refused")
    parser.add_argument("--concurrency", type=int, default=1, help="worker processes (prefork)")
    parser.add_argument(
        "--intra-op-threads", type=int, default=0, help="onnxruntime threads, both sides; 0 = its default"
    )
    parser.add_argument("--model-dir", type=Path, default=None, help="default: CUTOUT_MODEL_DIR")
    parser.add_argument(
        "--model",
        default=MODEL,
        help="u2netp, or a test model with a real contract and next to no cost (tiny-u2netp): the fleet's "
        "own ceiling",
    )
    parser.add_argument(
        "--quiet-wait-s",
        type=float,
        default=DEFAULT_QUIET_WAIT_S,
        help="before each timed run, wait up to this long for other processes to leave the CPUs idle",
    )
    parser.add_argument(
        "--s3-latency-ms",
        type=float,
        default=0.0,
        help="the worker reaches S3 through a proxy that waits this long per request (a remote store)",
    )
    parser.add_argument(
        "--no-read-ahead",
        dest="read_ahead",
        action="store_false",
        help="the worker reads each item when it starts (CUTOUT_WORKER__READ_AHEAD=false)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.redis_db == 0:
        parser.error("--redis-db 0 refused: it is flushed first; pick a DB of its own (default 14)")
    for name in ("copies", "repeats", "concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.intra_op_threads < 0 or args.quiet_wait_s < 0:
        parser.error("--intra-op-threads and --quiet-wait-s must be 0 or more")
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def bench(args: argparse.Namespace, stack: ExitStack) -> dict[str, Any]:
    os.environ.update(FAKE_AWS_ENV)
    base = load_settings()
    redis_url = redis_url_for_db(base.redis_url, args.redis_db)
    model_dir = args.model_dir or base.model_dir
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-fleet-")))
    tiny_catalog = None
    if args.model.startswith("tiny-"):
        model_dir = tmp / "models"
        tiny_catalog = write_tiny_models(model_dir)
        base = base.model_copy(update={"model_dir": model_dir, "model_catalog": tiny_catalog})
    catalog = load_catalog(base)
    session = ModelSession(  # created once, untimed, exactly as the worker's SessionPool makes it
        catalog.get(args.model),
        model_dir,
        providers=base.worker.providers,
        intra_op_threads=args.intra_op_threads,
    )
    images = bench_images(args.copies)
    src_root, logs = tmp / "src", tmp / "logs"
    logs.mkdir()
    paths = write_local(images, src_root)

    redis.Redis.from_url(redis_url).flushdb()
    s3_url = stack.enter_context(moto_server(logs))
    settings = base.model_copy(
        update={
            "redis_url": redis_url,
            "model_dir": model_dir,
            "s3": base.s3.model_copy(update={"endpoint_url": s3_url}),
        }
    )
    client = s3_client(settings.s3)
    client.create_bucket(Bucket=BUCKET)
    for key, data in images.items():
        client.put_object(Bucket=BUCKET, Key=SOURCE_PREFIX + key, Body=data)
    client.put_object(Bucket=BUCKET, Key=WARMUP_PREFIX + WARMUP_KEY, Body=sample_catalog()[WARMUP_KEY])

    worker_s3 = s3_url
    if args.s3_latency_ms > 0:
        proxy = stack.enter_context(S3FaultProxy(s3_url, latency_s=args.s3_latency_ms / 1000))
        worker_s3 = proxy.url
        log(f"the worker reaches S3 through a proxy adding {args.s3_latency_ms:g} ms per request")
    env = fleet_env(
        redis_url=redis_url,
        s3_endpoint=worker_s3,
        model_dir=model_dir,
        catalog=tiny_catalog,
        extra={
            **FAKE_AWS_ENV,
            "CUTOUT_WORKER__MODELS": json.dumps([args.model]),
            "CUTOUT_WORKER__INTRA_OP_THREADS": str(args.intra_op_threads),
            "CUTOUT_WORKER__READ_AHEAD": "true" if args.read_ahead else "false",
        },
    )
    route = queue_for(settings)
    log(f"starting a worker (concurrency {args.concurrency}) on Redis DB {args.redis_db}, S3 {s3_url}")
    worker = stack.enter_context(running_worker(env, logs, route(args.model), args.concurrency))
    store = RedisJobStore.from_url(redis_url, settings.job_ttl_s)
    stack.callback(store.close)
    app = producer_app(redis_url)
    stack.callback(app.close)
    fleet = Fleet(
        settings,
        store,
        CeleryPublisher(app, settings.worker),
        client,
        worker,
        route,
        make_options(model=args.model),
    )

    fleet.run_job(WARMUP_PREFIX, "warmup-out/", expected=1)  # session creation and connections: untimed
    run_loop(session, paths[:1], src_root, tmp / "warmup-out", settings, model=args.model)
    loops: list[Run] = []
    fleets: list[Run] = []
    meter = fleet.meter
    for i in range(args.repeats):
        meter.wait_quiet(args.quiet_wait_s)
        loops.append(run_loop(session, paths, src_root, tmp / f"out-{i}", settings, meter, args.model))
        log(f"run {i + 1}/{args.repeats}: loop  {loops[-1].images_per_s:6.2f} images/s  {loops[-1].extra}")
        meter.wait_quiet(args.quiet_wait_s)
        fleets.append(fleet.run_job(SOURCE_PREFIX, f"out-{i}/", expected=len(images)))
        log(f"run {i + 1}/{args.repeats}: fleet {fleets[-1].images_per_s:6.2f} images/s  {fleets[-1].extra}")

    config = {
        "model": args.model,
        "images": len(images),
        "copies": args.copies,
        "repeats": args.repeats,
        "concurrency": args.concurrency,
        "redis_db": args.redis_db,
        "items_per_task": settings.items_per_task,
        "poll_interval_s": POLL_INTERVAL_S,
        "quiet_wait_s": args.quiet_wait_s,
        "enqueue": "in-process enqueue_job + CeleryPublisher + RedisJobStore (no CLI start-up)",
        "output_format": fleet.options.format,
    }
    return summarize(loops, fleets, config, machine_facts(session, args.intra_op_threads))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the worker and moto_server are stopped either way.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with ExitStack() as stack:
            result = bench(args, stack)
            log("stopping the worker and moto_server")
    except (BenchError, ConfigError) as exc:
        log(f"bench: {exc}")
        return 1
    except KeyboardInterrupt:
        log("bench: interrupted; the worker and moto_server were stopped")
        return 130
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_text(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
