"""The model catalogue: every model's contract as data, shared by the producer (routing, dry-run
estimates), the worker (sessions) and the CLI (`cutout models`)."""

from cutout_fleet.catalog.loader import BUILTIN_CATALOG, Catalog, load_catalog, parse_catalog
from cutout_fleet.catalog.pulled import PULLED_FILE, PulledRecord, record_pull, user_catalog_path
from cutout_fleet.catalog.spec import ModelSpec, digest_of, verify_checksum

__all__ = [
    "BUILTIN_CATALOG",
    "PULLED_FILE",
    "Catalog",
    "ModelSpec",
    "PulledRecord",
    "digest_of",
    "load_catalog",
    "parse_catalog",
    "record_pull",
    "user_catalog_path",
    "verify_checksum",
]
