"""Opening storages: one per location, all S3 ones sharing one client, cached for the process."""

from __future__ import annotations

import threading
from functools import lru_cache

from cutout_fleet.config.settings import S3Settings
from cutout_fleet.storage.base import Storage
from cutout_fleet.storage.local import LocalStorage
from cutout_fleet.storage.location import Location, parse_location
from cutout_fleet.storage.s3 import S3Client, S3Storage, s3_client

# Locations a process keeps open; a job touches two (source, output), a manifest job one per bucket.
STORAGES_KEPT = 64


def open_storage(location: Location, s3_settings: S3Settings, client: S3Client | None = None) -> Storage:
    """The storage for `location`; an S3 one uses `client`, or a new client from `s3_settings`."""
    if location.scheme == "s3":
        return S3Storage(location, client or s3_client(s3_settings))
    return LocalStorage(location)


class StorageOpener:
    """URI -> Storage for one process: one S3 client for every bucket, the last `max_kept` storages kept.

    boto3 clients do not survive a fork: make the opener in the process that uses it.
    """

    def __init__(
        self, s3_settings: S3Settings, *, client: S3Client | None = None, max_kept: int = STORAGES_KEPT
    ) -> None:
        self._s3_settings = s3_settings
        self._client = client
        self._client_lock = threading.Lock()
        self._cached = lru_cache(maxsize=max_kept)(self._open)

    @property
    def s3_client(self) -> S3Client:
        """The shared boto3 client, made on first use (a job on local folders never makes one)."""
        with self._client_lock:
            if self._client is None:
                self._client = s3_client(self._s3_settings)
            return self._client

    def __call__(self, uri: str) -> Storage:
        """The storage for `uri` (`s3://BUCKET/PREFIX` or a folder), opened once and then reused."""
        return self._cached(uri)

    def _open(self, uri: str) -> Storage:
        location = parse_location(uri)
        return open_storage(location, self._s3_settings, self.s3_client if location.scheme == "s3" else None)
