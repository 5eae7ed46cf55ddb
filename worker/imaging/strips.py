"""Full-size work a strip of rows at a time, so its temporaries stay a few MB whatever the image's size.

A 64 Mpx image is 64 MB per byte of pixel: one float64 copy of it is 512 MB.  Functions that need
temporaries wider than uint8 loop over `strip_rows` and write into one preallocated result.
"""

from __future__ import annotations

from collections.abc import Iterator

# Pixels per strip: 1 Mpx, so a float64 temporary of a strip is 8 MB.
STRIP_PX = 1 << 20


def strip_rows(width: int, height: int) -> Iterator[tuple[int, int]]:
    """(top, bottom) row ranges of about STRIP_PX pixels each (at least one row), covering `height` rows."""
    rows = max(1, STRIP_PX // max(width, 1))
    for top in range(0, height, rows):
        yield top, min(top + rows, height)
