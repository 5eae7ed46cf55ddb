"""The model catalogue: every model's contract as data, shared by the producer (routing, dry-run
estimates), the worker (sessions) and the CLI (`cutout models`)."""

from cutout_fleet.catalog.loader import BUILTIN_CATALOG, Catalog, load_catalog, parse_catalog
from cutout_fleet.catalog.spec import ModelSpec, digest_of, verify_checksum

__all__ = [
    "BUILTIN_CATALOG",
    "Catalog",
    "ModelSpec",
    "digest_of",
    "load_catalog",
    "parse_catalog",
    "verify_checksum",
]
