"""The full workflow's Hub models for tests: a tiny random Florence-2 and a tiny random Llama GGUF,
written where `HubModelPin.local_path` puts pulled models, with the settings that pin them."""

from __future__ import annotations

from pathlib import Path

from cutout_fleet.config.settings import HubModelPin
from tests.support.tiny_florence import build_tiny_florence
from tests.support.tiny_gguf import write_tiny_llama_gguf

CAPTION_PIN = HubModelPin(repo="tests/tiny-florence-2", revision="f" * 40)
CLASSIFIER_PIN = HubModelPin(repo="tests/tiny-llama", revision="e" * 40, file="tiny-llama.gguf")


def hub_settings(
    caption: HubModelPin = CAPTION_PIN, classifier: HubModelPin = CLASSIFIER_PIN
) -> dict[str, str]:
    """The environment that pins the tiny models: every field, since a nested setting replaces the
    default whole."""
    return {
        "CUTOUT_SAFETY__CAPTION_MODEL__REPO": caption.repo,
        "CUTOUT_SAFETY__CAPTION_MODEL__REVISION": caption.revision,
        "CUTOUT_SAFETY__CLASSIFIER_MODEL__REPO": classifier.repo,
        "CUTOUT_SAFETY__CLASSIFIER_MODEL__REVISION": classifier.revision,
        "CUTOUT_SAFETY__CLASSIFIER_MODEL__FILE": classifier.file or "",
    }


def install_tiny_hub_models(model_dir: Path) -> dict[str, str]:
    """Build both tiny models under `model_dir` (once: a second call finds them); `hub_settings()`."""
    florence = CAPTION_PIN.local_path(model_dir)
    if not (florence / "config.json").is_file():
        build_tiny_florence(florence)
    gguf = CLASSIFIER_PIN.local_path(model_dir)
    if not gguf.is_file():
        gguf.parent.mkdir(parents=True, exist_ok=True)
        write_tiny_llama_gguf(gguf)
    return hub_settings()
