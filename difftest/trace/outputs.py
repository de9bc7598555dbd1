"""Where a command's output goes: a file written atomically, or stdout when the path is ``-``.

One rule for every command: ``-o -``, ``--jsonl -``, ``--junit -`` and ``--tap -`` write to stdout.
A trace (Parquet) written to ``-`` goes to stdout as bytes, so ``difftest generate ... -o - | ...``
works; the command's own messages then go to stderr (:func:`to_stdout`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from difftest.trace.io import ROW_GROUP_ROWS, rows_to_table, write_table_atomic, write_text_atomic

STDOUT = "-"


def to_stdout(*paths: str | os.PathLike[str] | None) -> bool:
    """Whether any of these outputs is stdout (so messages must go to stderr)."""
    return any(p is not None and str(p) == STDOUT for p in paths)


def write_text_output(path: str | os.PathLike[str], text: str) -> Path | None:
    """Write ``text`` to ``path`` atomically, or to stdout for ``-`` (returns the file, None for stdout)."""
    if str(path) == STDOUT:
        sys.stdout.write(text)
        sys.stdout.flush()
        return None
    return write_text_atomic(path, text)


def write_trace_output(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]], meta: Mapping[str, str]) -> Path | None:
    """Write a trace to ``path`` atomically, or its Parquet bytes to stdout for ``-``."""
    table = rows_to_table(rows, meta)
    if str(path) != STDOUT:
        return write_table_atomic(table, path)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", row_group_size=ROW_GROUP_ROWS)
    out = sys.stdout.buffer
    out.write(sink.getvalue().to_pybytes())
    out.flush()
    return None


def described(paths: Iterable[Path | None]) -> list[str]:
    """The written files for a "wrote ..." line (stdout outputs left out)."""
    return [str(p) for p in paths if p is not None]
