"""Where tests find the sample photos, the golden masks and the real model, without absolute paths."""

from __future__ import annotations

import os
from pathlib import Path

from cutout_fleet.config.settings import Settings

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = TESTS_DIR.parent
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")


def sample_images_dir() -> Path:
    """The repository's sample photos (copies of the shared images; see examples/photos/README.md)."""
    return REPO_ROOT / "examples" / "photos"


def sample_images() -> list[Path]:
    return sorted(p for p in sample_images_dir().iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)


def golden_masks_dir(model: str) -> Path:
    """Masks that the reference implementation produced for the sample photos (tests/data/golden/)."""
    return TESTS_DIR / "data" / "golden" / model


def real_model_dir() -> Path | None:
    """CUTOUT_MODEL_DIR when set, else the shared models folder beside the repository (where CI keeps it),
    else the default model dir that `cutout models pull` fills."""
    configured = os.environ.get("CUTOUT_MODEL_DIR")
    if configured:
        return Path(configured)
    shared = REPO_ROOT.parent / "shared" / "models"
    if shared.is_dir():
        return shared
    pulled = Path(Settings.model_fields["model_dir"].get_default(call_default_factory=True))
    return pulled if pulled.is_dir() else None
