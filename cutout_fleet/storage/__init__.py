"""Where images come from and go to: S3 (AWS, MinIO, moto) or a local folder, behind one interface.

`location` parses where, `base` is the interface, `s3` and `local` implement it, `s3_errors` maps
botocore's failures onto the error tree, and `opener` opens (and caches) a storage per location.
"""

from cutout_fleet.storage.base import ObjectInfo, Storage, StoredObject, WriteCondition, WriteConflict
from cutout_fleet.storage.local import LocalStorage
from cutout_fleet.storage.location import Location, parse_location
from cutout_fleet.storage.opener import StorageOpener, open_storage
from cutout_fleet.storage.s3 import S3Client, S3Storage, s3_client
from cutout_fleet.storage.s3_errors import s3_errors, translate_s3_error

__all__ = [
    "LocalStorage",
    "Location",
    "ObjectInfo",
    "S3Client",
    "S3Storage",
    "Storage",
    "StorageOpener",
    "StoredObject",
    "WriteCondition",
    "WriteConflict",
    "open_storage",
    "parse_location",
    "s3_client",
    "s3_errors",
    "translate_s3_error",
]
