"""NudeNet, for real: the `nudenet` wheel's 320n detector on our own session, on the sample photos.

Needs the `safety-light` extra, which the README's test command and .ci/run install: without it these
tests fail (they never skip).
"""

from __future__ import annotations

import hashlib
import io
from importlib import metadata, resources
from pathlib import Path

import nudenet  # the safety-light extra: the README's test command and .ci/run install it
import onnxruntime as ort
import pytest
from PIL import Image

from cutout_fleet.config.settings import Settings
from cutout_fleet.errors import ConfigError
from cutout_fleet.safety import STAGE_MODELS, StageStatus
from cutout_fleet.safety.labels import NUDENET_LABELS
from cutout_fleet.worker.control import fleet_reply
from cutout_fleet.worker.imaging.decode import decode_image
from cutout_fleet.worker.safety import detector as detector_module
from cutout_fleet.worker.safety import stages as stages_module
from cutout_fleet.worker.safety.capabilities import safety_levels
from cutout_fleet.worker.safety.detector import MAX_SIDE_PX, NudeNetDetector
from cutout_fleet.worker.safety.stages import SafetyStages
from tests.support.paths import sample_images

CPU = ["CPUExecutionProvider"]
FACES = {"FACE_FEMALE", "FACE_MALE"}
EXIF_ORIENTATION = 0x0112
ROTATED_90_CW = 6  # the camera was turned: show the pixels turned 90 degrees clockwise
MAX_PIXELS = 64_000_000


@pytest.fixture(scope="module")
def detector() -> NudeNetDetector:
    return NudeNetDetector(providers=CPU, intra_op_threads=1)


def photo_path(name: str) -> Path:
    return next(p for p in sample_images() if p.name == name)


def photo(name: str) -> Image.Image:
    """The photo as the pipeline hands it over: decoded, EXIF-oriented, RGB."""
    path = photo_path(name)
    return decode_image(path.read_bytes(), max_pixels=MAX_PIXELS, name=name).rgb


def test_it_finds_a_face_on_the_astronaut_inside_the_image() -> None:
    # Given the astronaut photo, decoded as the pipeline decodes it
    image = photo("astronaut.png")
    width, height = image.size

    # When NudeNet runs on it
    found = NudeNetDetector(providers=CPU).detect(image).detections

    # Then it finds a face, with a box inside the image, in the photo's own pixels
    faces = [d for d in found if d.label in FACES]
    assert faces, found
    x, y, w, h = faces[0].box
    assert x >= 0 and y >= 0 and w > 0 and h > 0
    assert x + w <= width and y + h <= height
    assert 0.3 < faces[0].score <= 1.0


@pytest.mark.parametrize("name", ["astronaut.png", "chelsea.png", "coffee.png"])
def test_it_finds_what_nudenet_itself_finds(name: str, detector: NudeNetDetector) -> None:
    # Given NudeNet's own detector, reading the file itself (PNG: both decoders give the same pixels)
    theirs = nudenet.NudeDetector().detect(str(photo_path(name)))

    # When ours runs on the decoded image
    ours = detector.detect(photo(name)).detections

    # Then both find the same things at the same places (scores to float precision across thread counts)
    assert [d.label for d in ours] == [t["class"] for t in theirs]
    assert [list(d.box) for d in ours] == [t["box"] for t in theirs]
    assert [d.score for d in ours] == pytest.approx([t["score"] for t in theirs], abs=1e-4)


def test_it_runs_on_the_image_after_exif_orientation(detector: NudeNetDetector) -> None:
    # Given the astronaut stored lying on its side, with an EXIF tag that says to turn it upright
    upright = photo("astronaut.png")
    sideways = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATED_90_CW
    buffer = io.BytesIO()
    sideways.save(buffer, "JPEG", quality=95, exif=exif.tobytes())

    # When the file is decoded as the pipeline decodes it, and NudeNet runs on that
    decoded = decode_image(buffer.getvalue(), max_pixels=MAX_PIXELS).rgb
    found = detector.detect(decoded).detections

    # Then the face is where it is in the upright photo
    assert decoded.size == upright.size
    (expected,) = [d for d in detector.detect(upright).detections if d.label in FACES]
    faces = [d for d in found if d.label == expected.label]
    assert faces, found
    assert faces[0].box == pytest.approx(expected.box, abs=6)


