"""The ben2 spec against a tiny ONNX model with exactly the official BEN2_Base.onnx contract: one float32
input fed RGB / 255 with no mean/std, one float16 output that is already a probability."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cutout_fleet.catalog import Catalog, ModelSpec, load_catalog
from cutout_fleet.config.settings import Settings
from cutout_fleet.errors import ConfigError
from cutout_fleet.worker.imaging.prep import mask_to_size, smart_resize
from cutout_fleet.worker.models.runner import ModelSession
from tests.support.paths import sample_images
from tests.support.tiny_models import (
    BEN2_MODEL,
    CHANNEL_WEIGHT,
    NOT_CONTRACT,
    PRIOR_CENTRE,
    PRIOR_FALLOFF,
    builtin_spec,
    write_tiny_models,
)

CPU = ["CPUExecutionProvider"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def catalog(model_dir: Path) -> Catalog:
    catalog_file = write_tiny_models(model_dir)
    return load_catalog(Settings(model_dir=model_dir, model_catalog=catalog_file))


@pytest.fixture
def session(catalog: Catalog, model_dir: Path) -> ModelSession:
    return ModelSession(catalog.get(BEN2_MODEL), model_dir, providers=CPU)


def photo(name: str = "chelsea.png") -> Image.Image:
    path = next(p for p in sample_images() if p.name == name)
    return Image.open(path).convert("RGB")


def tiny_ben2_mask(pixels: np.ndarray) -> np.ndarray:
    """What tiny-ben2 computes from a [H, W, 3] input, min-maxed: its graph, in numpy."""
    height, width = pixels.shape[:2]
    v = np.linspace(-1.0, 1.0, height)[:, None]
    u = np.linspace(-1.0, 1.0, width)[None, :]
    logits = CHANNEL_WEIGHT * pixels.sum(axis=2) + PRIOR_CENTRE - PRIOR_FALLOFF * (u**2 + v**2)
    probability = (1.0 / (1.0 + np.exp(-logits))).astype(np.float16).astype(np.float64)
    return (probability - probability.min()) / (probability.max() - probability.min())


def test_the_ben2_spec_feeds_rgb_over_255_and_reads_a_float16_probability() -> None:
    spec = builtin_spec("ben2")

    assert spec.input_size == (1024, 1024) and spec.input_dtype == "float32"
    assert spec.input_name is None  # not documented: the runner feeds the file's only input
    assert spec.scale == "255" and spec.mean is None and spec.std is None
    assert (spec.output_index, spec.output_dtype, spec.activation) == (0, "float16", "none")


def test_tiny_ben2_carries_the_ben2_contract(catalog: Catalog, session: ModelSession) -> None:
    tiny, real = catalog.get(BEN2_MODEL).model_dump(), builtin_spec("ben2").model_dump()
    contract = {key for key in real if key not in NOT_CONTRACT}

    assert {k: tiny[k] for k in contract} == {k: real[k] for k in contract}
    inputs, outputs = session.session.get_inputs(), session.session.get_outputs()
    assert [(i.type, i.shape) for i in inputs] == [("tensor(float)", [1, 3, 1024, 1024])]
    assert [(o.type, o.shape) for o in outputs] == [("tensor(float16)", [1, 1, 1024, 1024])]


def test_predict_feeds_pixels_over_255_without_mean_or_std(session: ModelSession) -> None:
    image = photo()
    pixels = np.asarray(smart_resize(image, (1024, 1024)), dtype=np.float64) / 255.0

    mask = session.predict(image)

    np.testing.assert_allclose(mask, tiny_ben2_mask(pixels), atol=2e-3)
    # With ImageNet's mean/std (BiRefNet's prep) the same photo gives a visibly different mask
    normalised = (pixels - IMAGENET_MEAN) / IMAGENET_STD
    assert np.abs(mask - tiny_ben2_mask(normalised)).max() > 0.1


def test_the_float16_output_becomes_a_float32_mask_in_0_1_at_the_original_size(session: ModelSession) -> None:
    image = photo()

    raw = session.session.run(None, {session.input_name: _fed(session, image)})[0]
    mask = session.predict(image)
    full = mask_to_size(mask, image.size)

    assert raw.dtype == np.float16
    assert mask.dtype == np.float32 and mask.shape == (1024, 1024)
    assert mask.min() == 0.0 and mask.max() == 1.0  # min-max, no sigmoid on top of the probability
    expected = raw.astype(np.float32).reshape(1024, 1024)
    np.testing.assert_allclose(
        mask, (expected - expected.min()) / (expected.max() - expected.min()), atol=1e-6
    )
    assert full.dtype == np.float32 and full.shape == (image.height, image.width)
    assert full.min() >= 0.0 and full.max() <= 1.0


def test_a_float32_output_under_the_float16_contract_is_refused(catalog: Catalog, model_dir: Path) -> None:
    # tiny-u2netp returns float32: a spec that promises ben2's float16 output does not fit that file
    spec = ModelSpec(**{**catalog.get("tiny-u2netp").model_dump(), "output_dtype": "float16"})

    with pytest.raises(ConfigError, match=r"tensor\(float\), the spec says float16"):
        ModelSession(spec, model_dir, providers=CPU)


def _fed(session: ModelSession, image: Image.Image) -> np.ndarray:
    """The tensor predict() feeds, built here from the spec without the runner."""
    pixels = np.asarray(smart_resize(image, session.spec.input_size), dtype=np.float32) / 255.0
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[np.newaxis])
