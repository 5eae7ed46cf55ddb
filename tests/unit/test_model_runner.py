"""The one runner (ModelSession) on tiny models that carry the real u2netp and BiRefNet contracts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cutout_fleet.catalog import Catalog, ModelSpec, load_catalog
from cutout_fleet.config.settings import Settings
from cutout_fleet.errors import ConfigError
from cutout_fleet.worker.imaging.prep import to_model_input
from cutout_fleet.worker.models.runner import ModelSession
from tests.support.paths import sample_images
from tests.support.tiny_models import (
    CONTRACT_SOURCES,
    NOT_CONTRACT,
    TINY_MODELS,
    builtin_spec,
    write_tiny_models,
)

CPU = ["CPUExecutionProvider"]
PHOTO = "chelsea.png"


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def catalog(model_dir: Path) -> Catalog:
    """The built-in catalogue plus the tiny models, loaded the way a worker loads it."""
    catalog_file = write_tiny_models(model_dir)
    return load_catalog(Settings(model_dir=model_dir, model_catalog=catalog_file))


def photo(name: str = PHOTO) -> Image.Image:
    path = next(p for p in sample_images() if p.name == name)
    return Image.open(path).convert("RGB")


def minmax(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float32).reshape(values.shape[-2:])
    return (values - values.min()) / (values.max() - values.min())


def raw_outputs(session: ModelSession, image: Image.Image) -> list[np.ndarray]:
    """Every output of the model for `image`, fed exactly as the spec says."""
    spec = session.spec
    tensor = to_model_input(image, spec.input_size, scale=spec.scale, mean=spec.mean, std=spec.std)
    return list(session.session.run(None, {session.input_name: tensor}))


def test_tiny_models_carry_the_real_contracts(catalog: Catalog) -> None:
    for name in TINY_MODELS:
        tiny, real = catalog.get(name).model_dump(), builtin_spec(CONTRACT_SOURCES[name]).model_dump()
        contract = {key for key in real if key not in NOT_CONTRACT}
        assert {k: tiny[k] for k in contract} == {k: real[k] for k in contract}, name


@pytest.mark.parametrize("name", TINY_MODELS)
def test_predict_gives_an_image_dependent_mask_at_the_input_size(
    catalog: Catalog, model_dir: Path, name: str
) -> None:
    spec = catalog.get(name)
    session = ModelSession(spec, model_dir, providers=CPU)

    masks = [session.predict(photo(p.name)) for p in sample_images()]

    width, height = spec.input_size
    for mask in masks:
        assert mask.dtype == np.float32 and mask.shape == (height, width)
        assert mask.min() >= 0.0 and mask.max() <= 1.0
        alpha = mask * 255.0
        assert (alpha < 50).mean() > 0.05 and (alpha > 200).mean() > 0.05  # a subject and a background
    assert not np.allclose(masks[0], masks[1], atol=0.05)  # the photo, not only the prior, shapes the mask


def test_u2netp_contract_reads_the_first_output_without_sigmoid(catalog: Catalog, model_dir: Path) -> None:
    session = ModelSession(catalog.get("tiny-u2netp"), model_dir, providers=CPU)
    image = photo()

    outputs = raw_outputs(session, image)
    mask = session.predict(image)

    assert len(outputs) == 7
    np.testing.assert_allclose(mask, minmax(outputs[0]), atol=1e-5)
    assert not np.allclose(mask, minmax(outputs[1]), atol=1e-2)


def test_birefnet_contract_applies_sigmoid_to_the_last_output(catalog: Catalog, model_dir: Path) -> None:
    session = ModelSession(catalog.get("tiny-birefnet"), model_dir, providers=CPU)
    image = photo()

    logits = raw_outputs(session, image)[-1]
    mask = session.predict(image)

    assert logits.shape == (1, 1, 1024, 1024)
    np.testing.assert_allclose(mask, minmax(1.0 / (1.0 + np.exp(-logits.astype(np.float64)))), atol=1e-5)
    # Sigmoid is monotonic, so only a visible gap proves it was applied rather than skipped.
    assert np.abs(mask - minmax(logits)).max() > 0.1


def test_a_tampered_model_file_is_refused(catalog: Catalog, model_dir: Path) -> None:
    spec = catalog.get("tiny-u2netp")
    path = spec.path_in(model_dir)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    with pytest.raises(ConfigError, match="sha256") as caught:
        ModelSession(spec, model_dir, providers=CPU)

    assert "cutout models pull tiny-u2netp" in str(caught.value)


def test_a_missing_model_file_says_how_to_pull_it(catalog: Catalog, model_dir: Path) -> None:
    spec = catalog.get("tiny-birefnet")
    spec.path_in(model_dir).unlink()

    with pytest.raises(ConfigError, match="cutout models pull tiny-birefnet"):
        ModelSession(spec, model_dir, providers=CPU)


def test_a_spec_naming_another_input_is_refused(catalog: Catalog, model_dir: Path) -> None:
    spec = _variant(catalog.get("tiny-birefnet"), input_name="image")

    with pytest.raises(ConfigError, match=r"'input_image'.*'image'"):
        ModelSession(spec, model_dir, providers=CPU)


def test_a_spec_with_another_input_size_is_refused(catalog: Catalog, model_dir: Path) -> None:
    spec = _variant(catalog.get("tiny-u2netp"), input_size=(512, 512))

    with pytest.raises(ConfigError, match="input shape"):
        ModelSession(spec, model_dir, providers=CPU)


def test_an_output_index_past_the_last_output_is_refused(catalog: Catalog, model_dir: Path) -> None:
    spec = _variant(catalog.get("tiny-u2netp"), output_index=7)

    with pytest.raises(ConfigError, match="output_index 7 but the file has 7 outputs"):
        ModelSession(spec, model_dir, providers=CPU)


def _variant(spec: ModelSpec, **changes: object) -> ModelSpec:
    """The same spec with some fields changed, validated like a catalogue entry."""
    return ModelSpec(**{**spec.model_dump(), **changes})
