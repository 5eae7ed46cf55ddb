"""Objects that a manifest names more than once, found in its validation pass with 8 bytes per line.

An item is (bucket, key, version) (`cutout_fleet.items`), and a job records one outcome per item.  Two
lines for one item would count twice and finish once, or, with other options, make two outputs for one
outcome: either way the job never ends.  So a manifest names each object once.  The scan keeps a 64-bit
digest of each line's item id, sorts them at the end, and only when two digests are equal reads the
manifest again for the line numbers of those items (which also rules out two ids with one digest).
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from cutout_fleet.items import item_id

# Repeats named in the error message; the count says how many more there are.
REPEATS_SHOWN = 10
_DIGEST_BYTES = 8


def _digest(item: str) -> int:
    # surrogatepass: a JSONL line may spell a lone surrogate (`"\ud800"`); it is still one key.
    raw = hashlib.blake2b(item.encode("utf-8", "surrogatepass"), digest_size=_DIGEST_BYTES).digest()
    return int.from_bytes(raw, "little")


class ManifestLine(Protocol):
    """A manifest entry (`manifest.ManifestEntry`), as far as repeats go."""

    @property
    def bucket(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def version(self) -> str | None: ...
    @property
    def options(self) -> dict[str, object]: ...
    @property
    def line(self) -> int: ...


def entry_item(entry: ManifestLine) -> str:
    """The id of the item a manifest line names: what the job counts and records it by."""
    return item_id(entry.bucket, entry.key, entry.version)


@dataclass(frozen=True)
class Repeat:
    """One object named on several lines, and whether those lines ask for different options."""

    item: str
    lines: tuple[int, ...]
    options_differ: bool

    def describe(self) -> str:
        lines = ", ".join(str(line) for line in self.lines)
        differ = " (with different options)" if self.options_differ else ""
        return f"{self.item} on lines {lines}{differ}"


@dataclass
class RepeatFinder:
    """Collects the digests of a manifest's items, one `add` per line, in the order of the lines."""

    _digests: array[int] = field(default_factory=lambda: array("Q"))

    def add(self, entry: ManifestLine) -> None:
        self._digests.append(_digest(entry_item(entry)))

    def suspects(self) -> set[int]:
        """The digests seen more than once: every repeated item's, and rarely two items' that share one."""
        if len(self._digests) < 2:
            return set()
        import numpy as np  # here, not at the top: a prefix job (no manifest) never loads numpy

        ordered = np.sort(np.frombuffer(self._digests, dtype=np.uint64))
        return {int(digest) for digest in np.unique(ordered[1:][ordered[1:] == ordered[:-1]])}

    def repeats(self, entries: Iterable[ManifestLine]) -> list[Repeat]:
        """The repeated items, from a second reading of the manifest's `entries` (only when there are
        suspects), in the order of their first lines."""
        suspects = self.suspects()
        if not suspects:
            return []
        seen: dict[str, list[ManifestLine]] = {}
        for entry in entries:
            item = entry_item(entry)
            if _digest(item) in suspects:
                seen.setdefault(item, []).append(entry)
        return [
            Repeat(item, tuple(e.line for e in found), any(e.options != found[0].options for e in found))
            for item, found in seen.items()
            if len(found) > 1
        ]


def repeats_message(where: str, repeats: list[Repeat]) -> str:
    """The refusal: which objects, on which lines, and what to do."""
    shown = "; ".join(repeat.describe() for repeat in repeats[:REPEATS_SHOWN])
    more = f"; and {len(repeats) - REPEATS_SHOWN} more" if len(repeats) > REPEATS_SHOWN else ""
    return (
        f"manifest {where}: {len(repeats)} object(s) listed more than once: {shown}{more}. A manifest names "
        "each object (bucket, key, version) once; keep one line per object, with the options you want"
    )
