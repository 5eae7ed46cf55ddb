"""Pulling the full workflow's Hub models (Florence-2 snapshot, Llama GGUF) from a loopback fake of the Hub,
through the real huggingface_hub: what lands where, the record, no second download, and clean failures."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from cutout_fleet.config.settings import HubModelPin, SafetySettings
from cutout_fleet.errors import ConfigError, ModelDownloadFailed
from cutout_fleet.worker.models.hub_pull import (
    HUB_ROUTES,
    PULL_RECORD,
    main_file_sha256,
    pull_hub_model,
    read_pull_record,
)
from tests.support.fake_hub import FakeHub, FakeRepo
from tests.support.hidden_imports import run_without

COMMIT = "4271c66b88cdbc05735372ec13b2360108de5317"
UNKNOWN_COMMIT = "0" * 40
WEIGHTS = bytes(range(256)) * 1024  # 256 KiB, the snapshot's largest file
GGUF = b"GGUF" + bytes(range(256)) * 512
SNAPSHOT_FILES = {
    "config.json": b'{"model_type": "florence2"}\n',
    "model.safetensors": WEIGHTS,
    "tokenizer/vocab.json": b'{"<s>": 0}\n',
}
GGUF_NAME = "Meta-Llama-3.1-8B-Instruct-Q5_K_M.gguf"
GGUF_REPO_FILES = {
    GGUF_NAME: GGUF,
    "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf": GGUF[:1000],
    "README.md": b"# x\n",
}
CAPTION = HubModelPin(repo="florence-community/Florence-2-large", revision=COMMIT)
CLASSIFIER = HubModelPin(repo="bartowski/Meta-Llama-3.1-8B-Instruct-GGUF", revision=COMMIT, file=GGUF_NAME)
PINS = pytest.mark.parametrize("pin", [CAPTION, CLASSIFIER], ids=["snapshot", "file"])


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def isolated_hub_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub's home, token and offline flag point at this test only, never at ~/.cache."""
    home = tmp_path / "hf-home"
    for name in ("HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "HF_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)  # loopback must not go through a proxy
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    constants = pytest.importorskip("huggingface_hub.constants")
    # It reads its environment once, at import: an earlier import must not keep the real home.
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_XET_CACHE", str(home / "xet"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    repos = [
        FakeRepo(CAPTION.repo, COMMIT, SNAPSHOT_FILES),
        FakeRepo(CLASSIFIER.repo, COMMIT, GGUF_REPO_FILES),
    ]
    with FakeHub(repos) as server:
        yield server


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


def assert_nothing_left(pin: HubModelPin, model_dir: Path) -> None:
    repo_folder = model_dir / "hub" / pin.repo.replace("/", "--")
    assert not pin.local_path(model_dir).exists()
    assert not repo_folder.exists() or list(repo_folder.iterdir()) == []


def test_snapshot_pin_pulls_every_file_into_its_local_path(hub: FakeHub, model_dir: Path) -> None:
    pull = pull_hub_model(CAPTION, model_dir, endpoint=hub.url)

    folder = CAPTION.local_path(model_dir)
    assert pull.path == folder
    assert {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} == {
        *SNAPSHOT_FILES,
        PULL_RECORD,
    }
    for name, data in SNAPSHOT_FILES.items():
        assert (folder / name).read_bytes() == data
    assert pull.files == {name: sha256(data) for name, data in SNAPSHOT_FILES.items()}
    assert pull.size_bytes == sum(len(data) for data in SNAPSHOT_FILES.values())


def test_file_pin_pulls_only_that_file(hub: FakeHub, model_dir: Path) -> None:
    pull = pull_hub_model(CLASSIFIER, model_dir, endpoint=hub.url)

    assert pull.path == CLASSIFIER.local_path(model_dir)
    assert pull.path.read_bytes() == GGUF
    assert sorted(p.name for p in pull.path.parent.iterdir()) == sorted([GGUF_NAME, PULL_RECORD])
    assert pull.files == {GGUF_NAME: sha256(GGUF)}
    assert pull.size_bytes == len(GGUF)


@PINS
def test_record_holds_the_pin_and_each_file_sha256(pin: HubModelPin, hub: FakeHub, model_dir: Path) -> None:
    pull = pull_hub_model(pin, model_dir, endpoint=hub.url)

    record = read_pull_record(pin, model_dir)
    assert record is not None
    assert (record["repo"], record["revision"], record["file"]) == (pin.repo, pin.revision, pin.file)
    assert record["files"] == pull.files
    assert record["size"] == pull.size_bytes
    assert record["pulled_at"].endswith("Z")


@PINS
def test_second_pull_makes_no_request(pin: HubModelPin, hub: FakeHub, model_dir: Path) -> None:
    first = pull_hub_model(pin, model_dir, endpoint=hub.url)
    requests_after_first = hub.request_count()

    second = pull_hub_model(pin, model_dir, endpoint=hub.url)

    assert requests_after_first > 0
    assert hub.request_count() == requests_after_first
    assert second == first


