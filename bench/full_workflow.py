"""Per-stage times of the full safety workflow (NudeNet -> Florence-2 caption -> Llama classifier) on CPU.

Everything runs through the worker's own code in this process: `SafetyStages` (loaded once, as a worker
does at start-up; each model's load is timed), and per photo `make_cutout` with u2netp from the
`SessionPool`, decoding with the worker's limits and memory budget, and `inspect` = `SafetyStages.run`
for the level.  The pipeline's `Timings` give decode / safety / model / mask / encode; the `StageRun`
that `make_cutout` returns gives each safety stage (nudenet, caption, classifier) and each stage's own
timings.  Per run and photo, three levels in turn, so that the baseline is measured in the same run:

- none:  the plain cutout (u2netp only), the baseline of the ratios;
- light: NudeNet before the model (`--safety light`);
- full:  NudeNet, the caption and the classifier (`--workflow full`), attributes colors + product_type.

Then the caption's micro-batching: the first 4 photos (CAPTION_BATCH) captioned one
call each vs one call for all 4, in ms per image.

The caption and classifier models are the tests' TINY RANDOM ones (tests/support/hub_models.py), built
in a temporary model folder, because Florence-2-large and Llama-3.1-8B cannot be downloaded here: their
times are the pipeline's overhead around a model, not what the real models cost.  Random weights also
give random answers: the classifier's finish reasons and statuses are counted.  NudeNet (the `nudenet`
wheel's 320n.onnx) and u2netp (copied from CUTOUT_MODEL_DIR) are the real models.

    CUTOUT_MODEL_DIR=/path/to/models python -m bench.full_workflow [--runs N] [--photos DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image

from bench.fleet_vs_loop import BUSY_MACHINE_CORES, CpuMeter
from cutout_fleet.catalog import load_catalog
from cutout_fleet.config.settings import Settings
from cutout_fleet.options import ImageOptions
from cutout_fleet.safety.levels import parse_level
from cutout_fleet.safety.verdict import StageStatus
from cutout_fleet.worker.imaging.budget import MIB, MemoryBudget
from cutout_fleet.worker.imaging.decode import decode_image
from cutout_fleet.worker.pipeline import MaskPredictor, Timings, make_cutout
from cutout_fleet.worker.safety.classifier import ClassifierAnswer, LlamaClassifier
from cutout_fleet.worker.safety.stages import SafetyStages
from cutout_fleet.worker.sessions import SessionPool
from tests.support.hub_models import install_tiny_hub_models
from tests.support.paths import PHOTO_SUFFIXES, real_model_dir, sample_images_dir

MODEL = "u2netp"
LEVELS = ("none", "light", "full")  # "none" is the baseline
ATTRIBUTES = ("colors", "product_type")
DEFAULT_RUNS = 5
PIPELINE_STAGES = ("decode", "safety", "model", "mask", "encode")
SAFETY_STAGES = ("nudenet", "caption", "classifier")
# Each safety stage's own timings worth a row ("load" is ~0 after the warm-up).
INNER_TIMINGS = {
    "nudenet": ("preprocess", "inference", "postprocess"),
    "caption": ("preprocess", "generate", "decode"),
    "classifier": ("prompt", "generate", "classify"),
}
WARM_UP_LOADERS = ("nudenet", "captioner", "classifier")
QUIET_WAIT_S = 10.0
CAPTION_BATCH = Settings().safety.caption_batch  # CUTOUT_SAFETY__CAPTION_BATCH: what a worker batches


@dataclass
class Samples:
    """Every timed item of one level: ms by row name, one value per item."""

    ms: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.ms.setdefault(name, []).append(value)

    def median(self, name: str) -> float | None:
        values = self.ms.get(name)
        return statistics.median(values) if values else None


class FinishRecorder:
    """Wraps `LlamaClassifier.classify` to count finish reasons and tokens: a verdict's StageResult keeps
    neither (only ok / failed and an error text)."""

    def __init__(self, classifier: LlamaClassifier) -> None:
        self._classify = classifier.classify
        self.finishes: Counter[str] = Counter()
        self.tokens: list[int] = []

    def __call__(self, *args: Any, **kwargs: Any) -> ClassifierAnswer:
        answer = self._classify(*args, **kwargs)
        self.finishes[answer.finish] += 1
        self.tokens.append(answer.tokens)
        return answer


def photo_files(folder: Path) -> list[Path]:
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    if not photos:
        raise SystemExit(f"no photos ({', '.join(PHOTO_SUFFIXES)}) in {folder}")
    return photos


def bench_settings(model_dir: Path, source_dir: Path) -> Settings:
    """The tiny Hub models built in `model_dir` and the real u2netp copied there; settings that pin them."""
    u2netp = source_dir / f"{MODEL}.onnx"
    if not u2netp.is_file():
        raise SystemExit(f"no {u2netp}: set CUTOUT_MODEL_DIR to a folder holding {MODEL}.onnx")
    shutil.copy(u2netp, model_dir / u2netp.name)
    os.environ.update(install_tiny_hub_models(model_dir))
    settings = Settings(model_dir=model_dir)
    return settings.model_copy(update={"worker": settings.worker.model_copy(update={"models": [MODEL]})})


def load_models(stages: SafetyStages) -> dict[str, float]:
    """Each model `full` needs, loaded through the accessors `warm_up` calls, timed (ms); then
    `warm_up("full")` itself, which finds them loaded."""
    loads_ms = {}
    for name in WARM_UP_LOADERS:
        started = time.perf_counter()
        getattr(stages, name)()  # raises ConfigError when the model cannot load: no figure without it
        loads_ms[name] = (time.perf_counter() - started) * 1000.0
    started = time.perf_counter()
    stages.warm_up("full")
    loads_ms["warm_up('full') after"] = (time.perf_counter() - started) * 1000.0
    return loads_ms


def decoded_rgb(data: bytes, settings: Settings, options: ImageOptions, name: str) -> Image.Image:
    """The photo as the worker decodes it (`make_cutout`'s limits and memory budget)."""
    limits = settings.limits
    budget = MemoryBudget(limits.max_image_memory_mib * MIB, options.format)
    return decode_image(data, max_pixels=limits.max_pixels, budget=budget, name=name).rgb


def cut_out(
    level: str,
    data: bytes,
    name: str,
    predictor: MaskPredictor,
    stages: SafetyStages,
    settings: Settings,
    samples: Samples,
    statuses: Counter[str],
) -> None:
    """One `make_cutout` at `level`, its timings added to `samples`."""
    attributes = ATTRIBUTES if level == "full" else ()
    options = ImageOptions(model=MODEL, safety=parse_level(level), attributes=attributes)
    inspect = None if level == "none" else partial(stages.run, level, attributes=options.attributes)
    timings = Timings()
    started = time.perf_counter()
    cutout = make_cutout(data, predictor, options, settings.limits, timings, name=name, inspect=inspect)
    samples.add("wall", (time.perf_counter() - started) * 1000.0)
    for stage, ms in timings.ms.items():
        samples.add(stage, ms)
    if cutout.safety is None:
        return
    for stage, ms in cutout.safety.timings_ms.items():
        samples.add(stage, ms)
    for stage, result in cutout.safety.stages.items():
        statuses[f"{stage} {result.status.value}"] += 1
        if stage == "caption" and result.status is StageStatus.OK:
            statuses[f"caption truncated={result.truncated}"] += 1
        for inner in INNER_TIMINGS.get(stage, ()):
            if inner in result.timings_ms:
                samples.add(f"{stage}.{inner}", result.timings_ms[inner])


def caption_batches(
    stages: SafetyStages, images: Sequence[Image.Image], into: dict[str, list[float]]
) -> None:
    """One pass of both ways, ms per image: one caption() call per image, and one call for all."""
    captioner = stages.captioner()
    started = time.perf_counter()
    for image in images:
        captioner.caption([image])
    into["batch 1, sequential"].append((time.perf_counter() - started) * 1000.0 / len(images))
    started = time.perf_counter()
    captioner.caption(images)
    into[f"batch {len(images)}"].append((time.perf_counter() - started) * 1000.0 / len(images))


def _cell(value: float | None) -> str:
    return f"{value:10.1f}" if value is not None else f"{'-':>10}"


def print_table(results: dict[str, Samples]) -> None:
    print(f"{'median ms per image':24}" + "".join(f"{level:>10}" for level in LEVELS))
    rows = [*PIPELINE_STAGES]
    for stage in SAFETY_STAGES:
        rows += [f"  {stage}", *(f"    {stage}.{inner}" for inner in INNER_TIMINGS[stage])]
    rows.append("wall")
    for row in rows:
        name = row.strip()
        print(f"{row:24}" + "".join(_cell(results[level].median(name)) for level in LEVELS))
    base = results["none"].median("wall")
    assert base is not None
    ratios = [(results[level].median("wall") or 0.0) / base for level in LEVELS]
    print(f"{'wall / none':24}" + "".join(f"{ratio:10.2f}" for ratio in ratios))


def header(settings: Settings, stages: SafetyStages, photos: list[Path], runs: int) -> None:
    import llama_cpp
    import onnxruntime
    import torch
    import transformers

    captioner, classifier = stages.captioner(), stages.classifier()
    caption_pin, classifier_pin = settings.safety.caption_model, settings.safety.classifier_model
    gguf = classifier_pin.local_path(settings.model_dir)
    # llama-cpp-python's own default when the worker sets none (intra_op_threads 0); only it knows the value.
    llama_threads = classifier._llama.n_threads
    print("full safety workflow, per-stage times on this CPU")
    print(
        "  NOTE: the caption and classifier models are TINY and RANDOM (the tests' models: Florence-2-large "
        "and Llama-3.1-8B cannot be downloaded here), so their times show the pipeline's overhead, not what "
        "the production models cost; NudeNet and u2netp are the real models."
    )
    print(
        f"  models: {MODEL} (real, onnxruntime {onnxruntime.__version__}); nudenet-320n (real, nudenet "
        f"wheel); caption {caption_pin.repo} (tiny random Florence-2, "
        f"{captioner.model.num_parameters():,} parameters, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, {torch.get_num_threads()} threads, max_new_tokens "
        f"{settings.safety.caption_max_new_tokens}); classifier {classifier_pin.repo}/{classifier_pin.file} "
        f"(tiny random Llama GGUF, {gguf.stat().st_size / 1024:,.0f} KiB, llama-cpp-python "
        f"{llama_cpp.__version__}, {llama_threads} threads, n_ctx {settings.safety.classifier_n_ctx})"
    )
    sizes = []
    for photo in photos:
        with Image.open(photo) as opened:
            sizes.append(f"{photo.name} {opened.width}x{opened.height}")
    print(f"  photos: {', '.join(sizes)}; {runs} runs; levels none (baseline) / light / full, interleaved")
    print(
        f"  machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}; "
        f"attributes {', '.join(ATTRIBUTES)}; PNG output, default image options"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runs", type=int, default=DEFAULT_RUNS, help=f"passes over the photos ({DEFAULT_RUNS})"
    )
    parser.add_argument("--photos", type=Path, default=sample_images_dir(), help="folder (examples/photos)")
    args = parser.parse_args(argv)
    photos = photo_files(args.photos)
    source_dir = real_model_dir()
    if source_dir is None:
        parser.error(f"set CUTOUT_MODEL_DIR to a folder holding {MODEL}.onnx")

    with tempfile.TemporaryDirectory(prefix="bench-full-workflow-") as tmp:
        settings = bench_settings(Path(tmp), source_dir)
        predictor = SessionPool(settings, load_catalog(settings)).get(MODEL)
        stages = SafetyStages(settings)
        loads_ms = load_models(stages)
        recorder = FinishRecorder(stages.classifier())
        # The recorder sees every answer; `classify` is otherwise untouched.
        stages.classifier().classify = recorder  # type: ignore[method-assign]
        header(settings, stages, photos, args.runs)
        print("  loads (ms, once per process): " + ", ".join(f"{k} {v:.1f}" for k, v in loads_ms.items()))

        files = {photo.name: photo.read_bytes() for photo in photos}
        options = ImageOptions(model=MODEL)
        batch = [files[p.name] for p in (photos * CAPTION_BATCH)[:CAPTION_BATCH]]
        batch_images = [decoded_rgb(data, settings, options, "batch") for data in batch]
        # Untimed: onnxruntime plans its memory on a session's first run and allocates it on the second.
        warm_up: dict[str, Samples] = {level: Samples() for level in LEVELS}
        for level in LEVELS:
            first = photos[0].name
            cut_out(level, files[first], first, predictor, stages, settings, warm_up[level], Counter())
        recorder.finishes.clear()
        recorder.tokens.clear()

        meter = CpuMeter()
        meter.wait_quiet(QUIET_WAIT_S)
        results = {level: Samples() for level in LEVELS}
        statuses: Counter[str] = Counter()
        per_image: dict[str, list[float]] = {"batch 1, sequential": [], f"batch {len(batch_images)}": []}
        load: dict[str, float] = {}
        started = time.perf_counter()
        with meter.measure(load):
            for _ in range(args.runs):
                for name, data in files.items():
                    for level in LEVELS:
                        cut_out(level, data, name, predictor, stages, settings, results[level], statuses)
                caption_batches(stages, batch_images, per_image)
        elapsed_s = time.perf_counter() - started

    print()
    print_table(results)
    print()
    sequential, batched = (statistics.median(values) for values in per_image.values())
    print(
        f"caption micro-batch ({len(batch_images)} distinct photos, median of {args.runs}): "
        f"batch 1 x{len(batch_images)} sequential {sequential:.1f} ms/image, one batch of "
        f"{len(batch_images)} {batched:.1f} ms/image, batch/sequential {batched / sequential:.2f}"
    )
    print(
        "stage statuses (full and light, all runs): "
        + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
    )
    print(
        f"classifier finish reasons: {', '.join(f'{k} {v}' for k, v in sorted(recorder.finishes.items()))}; "
        f"tokens generated: median {statistics.median(recorder.tokens):.0f}, "
        f"range {min(recorder.tokens)}-{max(recorder.tokens)}"
    )
    other = load["other_cpu_cores"]
    print(f"timed part: {elapsed_s:.1f} s; other processes kept {other:.2f} cores busy meanwhile")
    if other > BUSY_MACHINE_CORES:
        print(
            f"WARNING: other load {other:.2f} cores > {BUSY_MACHINE_CORES}: the machine was shared, "
            "so these figures are noisy; run again on a quiet machine"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
