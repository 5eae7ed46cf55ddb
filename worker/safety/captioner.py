"""Florence-2's detailed caption (`<MORE_DETAILED_CAPTION>`) of a micro-batch of images.

transformers' native Florence-2 classes (no `trust_remote_code`: no code from the model folder runs),
loaded once per process from a Hugging Face snapshot (`cutout models pull florence-2-large`) with local
files only: nothing is downloaded at run time.  torch and transformers come with the `safety-full` extra
and are imported only when a captioner is made, so a worker without them still imports this module and
reports the stage `missing`.

What a caller may rely on, and why it is done so:

- One processor call and one `generate()` call per micro-batch.  The processor resizes every image to
  the model's square input, so images of any size batch without padding, and every row gets the same
  prompt: a row's caption does not depend on its neighbours (beyond float rounding).
- Time and length are bounded: `max_time_s` (transformers' MaxTimeCriteria, checked between decoding
  steps: one step, and the image encoding before the first, can overrun it) and `max_new_tokens`.
- `truncated` is true when a row did not produce `</s>`.  BART's checkpoints force `</s>` at the length
  limit (`forced_eos_token_id`); that is switched off here, or a caption cut at the limit would look
  complete (and lose its last token to the forced `</s>`).
- Each row is cut after its first `</s>` before decoding: in a batch, generate() pads the rows that end
  early with `<pad>`, and Florence-2's `pure_text` parser strips `<s>` and `</s>` but not `<pad>`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from cutout_fleet.errors import ConfigError, ModelError
from cutout_fleet.worker.interrupts import INTERRUPTS

log = logging.getLogger(__name__)

MS_PER_S = 1000.0
PULL_HINT = "run `cutout models pull florence-2-large` with this worker's settings (CUTOUT_MODEL_DIR)"
REPULL_HINT = (
    "run `cutout models pull --force florence-2-large` with this worker's settings to fetch it again"
)
INSTALL_HINT = (
    "install the 'safety-full' extra on the worker (pip install 'cutout-fleet[safety-full]'; on a CPU "
    "machine install torch's CPU build first) and restart it"
)
CONFIG_FILE = "config.json"
SINGLE_WEIGHTS = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"
# What from_pretrained reads besides config and weights; either name of each pair will do (transformers
# 5 writes the image processor into processor_config.json, older snapshots ship preprocessor_config.json).
SUPPORT_FILES: tuple[tuple[str, ...], ...] = (
    ("tokenizer.json", "vocab.json"),
    ("processor_config.json", "preprocessor_config.json"),
)


@dataclass(frozen=True)
class Caption:
    """One image's caption.  Its timings are the micro-batch's, shared by every image in it."""

    text: str  # the post-processed caption
    truncated: bool  # generation stopped at max_new_tokens or max_time_s: the text may be cut short
    timings_ms: dict[str, float]  # "preprocess", "generate", "decode": for the whole micro-batch


class Florence2Captioner:
    """The loaded model and processor.  Create once per process (after fork) and reuse."""

    TASK = "<MORE_DETAILED_CAPTION>"

    def __init__(
        self,
        model_dir: Path,
        *,
        device: str | None = None,
        max_new_tokens: int = 256,
        max_time_s: float = 30.0,
        num_beams: int = 1,
        threads: int | None = None,
    ) -> None:
        torch, transformers = _runtime()
        check_model_dir(model_dir)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(
                f"the caption model is set to run on {device}, but torch {torch.__version__} sees no CUDA "
                "device here; install torch's CUDA build, or leave the device unset to use the CPU"
            )
        if threads is not None:
            torch.set_num_threads(threads)  # the whole process's intra-op pool, as onnxruntime's setting
        self.device: str = device
        # Half precision halves a GPU's memory and time; CPUs have no fast float16 kernels.
        self.dtype: Any = torch.float16 if device.startswith("cuda") else torch.float32
        self.max_new_tokens = max_new_tokens
        self.max_time_s = max_time_s
        self.num_beams = num_beams
        self._torch = torch
        try:
            self.processor: Any = transformers.Florence2Processor.from_pretrained(
                model_dir, local_files_only=True
            )
            model = transformers.Florence2ForConditionalGeneration.from_pretrained(
                model_dir, local_files_only=True, dtype=self.dtype
            )
            self.model: Any = model.to(device).eval()
        except INTERRUPTS:
            raise  # a time limit during the load is not a broken model folder
        except Exception as exc:  # OSError, ValueError, safetensors errors, CUDA out of memory, ...
            raise ConfigError(
                f"Florence-2 could not be loaded from {model_dir} ({type(exc).__name__}: {exc}); if its "
                f"files are damaged, {REPULL_HINT}"
            ) from exc
        eos = self.model.generation_config.eos_token_id
        self._eos_ids: frozenset[int] = frozenset(eos if isinstance(eos, list) else [eos])
        log.info("loaded Florence-2 from %s on %s (%s)", model_dir, device, self.dtype)

    def caption(self, images: Sequence[Image.Image]) -> list[Caption]:
        """One caption per RGB image, in order, from one generate() call.  Raises ModelError when the
        model cannot run on them."""
        if not images:
            return []
        torch = self._torch
        started = time.perf_counter()
        inputs = self.processor(text=[self.TASK] * len(images), images=list(images), return_tensors="pt")
        prepared = time.perf_counter()
        try:
            with torch.inference_mode():
                sequences = self.model.generate(
                    input_ids=inputs["input_ids"].to(self.device),
                    attention_mask=inputs["attention_mask"].to(self.device),
                    pixel_values=inputs["pixel_values"].to(self.device, self.dtype),
                    max_new_tokens=self.max_new_tokens,
                    max_time=self.max_time_s,
                    num_beams=self.num_beams,
                    do_sample=False,
                    forced_eos_token_id=None,
                )
        except INTERRUPTS:
            raise
        except Exception as exc:  # torch raises untyped errors (CUDA out of memory, shape mismatches)
            raise ModelError(f"Florence-2 failed on a batch of {len(images)}: {exc}") from exc
        generated = time.perf_counter()
        rows: list[list[int]] = sequences.tolist()
        ended = [until_eos(row, self._eos_ids) for row in rows]
        texts = self.processor.batch_decode([row for row, _ in ended], skip_special_tokens=False)
        captions = [
            self.processor.post_process_generation(text, task=self.TASK, image_size=image.size)[self.TASK]
            for text, image in zip(texts, images, strict=True)
        ]
        decoded = time.perf_counter()
        timings = {
            "preprocess": (prepared - started) * MS_PER_S,
            "generate": (generated - prepared) * MS_PER_S,
            "decode": (decoded - generated) * MS_PER_S,
        }
        return [
            Caption(text=str(text), truncated=not finished, timings_ms=dict(timings))
            for text, (_, finished) in zip(captions, ended, strict=True)
        ]


def until_eos(row: Sequence[int], eos_ids: Collection[int]) -> tuple[list[int], bool]:
    """A generated row up to and including its first end-of-sequence token, and whether it has one.

    The first token is the decoder's start token, which for BART is `</s>` itself: it does not count."""
    for position in range(1, len(row)):
        if row[position] in eos_ids:
            return list(row[: position + 1]), True
    return list(row), False


