"""Where the product is: the tight box around what a cutout's alpha shows, specks ignored.

Connected components (8-connectivity) are found exactly, at full size, without scipy or OpenCV: the
visible pixels of each row become runs, runs that touch in adjacent rows become edges, and a vectorised
union-find (hook every root onto its smallest neighbour, then jump pointers) labels them.  Each round at
least halves the roots of every component, so there are O(log runs) rounds of numpy work; a photo's mask
has a few runs per row, so a 12 Mpx mask takes tens of milliseconds.
"""

from __future__ import annotations

import numpy as np

from cutout_fleet.layout import DEFAULT_SPECK_SHARE, MIN_SUBJECT_SHARE, VISIBLE_THRESHOLD
from cutout_fleet.worker.imaging.strips import strip_rows

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels; x1 and y1 exclusive


def speck_area_px(image_size: tuple[int, int], share: float = DEFAULT_SPECK_SHARE) -> int:
    """The speck limit in pixels for an image of `image_size` (width, height): `share` of its area."""
    width, height = image_size
    return round(width * height * share)


def subject_box(
    alpha: np.ndarray, *, visible_threshold: int = VISIBLE_THRESHOLD, min_speck_px: int | None = None
) -> Box | None:
    """The tight box of pixels with alpha >= `visible_threshold`, leaving out connected components of
    fewer than `min_speck_px` pixels (None: 0.05% of the mask's area); None when nothing is left."""
    height, width = alpha.shape
    if min_speck_px is None:
        min_speck_px = speck_area_px((width, height))
    rows, starts, ends = _runs(alpha, visible_threshold)
    if len(rows) == 0:
        return None
    if min_speck_px > 1:  # every component has at least one pixel: otherwise nothing to label
        kept = _component_area(rows, starts, ends, width) >= min_speck_px
        rows, starts, ends = rows[kept], starts[kept], ends[kept]
        if len(rows) == 0:
            return None
    return int(starts.min()), int(rows.min()), int(ends.max()), int(rows.max()) + 1


def is_no_subject(box: Box | None, image_size: tuple[int, int], min_share: float = MIN_SUBJECT_SHARE) -> bool:
    """True when there is no box, or it covers less than `min_share` of the image's area."""
    if box is None:
        return True
    width, height = image_size
    x0, y0, x1, y1 = box
    return (x1 - x0) * (y1 - y0) < min_share * width * height


def _runs(alpha: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, first column and end column (exclusive) of every horizontal run of visible pixels, in
    row-major order; a strip of rows at a time, so the temporaries stay small."""
    height, width = alpha.shape
    rows, starts, ends = [], [], []
    for top, bottom in strip_rows(width, height):
        padded = np.zeros((bottom - top, width + 2), dtype=np.int8)
        padded[:, 1:-1] = alpha[top:bottom] >= threshold
        steps = np.diff(padded, axis=1)
        run_rows, run_starts = np.nonzero(steps == 1)
        rows.append(run_rows.astype(np.int64) + top)
        starts.append(run_starts.astype(np.int64))
        ends.append(np.nonzero(steps == -1)[1].astype(np.int64))
    return np.concatenate(rows), np.concatenate(starts), np.concatenate(ends)


def _component_area(rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray:
    """For every run, the pixel count of the 8-connected component it belongs to."""
    run_a, run_b = _touching_runs(rows, starts, ends, width)
    roots = _union_find_roots(len(rows), run_a, run_b)
    area = np.bincount(roots, weights=ends - starts, minlength=len(rows))
    component_area: np.ndarray = area[roots]
    return component_area


def _touching_runs(
    rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (a, b) of runs where b, in the next row, touches a side by side or diagonally.

    Keyed as row * stride + column, starts and ends both increase through the arrays, so the runs
    touching run a (row r, columns [s, e)) are the consecutive ones from the first in row r + 1 that
    ends at or after s to the last that starts at or before e.
    """
    stride = width + 2
    start_keys, end_keys = rows * stride + starts, rows * stride + ends
    below = (rows + 1) * stride
    first = np.searchsorted(end_keys, below + starts, side="left")
    past = np.searchsorted(start_keys, below + ends, side="right")
    counts = np.maximum(past - first, 0)
    run_a = np.repeat(np.arange(len(rows)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return run_a, np.repeat(first, counts) + offsets


def _union_find_roots(count: int, run_a: np.ndarray, run_b: np.ndarray) -> np.ndarray:
    """The smallest run index of each run's component.  Parents only ever point to smaller indices,
    so the forest never gets a cycle."""
    parent = np.arange(count)
    while len(run_a):
        root_a, root_b = parent[run_a], parent[run_b]
        apart = root_a != root_b
        if not apart.any():
            break
        root_a, root_b = root_a[apart], root_b[apart]
        np.minimum.at(parent, np.maximum(root_a, root_b), np.minimum(root_a, root_b))
        while True:
            grandparent = parent[parent]
            if np.array_equal(grandparent, parent):
                break
            parent = grandparent
        run_a, run_b = run_a[apart], run_b[apart]  # pairs already joined stay joined
    return parent
