"""How fast the CLI starts: `--help`, and the producer up to its first S3 request, against their floors.

    python -m bench.cli_startup [--runs 9] [--json]

- `cutout --help`, `cutout enqueue --help`, `cutout run --help`: wall time of the whole process, median
  of `--runs`, beside `python -c pass` (the interpreter alone) measured in the same run.
- Producer start-up: `cutout enqueue s3://bench-in/p/ --out s3://bench-out/o` against a stub S3 server on
  loopback that answers every request 403 (so the command stops at once).  The time from spawning the
  process to the stub receiving its first request, beside the same for a bare script that imports boto3,
  makes a client and sends one request: the floor for any boto3 program.
- The top-level packages that process imported (`-X importtime`), so an import the command does not need
  shows up here.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CUTOUT = str(Path(sys.executable).parent / "cutout")
DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
    b"<Message>bench stub</Message></Error>"
)
BARE_BOTO3 = (
    "import sys, boto3\n"
    "boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', aws_access_key_id='x',"
    " aws_secret_access_key='x').list_objects_v2(Bucket='bench-in', Prefix='p/', MaxKeys=1)\n"
)


class _Stub(BaseHTTPRequestHandler):
    first_request_at: float | None = None

    def _deny(self) -> None:
        if _Stub.first_request_at is None:
            _Stub.first_request_at = time.perf_counter()
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(DENIED)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(DENIED)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _deny

    def log_message(self, format: str, *args: object) -> None:
        pass


def _wall_s(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def _to_first_request_s(args: list[str], env: dict[str, str]) -> float:
    _Stub.first_request_at = None
    start = time.perf_counter()
    subprocess.run(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, timeout=60
    )
    assert _Stub.first_request_at is not None, f"{args[0]} sent no request"
    return _Stub.first_request_at - start


def _imported_packages(argv: list[str], env: dict[str, str]) -> list[str]:
    code = f"import sys; sys.argv = {argv!r}; from cutout_fleet.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], env=env, capture_output=True, text=True, check=False
    )
    names = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    # Third-party packages that were loaded (importtime also lists failed optional imports, which cost
    # ~0.1 ms; the standard library is left out).
    loaded = {name for name in names if importlib.util.find_spec(name) is not None}
    return sorted(loaded - set(sys.stdlib_module_names) - {"__editable___cutout_fleet_0_1_0_finder"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUTOUT_")}
    env |= {
        "CUTOUT_S3__ENDPOINT_URL": endpoint,
        "CUTOUT_S3__MAX_ATTEMPTS": "1",
        "CUTOUT_REDIS_URL": "redis://127.0.0.1:1/0",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
    }
    enqueue = [CUTOUT, "enqueue", "s3://bench-in/p/", "--out", "s3://bench-out/o"]
    cases = {
        "python -c pass": lambda: _wall_s([sys.executable, "-c", "pass"], env),
        "cutout --help": lambda: _wall_s([CUTOUT, "--help"], env),
        "cutout enqueue --help": lambda: _wall_s([CUTOUT, "enqueue", "--help"], env),
        "cutout run --help": lambda: _wall_s([CUTOUT, "run", "--help"], env),
        "bare boto3 script, to its first request": lambda: _to_first_request_s(
            [sys.executable, "-c", BARE_BOTO3, endpoint], env
        ),
        "cutout enqueue, to its first S3 request": lambda: _to_first_request_s(enqueue, env),
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.runs):  # interleaved: a noisy moment hits every case alike
        for name, run in cases.items():
            samples[name].append(run())
    server.shutdown()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    packages = _imported_packages(enqueue, env)
    report = {
        "median_s": {name: round(value, 3) for name, value in medians.items()},
        "producer_over_bare_boto3": round(
            medians["cutout enqueue, to its first S3 request"]
            / medians["bare boto3 script, to its first request"],
            2,
        ),
        "enqueue_imports": packages,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for name, value in report["median_s"].items():
        print(f"{name:<42} {value:.3f} s (median of {args.runs})")
    print(f"producer start-up / bare boto3 script: {report['producer_over_bare_boto3']}x")
    print("top-level packages `cutout enqueue` imported:", " ".join(packages))


if __name__ == "__main__":
    main()
