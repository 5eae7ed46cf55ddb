"""AVIF and HEIF: which of the two a file is (its `ftyp` brands), and whether this process can decode it.

AVIF is Pillow's own plugin (libavif with dav1d in its wheels since 11.3).  HEIF comes from an optional
package, registered with Pillow on the first HEIF file a process meets (see docs/formats.md).
"""

from __future__ import annotations

import functools
import importlib

from PIL import Image, features

from cutout_fleet.errors import UndecodableImage

# The code of an item whose format this worker has no decoder for (install the extra, or upgrade Pillow).
UNSUPPORTED_FORMAT = "unsupported_format"
HEIF_INSTALL_HINT = "pip install 'cutout-fleet[heif]'"
AVIF_MIN_PILLOW = "11.3"

# HEIF and AVIF are ISO base media files: an `ftyp` box (size, "ftyp", major brand, minor version,
# compatible brands) comes first, and its brands say which codec the images need.
_FTYP = b"ftyp"
_FTYP_BRANDS_START = 16
_MAX_FTYP_BYTES = 4096  # real ones list a handful of brands; a longer box is not read further
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1", b"mif2"}
)


def iso_container(data: bytes) -> str | None:
    """The container, AVIF or HEIF, when `data` starts with an ISO base media `ftyp` box of its brands."""
    if data[4:8] != _FTYP:
        return None
    box_end = min(int.from_bytes(data[:4], "big"), len(data), _MAX_FTYP_BYTES)
    brands = {data[8:12]} | {data[start : start + 4] for start in range(_FTYP_BRANDS_START, box_end - 3, 4)}
    # An AVIF file names mif1 too; AV1 brands decide.
    if brands & _AVIF_BRANDS:
        return "AVIF"
    if brands & _HEIF_BRANDS:
        return "HEIF"
    return None


def require_decoder(container: str, name: str) -> None:
    """Raise UndecodableImage (`unsupported_format`) saying what to install when this worker cannot
    decode `container`; registers pillow-heif's opener on the first HEIF file."""
    if container == "AVIF" and not _avif_supported():
        raise UndecodableImage(
            f"{name}: an AVIF image, and this worker's Pillow has no AVIF support: install Pillow "
            f"{AVIF_MIN_PILLOW} or later (its wheels include libavif) and restart the worker",
            code=UNSUPPORTED_FORMAT,
        )
    if container == "HEIF" and not heif_opener_registered():
        raise UndecodableImage(
            f"{name}: a HEIC/HEIF image, and no HEIF decoder is installed on this worker: install the "
            f"`heif` extra ({HEIF_INSTALL_HINT}) or the decode-only `heif-decode` and restart the worker",
            code=UNSUPPORTED_FORMAT,
        )


@functools.cache
def _avif_supported() -> bool:
    # Pillow before 11.2.1 has no AVIF plugin; later ones register it even when built without libavif.
    return "AVIF" in Image.OPEN and bool(features.check_module("avif"))


# pillow-heif (the `heif` extra: its wheels bundle x265, so they are GPL-2.0 as a whole), else pi-heif
# (`heif-decode`: the same opener from the same authors, decode only, libheif + libde265, LGPL-3.0).
HEIF_MODULES = ("pillow_heif", "pi_heif")


@functools.cache
def heif_opener_registered() -> bool:
    """Register a HEIF opener with Pillow once per process, on first use: pillow-heif's, else
    pi-heif's; False when neither optional package is installed.  Deferred because importing one loads
    libheif and its codecs, which a worker that never sees a HEIF file need not pay for."""
    for module_name in HEIF_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        # Only the primary image is wanted: the opener then leaves thumbnails, depth maps and auxiliary
        # images aside instead of reading them into every image's info.
        module.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
        return True
    return False
