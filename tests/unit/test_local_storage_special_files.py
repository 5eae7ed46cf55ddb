"""LocalStorage reads only regular files inside its folder, even when the folder changes after the listing."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from cutout_fleet.errors import PermanentError
from cutout_fleet.storage import LocalStorage, Location
from cutout_fleet.storage.local import NOT_LISTED_KEPT

MAX_BYTES = 1 << 20
READ_BOUND_S = 5.0


def _storage(root: Path) -> LocalStorage:
    return LocalStorage(Location("file", str(root), ""))


def _listed(storage: LocalStorage) -> list[str]:
    return [obj.key for obj in storage.iter_objects("")]


def test_a_fifo_swapped_in_after_the_listing_fails_the_read_instead_of_hanging_it(tmp_path: Path) -> None:
    # Given a listed file that is then replaced by a FIFO nobody writes to
    (tmp_path / "a.png").write_bytes(b"png")
    storage = _storage(tmp_path)
    assert _listed(storage) == ["a.png"]
    (tmp_path / "a.png").unlink()
    os.mkfifo(tmp_path / "a.png")

    # When it is read
    errors: list[BaseException] = []

    def read() -> None:
        try:
            storage.get("a.png", max_bytes=MAX_BYTES)
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(READ_BOUND_S)

    # Then the read returns at once with a permanent `not_a_file` failure
    assert not reader.is_alive()
    assert [(type(e).__name__, getattr(e, "code", None)) for e in errors] == [("NotAFile", "not_a_file")]


def test_a_symlink_out_of_the_folder_swapped_in_after_the_listing_is_not_followed(tmp_path: Path) -> None:
    # Given a listed file that is then replaced by a symlink to a file outside the folder
    root, secret = tmp_path / "src", tmp_path / "secret.png"
    root.mkdir()
    secret.write_bytes(b"secret")
    (root / "a.png").write_bytes(b"png")
    storage = _storage(root)
    assert _listed(storage) == ["a.png"]
    (root / "a.png").unlink()
    (root / "a.png").symlink_to(secret)

    # When it is read, Then the read fails as an unsafe key
    with pytest.raises(PermanentError) as info:
        storage.get("a.png", max_bytes=MAX_BYTES)
    assert info.value.code == "unsafe_key"


def test_a_symlink_to_a_file_inside_the_folder_is_listed_and_read(tmp_path: Path) -> None:
    # Given a photo and a symlink to it in the same folder
    (tmp_path / "real.png").write_bytes(b"png")
    (tmp_path / "alias.png").symlink_to("real.png")
    storage = _storage(tmp_path)

    # When the folder is listed and the symlink read, Then it is an object with its target's bytes
    assert _listed(storage) == ["alias.png", "real.png"]
    assert storage.get("alias.png", max_bytes=MAX_BYTES).data == b"png"
    assert storage.not_listed.count == 0


def test_the_listing_counts_every_file_it_leaves_out_but_keeps_only_the_first_names(tmp_path: Path) -> None:
    # Given more broken symlinks than the listing keeps by name
    for number in range(NOT_LISTED_KEPT + 5):
        (tmp_path / f"{number:04d}.png").symlink_to(tmp_path / "nowhere")
    storage = _storage(tmp_path)

    # When it is listed
    assert _listed(storage) == []

    # Then all are counted, the first ones named with their reason
    assert storage.not_listed.count == NOT_LISTED_KEPT + 5
    assert len(storage.not_listed.files) == NOT_LISTED_KEPT
    assert storage.not_listed.files[0].reason == "a broken symlink"
