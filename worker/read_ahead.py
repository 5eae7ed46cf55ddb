"""Read the next item of a task while the current one runs, so the model never waits on S3 for it.

One background thread per task does, for the next key, what `pipeline._cut_out` would do first: the
output marker's HEAD, the freshness check and the source GET.  The item then takes what was read
(`Prefetched`), or the error the reads raised, which it handles as if it had met it itself: a transient
one sends it for a retry (one request, not two, to a store that is throttling), a permanent one is its
outcome.  At most one item is read ahead: one more source's bytes in memory, never a queue of them.
Tasks with caption micro-batches do not read ahead: the micro-batch already reads several items at once.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor

from cutout_fleet.freshness import up_to_date
from cutout_fleet.items import ItemRef
from cutout_fleet.worker.pipeline import ItemContext, Prefetched

MS_PER_S = 1000.0


class ReadAhead:
    """The task's one read-ahead thread and the item it is reading."""

    def __init__(self, ctx: ItemContext) -> None:
        self._ctx = ctx
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead")
        self._pending: dict[str, Future[Prefetched]] = {}

    def start(self, item: ItemRef, output_key: str) -> None:
        """Begin reading `item` (a no-op when it is already being read)."""
        if item.key not in self._pending:
            self._pending[item.key] = self._pool.submit(read_item, item, output_key, self._ctx)

    def take(self, key: str) -> Prefetched | None:
        """What was read for `key`, waiting for it if the read is still going; None when it was not read
        ahead.  Raises what the reads raised, as the item's own reads would have."""
        future = self._pending.pop(key, None)
        return None if future is None else future.result()

    def discard(self, key: str) -> None:
        """Forget `key`'s read (the item turned out to need none: recorded already, or its job stopped)."""
        future = self._pending.pop(key, None)
        if future is not None:
            future.cancel()

    def close(self) -> None:
        """Stop: a read still running finishes in the background, and nothing is started any more."""
        self._pending.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)


def read_item(item: ItemRef, output_key: str, ctx: ItemContext) -> Prefetched:
    """The marker's metadata, then the source's bytes unless the output is up to date (`source` None)."""
    started = time.perf_counter()
    marker_key = ctx.safety.verdict_key(output_key) if ctx.safety else output_key
    seen = ctx.out.head_metadata(marker_key)
    checked = time.perf_counter()
    if not ctx.force and up_to_date(ctx.source, item.key, seen, ctx.options_hash):
        return Prefetched(seen, None, None, {"check": (checked - started) * MS_PER_S})
    source = ctx.source.get(item.key, max_bytes=ctx.limits.max_bytes, version=item.version)
    timings = {
        "check": (checked - started) * MS_PER_S,
        "download": (time.perf_counter() - checked) * MS_PER_S,
    }
    return Prefetched(seen, source, None, timings)