def test_a_file_of_another_size_is_pulled_again(hub: FakeHub, model_dir: Path) -> None:
    pull_hub_model(CAPTION, model_dir, endpoint=hub.url)
    weights = CAPTION.local_path(model_dir) / "model.safetensors"
    weights.write_bytes(WEIGHTS[:100])
    requests_before = hub.request_count()

    pull_hub_model(CAPTION, model_dir, endpoint=hub.url)

    assert hub.request_count() > requests_before
    assert weights.read_bytes() == WEIGHTS
    assert [p.name for p in weights.parent.parent.iterdir()] == [COMMIT]  # the old copy is gone


def test_force_pulls_again_a_copy_damaged_in_place(hub: FakeHub, model_dir: Path) -> None:
    pull_hub_model(CAPTION, model_dir, endpoint=hub.url)
    weights = CAPTION.local_path(model_dir) / "model.safetensors"
    weights.write_bytes(bytes(len(WEIGHTS)))  # same size: the record alone cannot tell
    requests_before = hub.request_count()

    pull_hub_model(CAPTION, model_dir, endpoint=hub.url, force=True)

    assert hub.request_count() > requests_before
    assert weights.read_bytes() == WEIGHTS


def test_a_record_for_another_pin_is_not_read(hub: FakeHub, model_dir: Path) -> None:
    pull_hub_model(CLASSIFIER, model_dir, endpoint=hub.url)
    other_file = CLASSIFIER.model_copy(update={"file": "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf"})

    assert read_pull_record(other_file, model_dir) is None
    assert main_file_sha256(other_file, model_dir) == ""


@pytest.mark.parametrize(
    ("pin", "expected"),
    [(CAPTION, sha256(WEIGHTS)), (CLASSIFIER, sha256(GGUF))],
    ids=["snapshot-weights", "file"],
)
def test_main_file_sha256_comes_from_the_record(
    pin: HubModelPin, expected: str, hub: FakeHub, model_dir: Path
) -> None:
    pull_hub_model(pin, model_dir, endpoint=hub.url)
    main_file = pin.local_path(model_dir) / ("model.safetensors" if pin.file is None else "")
    main_file.write_bytes(b"x" * main_file.stat().st_size)  # same size, other bytes: not re-hashed

    assert main_file_sha256(pin, model_dir) == expected


def test_main_file_of_a_snapshot_without_model_safetensors_is_its_largest(model_dir: Path) -> None:
    files = {"config.json": b"{}", "pytorch_model.bin": WEIGHTS, "tokenizer.json": b"{}" * 10}
    with FakeHub([FakeRepo(CAPTION.repo, COMMIT, files)]) as hub:
        pull_hub_model(CAPTION, model_dir, endpoint=hub.url)

    assert main_file_sha256(CAPTION, model_dir) == sha256(WEIGHTS)


@PINS
def test_main_file_sha256_is_empty_before_a_pull(pin: HubModelPin, model_dir: Path) -> None:
    assert main_file_sha256(pin, model_dir) == ""
    assert read_pull_record(pin, model_dir) is None


@PINS
def test_unknown_revision_fails_naming_repo_and_revision(
    pin: HubModelPin, hub: FakeHub, model_dir: Path
) -> None:
    unknown = pin.model_copy(update={"revision": UNKNOWN_COMMIT})

    with pytest.raises(ModelDownloadFailed) as failure:
        pull_hub_model(unknown, model_dir, endpoint=hub.url)

    assert unknown.repo in failure.value.message
    assert UNKNOWN_COMMIT in failure.value.message
    assert "revision" in failure.value.message
    assert_nothing_left(unknown, model_dir)


@PINS
def test_unknown_repo_fails_pointing_at_the_name_and_hf_token(
    pin: HubModelPin, hub: FakeHub, model_dir: Path
) -> None:
    unknown = pin.model_copy(update={"repo": "nobody/no-such-model"})

    with pytest.raises(ModelDownloadFailed) as failure:
        pull_hub_model(unknown, model_dir, endpoint=hub.url)

    assert "nobody/no-such-model" in failure.value.message
    assert COMMIT in failure.value.message
    assert "HF_TOKEN" in failure.value.message
    assert_nothing_left(unknown, model_dir)


def test_missing_file_fails_naming_the_file(hub: FakeHub, model_dir: Path) -> None:
    missing = CLASSIFIER.model_copy(update={"file": "no-such.gguf"})

    with pytest.raises(ModelDownloadFailed, match=r"no file no-such\.gguf"):
        pull_hub_model(missing, model_dir, endpoint=hub.url)

    assert_nothing_left(missing, model_dir)


