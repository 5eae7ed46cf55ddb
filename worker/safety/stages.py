"""Running a job's safety stages on one image, with this process's models (made after fork, reused).

A stage never fails the item: a stage that cannot run on this worker is `missing`, one that raises (or,
for the classifier, answers late or malformed) is `failed`, and the gate's policy decides what either
means (default `review`).  Time limits pass through.

Level `full` runs NudeNet, then the Florence-2 caption, then the Llama classifier, which reads the
caption and NudeNet's detections.  Each model is loaded once per process, on first use or by `warm_up`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from PIL import Image

from cutout_fleet.config.settings import Settings
from cutout_fleet.errors import ConfigError
from cutout_fleet.safety.levels import level_stages
from cutout_fleet.safety.verdict import Detection, ModelRef, StageResult, StageStatus
from cutout_fleet.worker.interrupts import INTERRUPTS
from cutout_fleet.worker.safety.captioner import Caption, Florence2Captioner
from cutout_fleet.worker.safety.classifier import LlamaClassifier
from cutout_fleet.worker.safety.detector import NudeNetDetector
from cutout_fleet.worker.safety.hub_models import caption_model_ref, classifier_model_ref

log = logging.getLogger(__name__)

MS_PER_S = 1000.0
RAW_ANSWER_MAX_CHARS = 4000  # what a verdict keeps of a classifier answer it could not use
# Florence-2 sees 768 x 768 whatever it is given: a source is first reduced by a whole factor to at most
# this side, so a micro-batch holds small images, and a caption made alone or in a batch sees the same
# pixels.
CAPTION_INPUT_MAX_SIDE_PX = 1536

T = TypeVar("T")


@dataclass(frozen=True)
class StageRun:
    """What `SafetyStages.run` hands to `build_verdict`: results by stage, the models that ran, times."""

    stages: dict[str, StageResult]
    models: tuple[ModelRef, ...]
    timings_ms: dict[str, float] = field(default_factory=dict)


class _PerProcess(Generic[T]):
    """One model, loaded on first use in this process; a load that failed is remembered (ConfigError
    again, not a retry per image).  A child made by fork starts over: neither onnxruntime's thread
    pools, torch's CUDA context nor llama.cpp's state survive a fork."""

    def __init__(self, load: Callable[[], T]) -> None:
        self._load = load
        self._pid = os.getpid()
        self._value: T | None = None
        self._problem: str | None = None

    def get(self) -> T:
        if os.getpid() != self._pid:
            self._value, self._problem, self._pid = None, None, os.getpid()
        if self._problem is not None:
            raise ConfigError(self._problem)
        if self._value is None:
            try:
                self._value = self._load()
            except ConfigError as exc:
                self._problem = str(exc)
                raise
        return self._value


class SafetyStages:
    """This process's safety models, each loaded once, on first use (or `warm_up`), with the ModelRef
    the verdict names it by (worked out at load: per image it would read the pull record again)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._nudenet: _PerProcess[tuple[NudeNetDetector, ModelRef]] = _PerProcess(self._load_nudenet)
        self._captioner: _PerProcess[tuple[Florence2Captioner, ModelRef]] = _PerProcess(self._load_captioner)
        self._classifier: _PerProcess[tuple[LlamaClassifier, ModelRef]] = _PerProcess(self._load_classifier)

    def _load_nudenet(self) -> tuple[NudeNetDetector, ModelRef]:
        worker = self.settings.worker
        detector = NudeNetDetector(providers=worker.providers, intra_op_threads=worker.intra_op_threads)
        return detector, detector.model

    def _load_captioner(self) -> tuple[Florence2Captioner, ModelRef]:
        settings, safety = self.settings, self.settings.safety
        captioner = Florence2Captioner(
            safety.caption_model.local_path(settings.model_dir),
            max_new_tokens=safety.caption_max_new_tokens,
            max_time_s=safety.caption_timeout_s,
            threads=settings.worker.intra_op_threads or None,
        )
        return captioner, caption_model_ref(settings, captioner.device)

    def _load_classifier(self) -> tuple[LlamaClassifier, ModelRef]:
        settings, safety = self.settings, self.settings.safety
        classifier = LlamaClassifier(
            safety.classifier_model.local_path(settings.model_dir),
            n_ctx=safety.classifier_n_ctx,
            max_time_s=safety.classifier_timeout_s,
            n_threads=settings.worker.intra_op_threads or None,
        )
        return classifier, classifier_model_ref(settings, classifier.device)

    def nudenet(self) -> NudeNetDetector:
        """The detector, loaded once; ConfigError (remembered) when it cannot be."""
        return self._nudenet.get()[0]

    def captioner(self) -> Florence2Captioner:
        return self._captioner.get()[0]

    def classifier(self) -> LlamaClassifier:
        return self._classifier.get()[0]

    def warm_up(self, level: str) -> None:
        """Load every model `level` needs now (a worker's start), logging what cannot be loaded: the
        items will then record the stage as `missing`, with the same reason."""
        loaders: dict[str, Callable[[], object]] = {
            "nudenet": self.nudenet,
            "caption": self.captioner,
            "classifier": self.classifier,
        }
        for name in level_stages(level):
            try:
                loaders[name]()
            except ConfigError as exc:
                log.warning("safety stage %s cannot run on this worker: %s", name, exc)

    def run(
        self,
        level: str,
        image: Image.Image,
        *,
        attributes: Sequence[str] = (),
        caption: Caption | None = None,
    ) -> StageRun:
        """Every stage `level` asks for, on `image` (RGB, EXIF-oriented: `decode_image(...).rgb`).
        `caption`: this image's caption, already made in a micro-batch with its neighbours
        (worker/caption_batches.py); None: the caption stage makes it now."""
        stages: dict[str, StageResult] = {}
        models: list[ModelRef] = []
        timings: dict[str, float] = {}
        for name in level_stages(level):
            started = time.perf_counter()
            if name == "nudenet":
                result, model = self._run_nudenet(image)
            elif name == "caption":
                result, model = self._run_caption(image, caption)
            elif name == "classifier":
                result, model = self._run_classifier(stages, attributes)
            else:
                result, model = StageResult.missing(f"this worker has no runner for stage {name!r}"), None
            timings[name] = (time.perf_counter() - started) * MS_PER_S
            stages[name] = result
            if model is not None:
                models.append(model)
        return StageRun(stages, tuple(models), timings)

    def _run_nudenet(self, image: Image.Image) -> tuple[StageResult, ModelRef | None]:
        def detect(detector: NudeNetDetector, model: ModelRef) -> StageResult:
            found = detector.detect(image)
            return StageResult(
                status=StageStatus.OK,
                model=model.id,
                detections=found.detections,
                timings_ms=found.timings_ms,
            )

        return _run_stage("NudeNet", self._nudenet, detect)

    def _run_caption(self, image: Image.Image, given: Caption | None) -> tuple[StageResult, ModelRef | None]:
        def describe(captioner: Florence2Captioner, model: ModelRef) -> StageResult:
            (caption,) = [given] if given is not None else captioner.caption([caption_input(image)])
            return StageResult(
                status=StageStatus.OK,
                model=model.id,
                text=caption.text,
                truncated=caption.truncated,
                timings_ms=caption.timings_ms,
            )

        return _run_stage("Florence-2", self._captioner, describe)

    def _run_classifier(
        self, earlier: dict[str, StageResult], attributes: Sequence[str]
    ) -> tuple[StageResult, ModelRef | None]:
        caption = earlier.get("caption")
        nudenet = earlier.get("nudenet")
        detections: tuple[Detection, ...] = nudenet.detections if nudenet else ()

        def classify(classifier: LlamaClassifier, model: ModelRef) -> StageResult:
            answer = classifier.classify(caption.text if caption else None, detections, attributes)
            if answer.classification is None:
                return StageResult(
                    status=StageStatus.FAILED,
                    model=model.id,
                    error=answer.error or f"no usable answer ({answer.finish})",
                    raw_answer=answer.raw[:RAW_ANSWER_MAX_CHARS],
                    timings_ms=answer.timings_ms,
                )
            found = answer.classification
            return StageResult(
                status=StageStatus.OK,
                model=model.id,
                scores=dict(found.scores),
                explanations=dict(found.reasons),
                category=found.category,
                attributes=dict(found.attributes),
                timings_ms=answer.timings_ms,
            )

        return _run_stage("the classifier", self._classifier, classify)


