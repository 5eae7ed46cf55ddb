"""NudeNet's detector (the `nudenet` wheel's 320n.onnx) on an onnxruntime session of our own.

`nudenet.NudeDetector` ignores its `providers` argument in 3.4.2 (the line is commented out), so the
session is made here, with the worker's providers and thread count, from the very bytes whose checksum
was checked.  The pre- and post-processing are NudeNet's own functions, called with arrays, so the
model sees exactly what `NudeDetector.detect(path)` would feed it:

- `_read_image`: pad the image at the bottom and right to a square (black), resize to 320 x 320
  (bilinear), scale to 0..1.  Given a file, NudeNet reads it with OpenCV (BGR) and its colour
  conversion and `swapRB` cancel out, so the model gets BGR planes: we hand it BGR too.
- `_postprocess`: YOLOv8 output rows (centre box + 18 class scores), kept at a score of 0.2 or more,
  scaled back to the source's pixels, clipped, then OpenCV's NMS (score 0.25, IoU 0.45); boxes are
  integer x, y, width, height.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image

from cutout_fleet.errors import ConfigError, ModelError
from cutout_fleet.safety.levels import NUDENET_320N
from cutout_fleet.safety.verdict import Detection, ModelRef
from cutout_fleet.worker.interrupts import INTERRUPTS
from cutout_fleet.worker.models.onnx_session import open_session
from cutout_fleet.worker.safety.capabilities import install_hint, read_model_file

log = logging.getLogger(__name__)

INPUT_SIZE_PX = 320
# NudeNet pads the image to a square at full size, and holds three copies of it (3 bytes a pixel
# each) while it does: for a 64 Mpx panorama that is gigabytes.  A longer side than this is first
# box-reduced by a whole factor; the model sees 320 px either way, and boxes still come back in the
# source's pixels (to within the factor).
MAX_SIDE_PX = 2048
MS_PER_S = 1000.0
# Without CUTOUT_WORKER__PROVIDERS, NudeNet takes CUDA where this onnxruntime has it (a GPU worker),
# else the CPU.
DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


@dataclass(frozen=True)
class DetectorRun:
    detections: tuple[Detection, ...]
    timings_ms: dict[str, float]


def _nudenet_functions() -> ModuleType:
    try:
        from nudenet import nudenet as functions
    except Exception as exc:  # ImportError, or OSError from a native library OpenCV cannot load
        raise ConfigError(f"nudenet is not usable here ({exc}); {install_hint('light')}") from exc
    module: ModuleType = functions  # nudenet ships no type information
    return module


class NudeNetDetector:
    """The loaded, checked 320n model.  Create once per process (after fork) and reuse for every image."""

    def __init__(self, *, providers: Sequence[str], intra_op_threads: int = 0) -> None:
        self._nudenet = _nudenet_functions()
        data = read_model_file(NUDENET_320N)
        self.session = open_session(
            data,
            providers or DEFAULT_PROVIDERS,
            intra_op_threads=intra_op_threads,
            what=f"NudeNet's {NUDENET_320N.file}",
        )
        del data
        self.input_name: str = self.session.get_inputs()[0].name
        self.providers: list[str] = self.session.get_providers()
        if providers and providers[0] not in self.providers:
            # As for the cutout models: onnxruntime falls back to the CPU without an error.
            log.warning("NudeNet asked for %s but runs on %s", providers[0], self.providers)
        self.model = ModelRef(
            stage=NUDENET_320N.stage,
            id=NUDENET_320N.id,
            revision=metadata.version(NUDENET_320N.package),
            sha256=NUDENET_320N.sha256,
            providers=tuple(self.providers),
        )
        log.info("loaded %s (nudenet %s) on %s", self.model.id, self.model.revision, self.providers)

    def detect(self, image: Image.Image) -> DetectorRun:
        """Everything NudeNet finds in an RGB image (EXIF orientation already applied), boxes in its
        pixels.  Raises ModelError when onnxruntime cannot run it."""
        started = time.perf_counter()
        width, height = image.size
        blob = self._model_input(image)
        prepared = time.perf_counter()
        try:
            outputs = self.session.run(None, {self.input_name: blob})
        except INTERRUPTS:
            raise  # a time limit that fired inside the model is a timeout, not a model failure
        except Exception as exc:  # onnxruntime raises untyped errors for inputs it cannot run
            raise ModelError(f"NudeNet failed on this image: {exc}") from exc
        inferred = time.perf_counter()
        side = max(width, height)
        found: list[dict[str, Any]] = self._nudenet._postprocess(
            outputs,
            side - width,  # the padding, in source pixels: boxes are scaled by side / 320
            side - height,
            side / width,
            side / height,
            width,
            height,
            INPUT_SIZE_PX,
            INPUT_SIZE_PX,
        )
        done = time.perf_counter()
        detections = tuple(
            Detection(label=str(d["class"]), score=float(d["score"]), box=_box(d["box"])) for d in found
        )
        timings = {
            "preprocess": (prepared - started) * MS_PER_S,
            "inference": (inferred - prepared) * MS_PER_S,
            "postprocess": (done - inferred) * MS_PER_S,
        }
        return DetectorRun(detections, timings)

    def _model_input(self, image: Image.Image) -> np.ndarray:
        factor = math.ceil(max(image.size) / MAX_SIDE_PX)
        small = image.reduce(factor) if factor > 1 else image
        rgb = small if small.mode == "RGB" else small.convert("RGB")
        bgr = np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])
        blob: np.ndarray = self._nudenet._read_image(bgr, INPUT_SIZE_PX)[0]
        return blob


def _box(values: Sequence[int]) -> tuple[int, int, int, int]:
    x, y, w, h = (int(v) for v in values)
    return x, y, w, h
