"""The full workflow's Hub models as the verdict names them: id, pinned revision, checksum, device.

The pins come from settings (`SafetySettings.caption_model`, `classifier_model`); the checksum is the
one `cutout models pull` recorded (hashing a 6 GB GGUF at every process start would cost seconds).
"""

from __future__ import annotations

from cutout_fleet.config.settings import HubModelPin, Settings
from cutout_fleet.safety.verdict import ModelRef
from cutout_fleet.worker.models.hub_pull import main_file_sha256


def _ref(stage: str, pin: HubModelPin, settings: Settings, device: str) -> ModelRef:
    return ModelRef(
        stage=stage,
        id=pin.repo + (f"/{pin.file}" if pin.file else ""),
        revision=pin.revision,
        sha256=main_file_sha256(pin, settings.model_dir),
        providers=(device,),
    )


def caption_model_ref(settings: Settings, device: str) -> ModelRef:
    return _ref("caption", settings.safety.caption_model, settings, device)


def classifier_model_ref(settings: Settings, device: str) -> ModelRef:
    return _ref("classifier", settings.safety.classifier_model, settings, device)