def _run_stage(
    what: str, slot: _PerProcess[tuple[T, ModelRef]], work: Callable[[T, ModelRef], StageResult]
) -> tuple[StageResult, ModelRef | None]:
    """One stage: its model (`missing` when it cannot be loaded here), then `work`; whatever `work`
    raises is the stage's `failed` result, never an item failure (time limits pass through).  The load
    time (zero once loaded) joins the stage's own timings."""
    started = time.perf_counter()
    try:
        runner, model = slot.get()
    except ConfigError as exc:
        return StageResult.missing(str(exc)), None
    loaded = {"load": (time.perf_counter() - started) * MS_PER_S}
    try:
        result = work(runner, model)
    except INTERRUPTS:
        raise
    except Exception as exc:  # any fault of the stage is evidence the gate weighs
        log.warning("%s failed: %s", what, exc, exc_info=True)
        return StageResult.failed(f"{type(exc).__name__}: {exc}", model=model.id, timings_ms=loaded), model
    return result.model_copy(update={"timings_ms": {**loaded, **result.timings_ms}}), model


def caption_input(image: Image.Image) -> Image.Image:
    """The image the captioner is given (see CAPTION_INPUT_MAX_SIDE_PX): the same in every path."""
    factor = -(-max(image.size) // CAPTION_INPUT_MAX_SIDE_PX)  # ceiling division
    return image.reduce(factor) if factor > 1 else image
