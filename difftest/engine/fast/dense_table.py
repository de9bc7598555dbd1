"""Many small-integer lookups at once: a grown-by-doubling 2-D table gathered with numpy.

The fast path asks the same few hundred questions (which page id, which access class, which access
state) of tens of thousands of rows per batch.  ``np.unique(..., return_inverse=True)`` answers them
by sorting the rows each time, and ``np.searchsorted`` on unsorted keys is slower still; a table
indexed by the two small integers of the question answers with one gather.  It is for dense key
spaces only: a table that would outgrow ``max_cells`` says so (``None``) and the caller falls back to
a sort.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

MISSING = -2  # (values may be -1: "no access state")


class DenseTable:
    """``value[row, col]`` for non-negative int64 rows and columns, made on first use by the owner's function."""

    __slots__ = ("cells", "max_cells")

    def __init__(self, max_cells: int = 1 << 22) -> None:
        self.max_cells = max_cells
        self.cells = np.full((1, 8), MISSING, dtype=np.int64)

    def _fit(self, max_row: int, max_col: int) -> bool:
        """Grow (by doubling) to hold ``[max_row, max_col]``; False if that would pass ``max_cells``."""
        r, c = self.cells.shape
        if max_row < r and max_col < c:
            return True
        while r <= max_row:
            r *= 2
        while c <= max_col:
            c *= 2
        if r * c > self.max_cells:
            return False
        grown = np.full((r, c), MISSING, dtype=np.int64)
        grown[: self.cells.shape[0], : self.cells.shape[1]] = self.cells
        self.cells = grown
        return True

    def get_many(self, rows: np.ndarray, cols: np.ndarray, make: Callable[[int, int], int]) -> np.ndarray | None:
        """``value[rows[i], cols[i]]`` for each i; ``make(row, col)`` gives each value not made before.

        Missing cells are made once each, in ascending (row, col) order.  None: the keys are out of
        this table's range (negative, or more cells than ``max_cells``); nothing was made.
        """
        if len(rows) == 0:
            return np.zeros(0, dtype=np.int64)
        if int(rows.min()) < 0 or int(cols.min()) < 0 or not self._fit(int(rows.max()), int(cols.max())):
            return None
        cells = self.cells
        values = cells[rows, cols]
        missing = values == MISSING
        if missing.any():
            stride = cells.shape[1]
            for packed in np.unique(rows[missing] * stride + cols[missing]).tolist():
                r, c = divmod(packed, stride)
                cells[r, c] = make(r, c)
            values = cells[rows, cols]
        return values
