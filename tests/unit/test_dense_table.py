"""DenseTable: many small-integer lookups at once, each value made once (difftest.engine.fast.dense_table)."""

from __future__ import annotations

import numpy as np

from difftest.engine.fast.dense_table import DenseTable


def test_values_are_made_once_each_in_ascending_order() -> None:
    made: list[tuple[int, int]] = []

    def make(r: int, c: int) -> int:
        made.append((r, c))
        return r * 1000 + c

    t = DenseTable()
    rows = np.array([3, 0, 3, 1, 0, 3], dtype=np.int64)
    cols = np.array([9, 2, 9, 40, 2, 1], dtype=np.int64)
    got = t.get_many(rows, cols, make)
    assert got is not None and got.tolist() == [3009, 2, 3009, 1040, 2, 3001]
    assert made == [(0, 2), (1, 40), (3, 1), (3, 9)]  # once each, as a loop over np.unique would
    made.clear()
    again = t.get_many(np.array([1, 3, 70], dtype=np.int64), np.array([40, 1, 5], dtype=np.int64), make)
    assert again is not None and again.tolist() == [1040, 3001, 70005]
    assert made == [(70, 5)]  # the table grew to row 70 and kept what it had


def test_values_may_be_minus_one() -> None:
    """-1 ("no access state") is a value like any other, not a missing cell."""
    calls = []
    t = DenseTable()
    for _ in range(2):
        got = t.get_many(np.array([2], dtype=np.int64), np.array([2], dtype=np.int64), lambda r, c: calls.append(1) or -1)
        assert got is not None and got.tolist() == [-1]
    assert len(calls) == 1


def test_out_of_range_keys_are_refused_without_making_anything() -> None:
    made: list[tuple[int, int]] = []
    t = DenseTable(max_cells=1 << 10)

    def make(r: int, c: int) -> int:
        made.append((r, c))
        return 0

    assert t.get_many(np.array([0], dtype=np.int64), np.array([1 << 11], dtype=np.int64), make) is None
    assert t.get_many(np.array([-1], dtype=np.int64), np.array([0], dtype=np.int64), make) is None
    assert made == []
    empty = t.get_many(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), make)
    assert empty is not None and len(empty) == 0
