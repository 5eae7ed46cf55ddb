"""An item's identity: (bucket, key, version).  Claims, outcomes, attempts, reports and retries all
name an item by `item_id`, so one key in two buckets (or two versions of a key) are two items."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ItemRef:
    bucket: str  # "" for a local folder (embedded mode)
    key: str
    version: str | None = None

    @property
    def id(self) -> str:
        return item_id(self.bucket, self.key, self.version)


def item_id(bucket: str | None, key: str, version: str | None = None) -> str:
    """`bucket/key`, with `?versionId=V` for a pinned version; the bare key for a local folder.

    Readable in Redis and reports, and unique: bucket names cannot contain '/'.
    """
    base = f"{bucket}/{key}" if bucket else key
    return f"{base}?versionId={version}" if version else base
