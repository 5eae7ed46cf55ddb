"""Wall time of `rembg p` against `cutout run` on the same photos, the same model (u2netp) and cores,
start-up included.

rembg is not a dependency of this project: install it in a virtualenv of its own and pass its `rembg`
(for example `python3 -m venv /tmp/rembg && /tmp/rembg/bin/pip install 'rembg[cpu,cli]'`).  Both read
u2netp from CUTOUT_MODEL_DIR (rembg through U2NET_HOME, so it downloads nothing).  The photos are the 12
sample variants of examples/photos times `--copies` (24 by default), written to one flat folder (`rembg p`
does not read subfolders; each run checks both wrote an output per photo); each run writes
into a fresh output folder; the two tools alternate `--runs` times.

    CUTOUT_MODEL_DIR=/path/to/models python -m bench.vs_rembg --rembg /tmp/rembg/bin/rembg [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.fleet_vs_loop import bench_images, write_local

CUTOUT = str(Path(sys.executable).parent / "cutout")


def _wall_s(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rembg", required=True, help="the `rembg` executable of its own virtualenv")
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    model_dir = os.environ.get("CUTOUT_MODEL_DIR")
    if not model_dir or not (Path(model_dir) / "u2netp.onnx").is_file():
        parser.error("set CUTOUT_MODEL_DIR to a folder holding u2netp.onnx")

    env = {k: v for k, v in os.environ.items() if not k.startswith("CUTOUT_")}
    env |= {
        "CUTOUT_MODEL_DIR": model_dir,
        "U2NET_HOME": model_dir,
        "CUTOUT_REDIS_URL": "redis://127.0.0.1:1/0",
    }
    times: dict[str, list[float]] = {"rembg p": [], "cutout run": []}
    with tempfile.TemporaryDirectory(prefix="bench-rembg-") as tmp:
        src = Path(tmp) / "photos"
        # One flat folder: `rembg p` does not descend into subfolders.
        flat = {key.replace("/", "__"): data for key, data in bench_images(args.copies).items()}
        photos = write_local(flat, src)
        for run in range(args.runs):
            out = Path(tmp) / f"out-{run}"
            times["rembg p"].append(
                _wall_s([args.rembg, "p", "-m", "u2netp", str(src), str(out / "rembg")], env)
            )
            times["cutout run"].append(_wall_s([CUTOUT, "run", str(src), "--out", str(out / "cutout")], env))
            for tool in ("rembg", "cutout"):
                written = len(list((out / tool).glob("*.png")))
                if written != len(photos):
                    raise SystemExit(f"{tool} wrote {written} outputs for {len(photos)} photos")
            took = f"rembg {times['rembg p'][-1]:.2f} s, cutout {times['cutout run'][-1]:.2f} s"
            print(f"run {run + 1}: {took}", file=sys.stderr)
    medians = {tool: statistics.median(values) for tool, values in times.items()}
    ratios = [r / c for r, c in zip(times["rembg p"], times["cutout run"], strict=True)]
    report = {
        "photos": len(photos),
        "median_s": {tool: round(value, 2) for tool, value in medians.items()},
        "rembg_over_cutout": {
            "median_of_pairs": round(statistics.median(ratios), 2),
            "of_medians": round(medians["rembg p"] / medians["cutout run"], 2),
        },
        "runs_s": {tool: [round(value, 2) for value in values] for tool, values in times.items()},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{len(photos)} photos, u2netp, start-up included; medians of {args.runs} alternating runs")
    for tool, value in report["median_s"].items():
        print(f"  {tool:<11} {value:.2f} s")
    ratio = report["rembg_over_cutout"]
    print(
        f"  rembg / cutout: {ratio['median_of_pairs']}x (median of pairs), "
        f"{ratio['of_medians']}x (of medians)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
