"""Absurd sizes end in a clear InputError, not an out-of-memory kill (issue 9 §6).

The bounds (difftest.trace.io MAX_ROWS, MAX_GROUP_ROWS, MAX_CHUNK_BYTES; difftest.trace.validate
MAX_LIST) are checked from the Parquet footer before any data is decoded, and per list cell on
each batch.  Files that really hold 2^32 rows or half a GiB per column chunk are too big for a
unit test, so those footer checks are exercised with the bounds lowered; the list bound is
exercised with a real oversized cell.  The 1 GiB streaming measurement is bench/limits_1gib.py.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from difftest.errors import InputError
from difftest.trace import io as trace_io
from difftest.trace.io import open_trace, write_trace
from difftest.trace.validate import MAX_LIST


def _trace(path: Path, n: int = 9, msrs_len: int = 1) -> Path:
    rows = [{"seq": i, "kind": "get_msrs", "vcpu": 0, "level": "host", "msrs": [0x6E1] * (msrs_len if i == 5 else 1),
             "exp_result": "ok"} for i in range(n)]
    return write_trace(path, rows, {"producer": "synthetic"})


def _read_all(path: Path) -> None:
    for _ in open_trace(path).rows():
        pass


def test_a_list_cell_beyond_the_bound_names_its_row_and_column(tmp_path: Path) -> None:
    path = _trace(tmp_path / "t.parquet", msrs_len=MAX_LIST + 1)
    with pytest.raises(InputError) as err:
        _read_all(path)
    assert str(err.value) == f"{path}: event 5: column 'msrs': list of {MAX_LIST + 1} elements (at most {MAX_LIST})"


def test_a_list_cell_at_the_bound_is_accepted(tmp_path: Path) -> None:
    _read_all(_trace(tmp_path / "t.parquet", msrs_len=MAX_LIST))


def test_list_elements_beyond_the_bound_are_refused_from_the_footer(tmp_path: Path) -> None:
    """100,000 elements in a 1-row file: the footer alone shows more than MAX_LIST per row."""
    path = _trace(tmp_path / "t.parquet", n=1, msrs_len=1)
    rows = [{"seq": 0, "kind": "get_msrs", "vcpu": 0, "level": "host", "msrs": [0x6E1] * 100_000, "exp_result": "ok"}]
    write_trace(path, rows, {"producer": "synthetic"})
    with pytest.raises(InputError, match=r"row group 0 holds 100000 list elements in 1 rows") as err:
        open_trace(path)  # before any row is decoded
    assert "column 'msrs'" in str(err.value)


def test_row_count_claim_beyond_the_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _trace(tmp_path / "t.parquet")
    monkeypatch.setattr(trace_io, "MAX_ROWS", 8)
    with pytest.raises(InputError, match=r"claims 9 rows; traces are limited to 8"):
        open_trace(path)


def test_row_group_beyond_the_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _trace(tmp_path / "t.parquet")
    assert pq.ParquetFile(path).metadata.num_row_groups == 1
    monkeypatch.setattr(trace_io, "MAX_GROUP_ROWS", 4)
    with pytest.raises(InputError, match=r"row group 0 claims 9 rows \(at most 4 per group\)"):
        open_trace(path)


def test_column_chunk_beyond_the_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _trace(tmp_path / "t.parquet")
    monkeypatch.setattr(trace_io, "MAX_CHUNK_BYTES", 16)
    with pytest.raises(InputError, match=r"row group 0 holds \d+ bytes of this column \(at most 16\)") as err:
        open_trace(path)
    assert "column 'seq'" in str(err.value)


def test_the_bounds_admit_the_corpus() -> None:
    corpus = sorted((Path(__file__).parents[1] / "traces").rglob("*.parquet"))
    assert corpus
    for path in corpus:
        open_trace(path)