def check_model_dir(model_dir: Path) -> None:
    """ConfigError naming what is missing when `model_dir` is not a complete Florence-2 snapshot."""
    if not model_dir.is_dir():
        raise ConfigError(f"the Florence-2 caption model is not at {model_dir}; {PULL_HINT}")
    missing = [name for name in (CONFIG_FILE,) if not (model_dir / name).is_file()]
    missing += _missing_weights(model_dir)
    missing += [
        " or ".join(names) for names in SUPPORT_FILES if not any((model_dir / n).is_file() for n in names)
    ]
    if missing:
        raise ConfigError(
            f"the Florence-2 caption model at {model_dir} is incomplete (no {', '.join(missing)}); "
            f"{REPULL_HINT}"
        )


def _missing_weights(model_dir: Path) -> list[str]:
    if (model_dir / SINGLE_WEIGHTS).is_file():
        return []
    index = model_dir / SHARD_INDEX
    if not index.is_file():
        return [SINGLE_WEIGHTS]
    try:
        shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        return [f"readable {SHARD_INDEX} ({exc})"]
    return sorted(str(s) for s in shards if not (model_dir / str(s)).is_file())


def _runtime() -> tuple[Any, Any]:
    """torch and transformers, or ConfigError saying to install them."""
    try:
        import torch
        import transformers
    except Exception as exc:  # ImportError, or OSError from a native library torch cannot load
        raise ConfigError(f"the caption stage needs torch and transformers ({exc}); {INSTALL_HINT}") from exc
    if not hasattr(transformers, "Florence2ForConditionalGeneration"):
        raise ConfigError(
            f"transformers {transformers.__version__} has no native Florence-2 classes; {INSTALL_HINT}"
        )
    return torch, transformers