def test_a_large_image_is_reduced_first_and_boxes_stay_in_its_pixels(detector: NudeNetDetector) -> None:
    # Given the astronaut at 5 times its size: a longer side than NudeNet is handed whole
    small = photo("astronaut.png")
    factor = 5
    large = small.resize((small.width * factor, small.height * factor), Image.Resampling.BICUBIC)
    assert max(large.size) > MAX_SIDE_PX

    # When NudeNet runs on it
    found = detector.detect(large).detections

    # Then it finds the face where it is in the large image
    (expected,) = [d for d in detector.detect(small).detections if d.label in FACES]
    faces = [d for d in found if d.label == expected.label]
    assert faces, found
    assert faces[0].box == pytest.approx([v * factor for v in expected.box], abs=3 * factor)


def test_the_pinned_model_is_the_one_the_wheel_ships(detector: NudeNetDetector) -> None:
    pinned = STAGE_MODELS["nudenet"]
    data = resources.files("nudenet").joinpath(pinned.file).read_bytes()

    assert hashlib.sha256(data).hexdigest() == pinned.sha256
    assert metadata.version("nudenet") == pinned.version
    assert detector.model.id == "nudenet-320n" and detector.model.sha256 == pinned.sha256
    assert detector.model.revision == pinned.version and detector.model.providers == ("CPUExecutionProvider",)


def test_the_policy_knows_exactly_nudenets_labels() -> None:
    from nudenet import nudenet as functions

    assert tuple(vars(functions)["__labels"]) == NUDENET_LABELS


def test_the_session_uses_the_workers_providers_and_falls_back_to_the_cpu() -> None:
    # Given providers with one this machine's onnxruntime does not have first (CUDA on a CPU build)
    found = NudeNetDetector(providers=["NoSuchExecutionProvider", *CPU])

    # Then the session runs on what is there
    assert found.providers == CPU


def test_without_providers_set_it_takes_cuda_where_there_is_one_else_the_cpu() -> None:
    found = NudeNetDetector(providers=[])

    expected = (
        ["CUDAExecutionProvider", *CPU] if "CUDAExecutionProvider" in ort.get_available_providers() else CPU
    )
    assert found.providers == expected


def test_a_worker_with_nudenet_advertises_light() -> None:
    assert safety_levels() == ("none", "light")


def test_the_control_reply_carries_the_safety_levels() -> None:
    reply = fleet_reply(Settings(), ["cpu"], 1)

    assert reply["safety"] == ["none", "light"] and reply["queues"] == ["cpu"]


# --- The stage runner --------------------------------------------------------------------------------------


def test_the_light_stage_gives_detections_the_model_and_timings() -> None:
    run = SafetyStages(Settings(worker={"providers": CPU, "intra_op_threads": 1})).run(
        "light", photo("astronaut.png")
    )

    stage = run.stages["nudenet"]
    assert stage.status is StageStatus.OK and stage.model == "nudenet-320n"
    assert {d.label for d in stage.detections} & FACES
    assert {"load", "preprocess", "inference", "postprocess"} <= set(stage.timings_ms)
    assert [m.id for m in run.models] == ["nudenet-320n"] and run.timings_ms["nudenet"] > 0


def test_a_worker_that_cannot_load_nudenet_records_the_stage_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts = []

    def unavailable(**_: object) -> NudeNetDetector:
        attempts.append(1)
        raise ConfigError("nudenet is not usable here (No module named 'cv2')")

    monkeypatch.setattr(stages_module, "NudeNetDetector", unavailable)
    stages = SafetyStages(Settings())

    first = stages.run("light", photo("chelsea.png")).stages["nudenet"]
    second = stages.run("light", photo("chelsea.png")).stages["nudenet"]

    assert first.status is StageStatus.MISSING and "No module named 'cv2'" in (first.error or "")
    assert second == first and len(attempts) == 1  # tried once per process, not once per image


def test_a_detector_that_raises_records_the_stage_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    stages = SafetyStages(Settings(worker={"providers": CPU, "intra_op_threads": 1}))
    detector = stages.nudenet()

    def broken(_: Image.Image) -> detector_module.DetectorRun:
        raise RuntimeError("onnxruntime exploded")

    monkeypatch.setattr(detector, "detect", broken)
    run = stages.run("light", photo("chelsea.png"))

    stage = run.stages["nudenet"]
    assert stage.status is StageStatus.FAILED and stage.error == "RuntimeError: onnxruntime exploded"
    assert [m.id for m in run.models] == ["nudenet-320n"]


def test_level_none_runs_nothing() -> None:
    run = SafetyStages(Settings()).run("none", photo("chelsea.png"))

    assert run.stages == {} and run.models == ()
