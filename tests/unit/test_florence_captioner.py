"""The Florence-2 caption stage on a tiny random Florence-2 (tests/support/tiny_florence.py), on the CPU.

The tiny model is loaded by the same code, from the same folder layout, as florence-community/
Florence-2-large; its captions are word salad, so these tests check what the stage promises about them
(one per image, in order, batch-independent, truncation flagged), never their words.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from cutout_fleet.errors import ConfigError
from cutout_fleet.worker.safety.captioner import Caption, Florence2Captioner, until_eos
from tests.support.hidden_imports import run_without
from tests.support.paths import sample_images
from tests.support.tiny_florence import EOS_ID, PAD_ID, build_tiny_florence

# Different sizes and aspect ratios: 512 x 512, 451 x 300, 600 x 400.
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png")
MAX_NEW_TOKENS = 24  # enough to tell captions apart, short enough to stay quick
TIMINGS = {"preprocess", "generate", "decode"}


@pytest.fixture(scope="module", autouse=True)
def _torch_threads_restored() -> Iterator[None]:
    # `threads` sets torch's process-wide pool; these tests use one thread (a model this small runs
    # fastest on one, and steadiest when the machine is busy), then give the rest of the session its pool.
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def cpu_captioner(model_dir: Path, **options: Any) -> Florence2Captioner:
    return Florence2Captioner(model_dir, device="cpu", threads=1, **options)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_florence(tmp_path_factory.mktemp("florence") / "tiny-florence-2")


@pytest.fixture(scope="module")
def captioner(tiny_dir: Path) -> Florence2Captioner:
    return cpu_captioner(tiny_dir, max_new_tokens=MAX_NEW_TOKENS)


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    paths = {p.name: p for p in sample_images()}
    return [Image.open(paths[name]).convert("RGB") for name in PHOTOS]


def copy_of(tiny_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_dir, tmp_path / "copy"))


def test_it_captions_a_batch_of_photos_of_different_sizes(
    captioner: Florence2Captioner, photos: list[Image.Image]
) -> None:
    # Given three photos of different sizes
    assert len({photo.size for photo in photos}) == 3

    # When they are captioned as one micro-batch
    captions = captioner.caption(photos)

    # Then each gets a Caption with text and the batch's timings
    assert len(captions) == 3
    for caption in captions:
        assert isinstance(caption, Caption)
        assert isinstance(caption.text, str) and caption.text
        assert caption.timings_ms.keys() >= TIMINGS
        assert all(ms >= 0 for ms in caption.timings_ms.values())
    # and the image, not only the prompt, shapes them
    assert len({caption.text for caption in captions}) == 3


def test_it_loads_on_the_cpu_in_float32_without_cuda(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    captioner = Florence2Captioner(tiny_dir)

    assert captioner.device == "cpu"
    assert captioner.model.dtype == torch.float32
    assert not captioner.model.training


def test_threads_sets_the_size_of_torchs_cpu_pool(tiny_dir: Path) -> None:
    torch.set_num_threads(2)

    cpu_captioner(tiny_dir)

    assert torch.get_num_threads() == 1


def test_asking_for_cuda_without_cuda_is_a_config_error(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    with pytest.raises(ConfigError, match="no CUDA"):
        Florence2Captioner(tiny_dir, device="cuda")


def test_a_micro_batch_gives_each_image_the_caption_it_gets_alone(
    captioner: Florence2Captioner, photos: list[Image.Image]
) -> None:
    # Greedy decoding, the same prompt in every row and images resized to one square: no row is
    # padded, so in float32 on the CPU a row's tokens do not depend on its neighbours.
    batched = captioner.caption(photos)
    alone = [captioner.caption([photo])[0] for photo in photos]

    assert [(c.text, c.truncated) for c in batched] == [(c.text, c.truncated) for c in alone]


def test_captions_come_back_in_the_order_of_the_images(
    captioner: Florence2Captioner, photos: list[Image.Image]
) -> None:
    forwards = captioner.caption(photos)
    backwards = captioner.caption(photos[::-1])

    assert [c.text for c in backwards] == [c.text for c in forwards][::-1]


def test_a_caption_cut_at_max_new_tokens_is_truncated(tiny_dir: Path, photos: list[Image.Image]) -> None:
    # The random model never says </s>: every caption runs into the limit.
    short = cpu_captioner(tiny_dir, max_new_tokens=3)

    captions = short.caption(photos)

    assert [c.truncated for c in captions] == [True, True, True]


def test_a_caption_cut_by_max_time_is_truncated(tiny_dir: Path, photos: list[Image.Image]) -> None:
    # The time limit is checked after each decoding step: a microsecond stops it after the first,
    # which is the forced <s>, so the caption is empty and marked as cut.
    hurried = cpu_captioner(tiny_dir, max_new_tokens=256, max_time_s=1e-6)

    captions = hurried.caption(photos[:2])

    assert [(c.text, c.truncated) for c in captions] == [("", True), ("", True)]


def test_a_caption_that_ends_with_eos_is_complete(tmp_path: Path, photos: list[Image.Image]) -> None:
    # Given a model that says </s> right after the forced <s>
    quiet = cpu_captioner(build_tiny_florence(tmp_path / "quiet", ends_at_once=True))

    captions = quiet.caption(photos[:2])

    assert [(c.text, c.truncated) for c in captions] == [("", False), ("", False)]


def test_beam_search_gives_one_caption_per_image(tiny_dir: Path, photos: list[Image.Image]) -> None:
    beams = cpu_captioner(tiny_dir, max_new_tokens=8, num_beams=2)

    captions = beams.caption(photos)

    assert len(captions) == 3
    assert all(isinstance(c.text, str) and c.truncated for c in captions)


def test_no_images_give_no_captions(captioner: Florence2Captioner) -> None:
    assert captioner.caption([]) == []


def test_a_row_ends_at_its_first_eos_not_at_the_decoder_start() -> None:
    # generate() starts every row with the decoder start token, which for BART is </s> itself, and pads
    # the rows of a batch that ended early.
    eos = {EOS_ID}
    ended = [EOS_ID, 0, 57, 88, EOS_ID, PAD_ID, PAD_ID]
    cut = [EOS_ID, 0, 57, 88, 91, 13, 40]

    assert until_eos(ended, eos) == ([EOS_ID, 0, 57, 88, EOS_ID], True)
    assert until_eos(cut, eos) == (cut, False)


def test_a_missing_folder_is_a_config_error_naming_models_pull(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cutout models pull florence-2-large") as caught:
        Florence2Captioner(tmp_path / "never-pulled")

    assert str(tmp_path / "never-pulled") in str(caught.value)


def test_a_folder_without_its_weights_is_a_config_error(tiny_dir: Path, tmp_path: Path) -> None:
    # Given a snapshot whose weights were deleted
    folder = copy_of(tiny_dir, tmp_path)
    (folder / "model.safetensors").unlink()

    # Then loading it names the missing file and the command that fetches it again
    with pytest.raises(
        ConfigError, match=r"incomplete \(no model\.safetensors\).*cutout models pull --force"
    ):
        Florence2Captioner(folder)


def test_a_sharded_snapshot_missing_a_shard_is_a_config_error(tiny_dir: Path, tmp_path: Path) -> None:
    folder = copy_of(tiny_dir, tmp_path)
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))

    with pytest.raises(ConfigError, match=r"model-00002-of-00002\.safetensors"):
        Florence2Captioner(folder)


def test_a_folder_without_its_tokenizer_is_a_config_error(tiny_dir: Path, tmp_path: Path) -> None:
    folder = copy_of(tiny_dir, tmp_path)
    (folder / "tokenizer.json").unlink()

    with pytest.raises(ConfigError, match=r"tokenizer\.json"):
        Florence2Captioner(folder)


def test_damaged_weights_are_a_config_error(tiny_dir: Path, tmp_path: Path) -> None:
    folder = copy_of(tiny_dir, tmp_path)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")

    with pytest.raises(ConfigError, match=r"could not be loaded.*cutout models pull --force"):
        Florence2Captioner(folder)


def test_the_module_imports_without_torch_and_asks_for_the_extra(tiny_dir: Path) -> None:
    # A CPU worker has neither torch nor transformers: importing the stage must work, making it must
    # say what to install.
    done = run_without(
        ["torch", "transformers"],
        f"""
        from pathlib import Path
        from cutout_fleet.errors import ConfigError
        from cutout_fleet.worker.safety.captioner import Florence2Captioner
        try:
            Florence2Captioner(Path({str(tiny_dir)!r}))
        except ConfigError as exc:
            print(exc)
        """,
    )

    assert done.returncode == 0, done.stderr
    assert "safety-full" in done.stdout
