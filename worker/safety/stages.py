"""Running a job's safety stages on one image, with this process's detectors (made after fork, reused).

A stage never fails the item: a stage that cannot run on this worker is `missing`, one that raises is
`failed`, and the gate's policy decides what either means (default `review`).  Time limits pass through.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

from PIL import Image

from cutout_fleet.config.settings import Settings
from cutout_fleet.errors import ConfigError
from cutout_fleet.safety.levels import level_stages
from cutout_fleet.safety.verdict import ModelRef, StageResult, StageStatus
from cutout_fleet.worker.interrupts import INTERRUPTS
from cutout_fleet.worker.safety.detector import NudeNetDetector

log = logging.getLogger(__name__)

MS_PER_S = 1000.0


@dataclass(frozen=True)
class StageRun:
    """What `SafetyStages.run` hands to `build_verdict`: results by stage, the models that ran, times."""

    stages: dict[str, StageResult]
    models: tuple[ModelRef, ...]
    timings_ms: dict[str, float] = field(default_factory=dict)


class SafetyStages:
    """This process's safety detectors, loaded on first use; a child made by fork loads its own."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pid = os.getpid()
        self._nudenet: NudeNetDetector | None = None
        self._nudenet_problem: str | None = None

    def nudenet(self) -> NudeNetDetector:
        """The detector, loaded once; ConfigError (remembered, not retried per image) when it cannot be."""
        if os.getpid() != self._pid:
            # onnxruntime's thread pools do not survive a fork: a child starts over.
            self._nudenet, self._nudenet_problem, self._pid = None, None, os.getpid()
        if self._nudenet_problem is not None:
            raise ConfigError(self._nudenet_problem)
        if self._nudenet is None:
            worker = self.settings.worker
            try:
                self._nudenet = NudeNetDetector(
                    providers=worker.providers, intra_op_threads=worker.intra_op_threads
                )
            except ConfigError as exc:
                self._nudenet_problem = str(exc)
                raise
        return self._nudenet

    def run(self, level: str, image: Image.Image) -> StageRun:
        """Every stage `level` asks for, on `image` (RGB, EXIF-oriented: `decode_image(...).rgb`)."""
        stages: dict[str, StageResult] = {}
        models: list[ModelRef] = []
        timings: dict[str, float] = {}
        for name in level_stages(level):
            started = time.perf_counter()
            if name == "nudenet":
                result, model = self._run_nudenet(image)
            else:
                result, model = StageResult.missing(f"this worker has no runner for stage {name!r}"), None
            timings[name] = (time.perf_counter() - started) * MS_PER_S
            stages[name] = result
            if model is not None:
                models.append(model)
        return StageRun(stages, tuple(models), timings)

    def _run_nudenet(self, image: Image.Image) -> tuple[StageResult, ModelRef | None]:
        started = time.perf_counter()
        try:
            detector = self.nudenet()
        except ConfigError as exc:
            return StageResult.missing(str(exc)), None
        loaded_ms = (time.perf_counter() - started) * MS_PER_S
        try:
            found = detector.detect(image)
        except INTERRUPTS:
            raise
        except Exception as exc:  # any fault of the stage is evidence the gate weighs, not an item failure
            log.warning("NudeNet failed: %s", exc, exc_info=True)
            return StageResult.failed(
                f"{type(exc).__name__}: {exc}", model=detector.model.id, timings_ms={"load": loaded_ms}
            ), detector.model
        return StageResult(
            status=StageStatus.OK,
            model=detector.model.id,
            detections=found.detections,
            timings_ms={"load": loaded_ms, **found.timings_ms},
        ), detector.model