def test_server_dying_mid_download_fails_and_leaves_nothing(
    hub: FakeHub, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import file_download

    # huggingface_hub waits 1 s before each of its 5 attempts to resume; the outcome is the same without.
    monkeypatch.setattr(file_download, "time", SimpleNamespace(sleep=lambda _seconds: None))
    hub.die_during(GGUF_NAME)

    with pytest.raises(ModelDownloadFailed) as failure:
        pull_hub_model(CLASSIFIER, model_dir, endpoint=hub.url)

    assert CLASSIFIER.repo in failure.value.message
    assert COMMIT in failure.value.message
    assert "HF_ENDPOINT" in failure.value.message
    assert hub.requests[-1].startswith(f"GET /{CLASSIFIER.repo}/resolve/")  # it died during the body
    assert_nothing_left(CLASSIFIER, model_dir)


@pytest.mark.parametrize("flag", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_offline_flag_fails_clearly_without_a_request(
    flag: str, hub: FakeHub, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(flag, "1")

    with pytest.raises(ModelDownloadFailed, match="HF_HUB_OFFLINE") as failure:
        pull_hub_model(CAPTION, model_dir, endpoint=hub.url)

    assert CAPTION.ref in failure.value.message
    assert hub.request_count() == 0
    assert_nothing_left(CAPTION, model_dir)


def test_offline_flag_of_huggingface_hub_itself_fails_clearly(
    hub: FakeHub, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # as when HF_HUB_OFFLINE=1 at its import

    with pytest.raises(ModelDownloadFailed, match="HF_HUB_OFFLINE"):
        pull_hub_model(CLASSIFIER, model_dir, endpoint=hub.url)

    assert hub.request_count() == 0


def test_a_pulled_model_needs_no_network_even_offline(
    hub: FakeHub, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = pull_hub_model(CLASSIFIER, model_dir, endpoint=hub.url)
    hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    assert pull_hub_model(CLASSIFIER, model_dir, endpoint=hub.url) == first


def test_progress_reports_download_and_install(hub: FakeHub, model_dir: Path) -> None:
    messages: list[str] = []

    pull_hub_model(CLASSIFIER, model_dir, endpoint=hub.url, progress=messages.append)
    pull_hub_model(CLASSIFIER, model_dir, endpoint=hub.url, progress=messages.append)

    assert [m.split(": ", 1)[1].split(" ", 1)[0] for m in messages] == ["downloading", "installed", "already"]
    assert all(m.startswith(CLASSIFIER.ref) for m in messages)


def test_routes_name_the_safety_settings_hub_pins() -> None:
    settings = SafetySettings()

    assert set(HUB_ROUTES) == {"florence-2-large", "llama-3.1-8b-instruct"}
    for field in HUB_ROUTES.values():
        assert isinstance(getattr(settings, field), HubModelPin)
    assert getattr(settings, HUB_ROUTES["florence-2-large"]).file is None
    assert getattr(settings, HUB_ROUTES["llama-3.1-8b-instruct"]).file is not None


def run_without_huggingface_hub(body: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_without(["huggingface_hub"], body, *args)


def test_module_imports_without_huggingface_hub_and_a_pull_names_the_extra(tmp_path: Path) -> None:
    result = run_without_huggingface_hub(
        """
        from pathlib import Path
        from cutout_fleet.config.settings import SafetySettings
        from cutout_fleet.errors import ConfigError
        from cutout_fleet.worker.models.hub_pull import pull_hub_model
        try:
            pull_hub_model(SafetySettings().classifier_model, Path(sys.argv[1]))
        except ConfigError as exc:
            print("ConfigError:", exc)
        """,
        str(tmp_path / "models"),
    )

    assert result.returncode == 0, result.stderr
    assert "ConfigError:" in result.stdout
    assert "safety-full" in result.stdout


def test_a_pulled_model_is_found_without_huggingface_hub(hub: FakeHub, model_dir: Path) -> None:
    pulled = pull_hub_model(CLASSIFIER, model_dir, endpoint=hub.url)

    result = run_without_huggingface_hub(
        f"""
        from pathlib import Path
        from cutout_fleet.config.settings import HubModelPin
        from cutout_fleet.worker.models.hub_pull import main_file_sha256, pull_hub_model
        pin = HubModelPin(repo={CLASSIFIER.repo!r}, revision={COMMIT!r}, file={GGUF_NAME!r})
        print(pull_hub_model(pin, Path(sys.argv[1])).path)
        print(main_file_sha256(pin, Path(sys.argv[1])))
        """,
        str(model_dir),
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(pulled.path), sha256(GGUF)]


def test_record_file_is_json_beside_the_pinned_file(hub: FakeHub, model_dir: Path) -> None:
    pull_hub_model(CLASSIFIER, model_dir, endpoint=hub.url)

    record = json.loads((CLASSIFIER.local_path(model_dir).parent / PULL_RECORD).read_text())

    assert record["files"] == {GGUF_NAME: sha256(GGUF)}


def test_huggingface_hub_bookkeeping_is_not_installed(hub: FakeHub, model_dir: Path) -> None:
    pull_hub_model(CAPTION, model_dir, endpoint=hub.url)

    assert not (CAPTION.local_path(model_dir) / ".cache").exists()


def test_unwritable_model_dir_is_a_config_error(hub: FakeHub, tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_bytes(b"")

    with pytest.raises(ConfigError, match="writable"):
        pull_hub_model(CLASSIFIER, blocked / "models", endpoint=hub.url)
