"""A model published only by its size and sha256 prefix (BEN2): both are checked, the first pull's full
sha256 is recorded in the user catalogue, and every later load checks the whole file against that record."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from cutout_fleet.catalog import (
    PULLED_FILE,
    ModelSpec,
    PulledRecord,
    load_catalog,
    parse_catalog,
    record_pull,
    user_catalog_path,
    verify_checksum,
)
from cutout_fleet.config.settings import Settings
from cutout_fleet.errors import ConfigError
from tests.support.tiny_models import builtin_spec

DATA = b"weights" * 1000
DATA_SHA256 = hashlib.sha256(DATA).hexdigest()
PREFIX = DATA_SHA256[:8]
OTHER_SHA256 = "f" * 64


def prefix_table(**changes: object) -> str:
    fields: dict[str, object] = {
        "file": '"toy.onnx"',
        "queue": '"gpu"',
        "size_bytes": len(DATA),
        "sha256_prefix": f'"{PREFIX}"',
        "input_size": "[8, 8]",
    }
    fields.update(changes)
    return "[models.toy]\n" + "".join(
        f"{key} = {value}\n" for key, value in fields.items() if value is not None
    )


def prefix_spec(**changes: object) -> ModelSpec:
    values: dict[str, object] = {
        "name": "toy",
        "file": "toy.onnx",
        "size_bytes": len(DATA),
        "sha256_prefix": PREFIX,
        "input_size": (8, 8),
    }
    values.update(changes)
    return ModelSpec(**values)  # type: ignore[arg-type]


def record_text(sha256: str = DATA_SHA256, size_bytes: int = len(DATA)) -> str:
    return f'[pulled.toy]\nsha256 = "{sha256}"\nsize_bytes = {size_bytes}\n'


# --- the built-in entry ------------------------------------------------------------------------


def test_the_ben2_entry_pins_a_revision_and_publishes_only_size_and_sha256_prefix() -> None:
    spec = builtin_spec("ben2")

    assert spec.file == "BEN2_Base.onnx" and spec.queue == "gpu"
    assert (spec.size_bytes, spec.sha256_prefix) == (222_932_053, "22cea621")
    assert spec.sha256 is None and spec.md5 is None and spec.pulled_sha256 is None
    assert spec.revision and spec.url == (
        f"https://huggingface.co/PramaLLC/BEN2/resolve/{spec.revision}/BEN2_Base.onnx"
    )
    assert spec.checksum == "sha256-prefix:22cea621:222932053"


# --- the spec ----------------------------------------------------------------------------------


def test_a_sha256_prefix_needs_the_size_too() -> None:
    with pytest.raises(ValidationError, match="size_bytes"):
        prefix_spec(size_bytes=None)


def test_a_full_sha256_must_start_with_the_published_prefix() -> None:
    with pytest.raises(ValidationError, match="does not start with"):
        prefix_spec(pulled_sha256=OTHER_SHA256)


def test_a_pinned_revision_must_be_in_the_url() -> None:
    with pytest.raises(ValidationError, match="revision"):
        prefix_spec(revision="abc123", url="https://example.invalid/resolve/main/toy.onnx")


def test_a_spec_without_any_checksum_is_refused() -> None:
    with pytest.raises(ValidationError, match="sha256_prefix"):
        prefix_spec(sha256_prefix=None)


# --- checking a file ---------------------------------------------------------------------------


def test_a_file_of_the_published_size_and_prefix_passes(tmp_path: Path) -> None:
    path = tmp_path / "toy.onnx"
    path.write_bytes(DATA)

    verify_checksum(prefix_spec(), path, str(path))
    verify_checksum(prefix_spec(), DATA, "memory")


def test_a_file_of_another_size_is_refused_before_hashing(tmp_path: Path) -> None:
    path = tmp_path / "toy.onnx"
    path.write_bytes(DATA + b"x")

    with pytest.raises(ConfigError, match=f"{len(DATA) + 1} bytes, expected {len(DATA)}"):
        verify_checksum(prefix_spec(), path, str(path))


def test_a_file_of_the_right_size_with_another_prefix_is_refused(tmp_path: Path) -> None:
    data = bytearray(DATA)
    data[0] ^= 0x01
    with pytest.raises(ConfigError, match=f"does not start with the published {PREFIX}") as caught:
        verify_checksum(prefix_spec(), bytes(data), "memory")
    assert "cutout models pull toy" in str(caught.value)


def test_with_a_record_the_whole_file_is_checked_against_it() -> None:
    spec = prefix_spec(pulled_sha256=PREFIX + "0" * 56)

    # The published size and prefix match, but the whole file is not the one the first pull recorded
    with pytest.raises(ConfigError, match="its first pull recorded") as caught:
        verify_checksum(spec, DATA, "memory")

    assert DATA_SHA256 in str(caught.value) and "[pulled.toy]" in str(caught.value)


def test_the_options_hash_checksum_leaves_the_record_out() -> None:
    # The producer and the workers must agree on it, and only the pulling machine holds the record.
    assert prefix_spec().checksum == prefix_spec(pulled_sha256=DATA_SHA256).checksum


# --- records in the catalogue ------------------------------------------------------------------


def test_a_record_in_the_user_catalogue_completes_the_spec() -> None:
    catalog = parse_catalog((prefix_table(), "built-in"), (record_text(), "user"))

    assert catalog.get("toy").pulled_sha256 == DATA_SHA256


def test_a_stale_record_is_ignored() -> None:
    # The catalogue moved to another file: the old record no longer matches its published prefix or size
    stale = parse_catalog((prefix_table(), "built-in"), (record_text(sha256=OTHER_SHA256), "user"))
    resized = parse_catalog((prefix_table(), "built-in"), (record_text(size_bytes=1), "user"))

    assert stale.get("toy").pulled_sha256 is None
    assert resized.get("toy").pulled_sha256 is None


def test_a_record_does_not_replace_a_published_full_checksum() -> None:
    table = prefix_table(sha256_prefix=None, sha256=f'"{DATA_SHA256}"')
    catalog = parse_catalog((table, "built-in"), (record_text(sha256=PREFIX + "0" * 56), "user"))

    assert catalog.get("toy").full_checksum() == ("sha256", DATA_SHA256)


def test_a_malformed_record_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"\[pulled.toy\]"):
        parse_catalog(
            (prefix_table(), "built-in"), ('[pulled.toy]\nsha256 = "nothex"\nsize_bytes = 1\n', "u")
        )


def test_recording_writes_a_table_and_keeps_the_rest_of_the_file(tmp_path: Path) -> None:
    user = tmp_path / "catalog.toml"
    user.write_text("# my models\n" + prefix_table(), "utf-8")

    changed = record_pull(
        user, "toy", PulledRecord(sha256=DATA_SHA256, size_bytes=len(DATA), url="http://x/y")
    )

    text = user.read_text("utf-8")
    assert changed and text.startswith("# my models\n[models.toy]")
    data = tomllib.loads(text)
    assert data["pulled"]["toy"] == {"sha256": DATA_SHA256, "size_bytes": len(DATA), "url": "http://x/y"}
    assert parse_catalog((text, "user")).get("toy").pulled_sha256 == DATA_SHA256


def test_recording_the_same_file_again_changes_nothing(tmp_path: Path) -> None:
    user = tmp_path / "catalog.toml"
    record = PulledRecord(sha256=DATA_SHA256, size_bytes=len(DATA))
    record_pull(user, "toy", record)
    before = user.read_text("utf-8")

    assert not record_pull(user, "toy", record)
    assert user.read_text("utf-8") == before


def test_a_new_record_replaces_the_old_one_of_that_model_only(tmp_path: Path) -> None:
    user = tmp_path / "catalog.toml"
    record_pull(user, "other", PulledRecord(sha256=OTHER_SHA256, size_bytes=5))
    record_pull(user, "toy", PulledRecord(sha256=OTHER_SHA256, size_bytes=5))
    record_pull(user, "later", PulledRecord(sha256=OTHER_SHA256, size_bytes=7))

    record_pull(user, "toy", PulledRecord(sha256=DATA_SHA256, size_bytes=len(DATA)))

    pulled = tomllib.loads(user.read_text("utf-8"))["pulled"]
    assert pulled["toy"]["sha256"] == DATA_SHA256
    assert pulled["other"]["sha256"] == OTHER_SHA256 and pulled["later"]["size_bytes"] == 7


def test_an_unwritable_catalogue_gives_the_table_to_add_by_hand(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_bytes(b"")

    with pytest.raises(ConfigError, match="by hand") as caught:
        record_pull(
            not_a_folder / "catalog.toml", "toy", PulledRecord(sha256=DATA_SHA256, size_bytes=len(DATA))
        )

    assert "[pulled.toy]" in str(caught.value) and f'sha256 = "{DATA_SHA256}"' in str(caught.value)


# --- where records live ------------------------------------------------------------------------


def test_records_go_to_the_user_catalogue_else_to_the_model_folder(tmp_path: Path) -> None:
    user = tmp_path / "mine.toml"

    assert user_catalog_path(Settings(model_dir=tmp_path, model_catalog=user)) == user
    assert user_catalog_path(Settings(model_dir=tmp_path)) == tmp_path / PULLED_FILE


def test_without_a_user_catalogue_the_records_in_the_model_folder_are_loaded(tmp_path: Path) -> None:
    spec = builtin_spec("ben2")
    sha256 = spec.sha256_prefix + "a" * 56  # type: ignore[operator]
    record_pull(tmp_path / PULLED_FILE, "ben2", PulledRecord(sha256=sha256, size_bytes=spec.size_bytes or 0))

    assert load_catalog(Settings(model_dir=tmp_path)).get("ben2").pulled_sha256 == sha256


def test_the_model_folder_file_may_hold_records_only(tmp_path: Path) -> None:
    # Whoever can write the model folder must not be able to change a built-in model's checksum
    (tmp_path / PULLED_FILE).write_text(prefix_table(), "utf-8")

    with pytest.raises(ConfigError, match="only"):
        load_catalog(Settings(model_dir=tmp_path))
