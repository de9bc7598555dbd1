"""Reading and writing trace files (format v1, see :mod:`difftest.trace.schema`).

Reading streams record batches: each batch is validated with Arrow compute (vectorised), then
turned into :class:`~reference_model.events.Event` objects and :class:`Expect` records, so a
trace of millions of rows never exists as Python objects all at once.  Writing goes to a
temporary name in the same directory and is renamed into place, so a reader never sees half a
file under the final name.
"""

from __future__ import annotations

import glob
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from difftest.errors import InputError
from difftest.trace.parquet_footer import open_checked, parquet_source
from difftest.variants import metadata_policies
from reference_model.events import Event
from reference_model.host import DEFAULT_HOST, HostCpu, parse_features

from .arrow_columns import int_values, valid_mask
from .schema import ARROW_SCHEMA, COLUMN_BY_NAME, META_PREFIX, REQUIRED, SCHEMA_VERSION, SNAPSHOT_KIND
from .validate import MAX_LIST, BatchValidator, check_file_schema

BATCH_ROWS = 65_536
SMALL_GROUPS = 16_384  # consecutive row groups of up to this many rows in all are read in one call
ROW_GROUP_ROWS = 65_536  # what we write: bounded memory per row group for any reader
NOTE_CHUNK_BYTES = 64 << 20  # notes_for will not decode a bigger note column chunk
MAX_ROWS = 1 << 32  # events in one trace (hours of replay beyond this; a larger claim is a broken footer)
MAX_GROUP_ROWS = 1 << 24  # rows in one Parquet row group (writers use 1 Mi by default)
ALL_NULL_CHUNK_BYTES = 256  # bytes an all-null column chunk may take before the per-row allowance
MAX_CHUNK_BYTES = 512 << 20  # uncompressed bytes of one column in one row group

_EVENT_COLUMNS = tuple(
    n for n in COLUMN_BY_NAME
    if n not in ("seq", "kind", "path", "note") and not n.startswith("exp_")
)
_LIST_COLUMNS = ("msrs", "values", "exp_values")


@dataclass(slots=True)
class Expect:
    """What a trace row expects; None fields are not compared."""

    result: str | None = None
    pfec: int | None = None
    cr2: int | None = None
    value: int | None = None
    values: tuple[int, ...] | None = None
    count: int | None = None
    exit_reason: int | None = None
    vm_error: int | None = None
    exit_qual: int | None = None
    rule: str | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, f) is None for f in self.__slots__ if f != "rule")  # type: ignore[attr-defined]


@dataclass(slots=True)
class Snapshot:
    """A snapshot row: ``path`` should hold ``value`` after the previous event."""

    path: str
    value: int
    rule: str | None = None


@dataclass(slots=True)
class TraceRow:
    """One row of a trace: an event with its expectation, or a snapshot check."""

    index: int
    seq: int
    event: Event | None
    snapshot: Snapshot | None
    expect: Expect | None
    note: str | None = None


@dataclass
class TraceFile:
    """An opened, schema-checked trace; :meth:`rows` streams and validates its content."""

    path: Path
    meta: dict[str, str]
    num_rows: int
    _pf: pq.ParquetFile = field(repr=False)
    host_override: HostCpu | None = None  # replay on another host than the trace's (CLI --host)

    @property
    def name(self) -> str:
        return self.meta.get("name") or self.path.stem

    def host(self) -> HostCpu:
        """The host the trace ran on or assumes (metadata ``cpu.features``; default: a PKS host)."""
        if self.host_override is not None:
            return self.host_override
        text = self.meta.get("cpu.features")
        if text is None:
            return DEFAULT_HOST
        try:
            return parse_features(text)
        except ValueError as exc:
            raise InputError(str(self.path), f"metadata 'pksdt.cpu.features': {exc}") from None

    def policies(self) -> list[str]:
        """Registered policies the trace's metadata asks for, each once (InputError for any other name)."""
        return metadata_policies(str(self.path), self.meta.get("policy"))

    def batches(self, with_notes: bool = False) -> Iterator[pa.RecordBatch]:
        """Validated record batches (validation raises :class:`InputError` on the first bad row).

        The free-text ``note`` column is left out unless asked for: a trace whose every row has its
        own note (an ftrace import) would otherwise cost gigabytes to decode, while a replay shows
        notes only for the few rows it reports (:meth:`notes_for` fetches those afterwards).
        """
        file_schema = self._pf.schema_arrow
        names = [n for n in file_schema.names if with_notes or n != "note"]
        schema = pa.schema([file_schema.field(n) for n in names])
        validator = BatchValidator(str(self.path), file_schema)
        nulls: dict[tuple[str, int], pa.Array] = {}
        try:
            for groups, read in self._read_plan(names):
                # (small row groups read together come out one batch each: joined, so that the
                # consumers' per-batch cost is paid once per plan entry, not once per row group)
                parts = list(self._pf.iter_batches(batch_size=BATCH_ROWS, row_groups=groups, columns=read))
                if len(parts) > 1 and sum(p.num_rows for p in parts) <= BATCH_ROWS:
                    parts = [pa.concat_batches(parts)]
                for part in parts:
                    if len(read) == len(names):
                        arrays = part.columns
                    else:  # the columns not decoded, as the all-null arrays they are
                        got = dict(zip(read, part.columns, strict=True))
                        arrays = [got[c] if c in got else _nulls(nulls, schema.field(c), part.num_rows) for c in names]
                    # (the file's fields throughout: the reader's nullability depends on the columns asked for)
                    batch = part if part.schema.equals(schema) else pa.RecordBatch.from_arrays(arrays, schema=schema)
                    yield validator.check(batch)
        except (OSError, pa.ArrowException, IndexError, ValueError, MemoryError) as exc:  # (damaged pages)
            raise InputError(str(self.path), f"cannot read the Parquet data ({_short(exc)})") from None
        validator.finish()

    def _read_plan(self, names: list[str]) -> list[tuple[list[int], list[str]]]:
        """Runs of consecutive row groups, each with the columns of ``names`` worth decoding there.

        A flat, optional column chunk whose statistics say that every value is null is not decoded
        (query engines skip row groups on the same statistics): most event columns are null in most
        rows, and decoding them was a third of a replay's read time.
        """
        md = self._pf.metadata
        leaf = {md.schema.column(j).path: j for j in range(md.num_columns)}  # a flat column's path is its name
        skippable = [n for n in names if n not in REQUIRED and n in leaf]
        # (not dictionary columns: their all-null chunks carry min/max from the dictionary, so a forged null count
        # there could not be told from the truth; their indices decode cheaply anyway)
        skippable = [n for n in skippable if not pa.types.is_dictionary(self._pf.schema_arrow.field(n).type)]
        plan: list[tuple[list[int], list[str]]] = []
        run_rows = 0  # rows in the last run of the plan
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            rows = rg.num_rows
            empty = set()
            for n in skippable:
                if _all_null_chunk(rg.column(leaf[n]), rows):
                    empty.add(n)
            read = [n for n in names if n not in empty]
            # (one read per row group, so that batches do not straddle two; small groups read together)
            if plan and plan[-1][1] == read and run_rows + rows <= SMALL_GROUPS:
                plan[-1][0].append(g)
                run_rows += rows
            else:
                plan.append(([g], read))
                run_rows = rows
        return plan

    def notes_for(self, indices: Iterable[int]) -> dict[int, str]:
        """The notes of the rows at ``indices`` (row index -> note), reading only their row groups."""
        wanted = sorted(set(indices))
        if not wanted or "note" not in self._pf.schema_arrow.names:
            return {}
        found: dict[int, str] = {}
        start = 0
        note_index = self._pf.schema_arrow.names.index("note")
        try:
            for rg in range(self._pf.metadata.num_row_groups):
                n = self._pf.metadata.row_group(rg).num_rows
                inside = [i - start for i in wanted if start <= i < start + n]
                size = self._pf.metadata.row_group(rg).column(note_index).total_uncompressed_size
                if inside and size > NOTE_CHUNK_BYTES:  # decoding it could cost gigabytes: say so instead
                    for j in inside:
                        found[start + j] = f"(note not loaded: this row group's note column is {size >> 20} MiB)"
                elif inside:
                    offset = 0
                    for batch in self._pf.iter_batches(batch_size=BATCH_ROWS, row_groups=[rg], columns=["note"]):
                        col = batch.column(0)
                        for j in inside:
                            if offset <= j < offset + batch.num_rows:
                                v = col[j - offset].as_py()
                                if v is not None:
                                    found[start + j] = v
                        offset += batch.num_rows
                start += n
        except (OSError, pa.ArrowException, UnicodeDecodeError) as exc:
            raise InputError(str(self.path), f"cannot read the note column ({_short(exc)})", column="note") from None
        return found

    def rows(self, with_notes: bool = True) -> Iterator[TraceRow]:
        """Every row in order, as model events and expectations (``with_notes``: see :meth:`batches`)."""
        index = 0
        for batch in self.batches(with_notes=with_notes):
            yield from _rows_of_batch(batch, index)
            index += batch.num_rows


def _all_null_chunk(chunk: Any, rows: int) -> bool:
    """True when a column chunk certainly holds only nulls, judged from the footer alone.

    The footer's null count is not enough: edit one number in it and a column full of values would
    be skipped and read as nulls, and a verdict would change while every other reader still sees the
    values.  So the statistics must agree with each other and with the chunk's size: all rows null,
    no minimum or maximum (a plain column's chunk with any value has them), and no more bytes than
    the definition levels of an all-null chunk take (a few dozen bytes a page).  Anything else is
    decoded.  (A footer forged further, min/max removed as well, is still believed: the footer is
    all there is to check without decoding.)
    """
    st = chunk.statistics
    if st is None or not st.has_null_count or st.null_count != rows or chunk.num_values != rows or st.has_min_max:
        return False
    return bool(chunk.total_uncompressed_size <= ALL_NULL_CHUNK_BYTES + rows // 64)


def _nulls(cache: dict[tuple[str, int], pa.Array], f: pa.Field, n: int) -> pa.Array:
    """An all-null array of ``f``'s type and length ``n`` (made once per column and length)."""
    arr = cache.get((f.name, n))
    if arr is None:
        arr = cache[(f.name, n)] = pa.nulls(n, f.type)
    return arr


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def open_trace(path: str | os.PathLike[str]) -> TraceFile:
    """Open ``path`` and check its metadata and schema (not yet its rows)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(str(p), "no such file" if not p.exists() else "not a regular file")
    open_checked(p)  # the footer's frame and structure, then the library's parse in a helper process
    return open_parquet(p, parquet_source(p), p.stat().st_size)


def open_trace_table(table: pa.Table, label: str) -> TraceFile:
    """Open a trace held in memory (a TraceBuilder's table) with every check a file gets; ``label``
    stands where a path would in messages and results."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="none", row_group_size=ROW_GROUP_ROWS)
    return open_parquet(Path(label), pa.BufferReader(sink.getvalue()), None)


def open_parquet(p: Path, source: Any, file_size: int | None) -> TraceFile:
    """Open ``source`` (a path or an Arrow buffer reader, ``file_size`` bytes if a file), reporting problems against ``p``."""
    try:
        pf = pq.ParquetFile(source)
        schema = pf.schema_arrow
    except (OSError, pa.ArrowException, ValueError, IndexError, MemoryError) as exc:
        raise InputError(str(p), f"not a readable Parquet file ({_short(exc)})") from None
    raw = schema.metadata or {}
    meta: dict[str, str] = {}
    for k, v in raw.items():
        try:
            key, val = k.decode(), v.decode()
        except UnicodeDecodeError:
            raise InputError(str(p), "file metadata is not UTF-8") from None
        if key.startswith(META_PREFIX):
            meta[key[len(META_PREFIX):]] = val
    version = meta.get("schema_version")
    if version is None:
        raise InputError(str(p), f"not a pks-difftest trace (no '{META_PREFIX}schema_version' in the file metadata)")
    if version != SCHEMA_VERSION:
        raise InputError(str(p), f"trace format version {version!r} is not supported (this tool reads {SCHEMA_VERSION})")
    check_file_schema(str(p), schema, meta)
    check_sizes(str(p), pf.metadata, file_size)
    tf = TraceFile(p, meta, pf.metadata.num_rows, pf)
    tf.host()  # reject unknown host features now, before any replay output
    tf.policies()  # and names that are not registered policies (a trace never names a file)
    return tf


def check_sizes(path: str, md: pq.FileMetaData, file_size: int | None = None) -> None:
    """Refuse, from the footer alone, sizes that could not stream within the memory target (1 GiB
    peak RSS, issue 8): absurd row counts, row groups or column chunks.  Bounds: :data:`MAX_ROWS`,
    :data:`MAX_GROUP_ROWS`, :data:`MAX_CHUNK_BYTES`, and :data:`~difftest.trace.validate.MAX_LIST` elements
    per list cell on average (the per-row list bound is checked on each batch)."""
    if md.num_rows > MAX_ROWS:
        raise InputError(path, f"the file claims {md.num_rows} rows; traces are limited to {MAX_ROWS}")
    total = 0
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        total += rg.num_rows
        if rg.num_rows > MAX_GROUP_ROWS:
            raise InputError(path, f"row group {g} claims {rg.num_rows} rows (at most {MAX_GROUP_ROWS} per group)")
        for c in range(rg.num_columns):
            col = rg.column(c)
            try:
                name = col.path_in_schema.split(".")[0]
            except UnicodeDecodeError:  # a damaged footer; the Arrow schema decoded, this copy did not
                raise InputError(path, f"row group {g}: column {c} has a name that is not UTF-8") from None
            if file_size is not None and col.total_compressed_size != 0:  # every chunk's bytes lie inside the file
                # (a chunk with no pages, as in an empty row group, may say offset 0)
                start = col.dictionary_page_offset if col.has_dictionary_page else col.data_page_offset
                if start is None or not 4 <= start <= file_size or col.total_compressed_size < 0 \
                        or start + col.total_compressed_size > file_size:
                    raise InputError(path, f"row group {g}: the footer places this column's pages outside the file "
                                     f"(offset {start}, {col.total_compressed_size} bytes, file {file_size} bytes)",
                                     column=name)
            if col.total_uncompressed_size > MAX_CHUNK_BYTES:
                raise InputError(path, f"row group {g} holds {col.total_uncompressed_size} bytes of this column "
                                 f"(at most {MAX_CHUNK_BYTES})", column=name)
            if name in _LIST_COLUMNS and col.num_values > MAX_LIST * max(1, rg.num_rows):
                raise InputError(path, f"row group {g} holds {col.num_values} list elements in {rg.num_rows} rows "
                                 f"(at most {MAX_LIST} per row)", column=name)
    if total != md.num_rows:
        raise InputError(path, f"the footer claims {md.num_rows} rows but its row groups hold {total}")


def column_values(arr: pa.Array) -> list[Any]:
    """``arr.to_pylist()``, faster for numbers and dictionaries (the same Python values)."""
    t = arr.type
    if pa.types.is_dictionary(t):
        words = [*arr.dictionary.to_pylist(), None]  # (a null's slot may index past an empty dictionary)
        out = [words[i] for i in int_values(arr).tolist()]
    elif pa.types.is_integer(t):
        out = int_values(arr).tolist()
    elif pa.types.is_boolean(t):
        out = [bool(x) for x in int_values(arr).tolist()]
    else:
        return arr.to_pylist()  # type: ignore[no-any-return]
    if arr.null_count:
        ok = valid_mask(arr).tolist()
        out = [v if k else None for v, k in zip(out, ok, strict=True)]
    return out


def _rows_of_batch(batch: pa.RecordBatch, start: int) -> Iterator[TraceRow]:
    names = batch.schema.names
    cols: dict[str, list[Any]] = {n: column_values(batch.column(i)) for i, n in enumerate(names)}
    n = batch.num_rows
    none = [None] * n
    seqs = cols["seq"]
    kinds = cols["kind"]
    ev_cols = [(c, cols.get(c, none)) for c in _EVENT_COLUMNS if c in cols]
    exp = {c: cols.get(c, none) for c in (
        "exp_result", "exp_pfec", "exp_cr2", "exp_value", "exp_values", "exp_count",
        "exp_exit_reason", "exp_vm_error", "exp_exit_qual", "exp_rule")}
    paths = cols.get("path", none)
    notes = cols.get("note", none)
    for i in range(n):
        kind = kinds[i]
        vals = exp["exp_values"][i]
        expect = Expect(
            exp["exp_result"][i], exp["exp_pfec"][i], exp["exp_cr2"][i], exp["exp_value"][i],
            tuple(vals) if vals is not None else None, exp["exp_count"][i], exp["exp_exit_reason"][i],
            exp["exp_vm_error"][i], exp["exp_exit_qual"][i], exp["exp_rule"][i],
        )
        if kind == SNAPSHOT_KIND:
            yield TraceRow(start + i, seqs[i], None, Snapshot(paths[i], exp["exp_value"][i], exp["exp_rule"][i]), None, notes[i])
            continue
        ev = Event(kind, seq=seqs[i])
        for c, values in ev_cols:
            v = values[i]
            if v is not None:
                setattr(ev, c, tuple(v) if c in _LIST_COLUMNS else v)
        yield TraceRow(start + i, seqs[i], ev, None, None if expect.is_empty() else expect, notes[i])


def rows_to_table(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, str], *, renumber: bool = False,
                  shared: bool = False) -> pa.Table:
    """Build a v1 table from row dicts (missing keys are null) and metadata (prefix added).

    ``renumber``: ``seq`` is each row's position (0, 1, ...), whatever the rows say (no renumbered copies).
    ``shared``: the same dict may stand at many positions (rows are values: a generated trace of a million
    rows has a few thousand distinct ones); each distinct row is converted once and the columns gathered.
    """
    n = len(rows)
    gather = None
    if shared:
        first: dict[int, int] = {}
        distinct: list[Mapping[str, Any]] = []
        index: list[int] = []
        for r in rows:
            k = first.get(id(r))
            if k is None:
                k = first[id(r)] = len(distinct)
                distinct.append(r)
            index.append(k)
        gather = pa.array(index, type=pa.int64())
        rows = distinct
    data = _columns(rows)
    if renumber:
        data.pop("seq", None)
    arrays = []
    for f in ARROW_SCHEMA:
        values = data.get(f.name)
        if values is None:  # no row has it: the same all-null array, without converting n Nones
            arrays.append(pa.array(np.arange(n, dtype=np.uint64)) if renumber and f.name == "seq"
                          else pa.nulls(n, f.type))
            continue
        # (a dictionary column is encoded before the gather: its first distinct rows hold its values in the
        # order of their first appearance in the whole column, the order dictionary_encode gives them)
        array = (pa.array(values, type=pa.string()).dictionary_encode() if pa.types.is_dictionary(f.type)
                 else pa.array(values, type=f.type))
        arrays.append(array if gather is None else array.take(gather))
    md = {f"{META_PREFIX}{k}": str(v) for k, v in meta.items()}
    md.setdefault(f"{META_PREFIX}schema_version", SCHEMA_VERSION)
    return pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA.with_metadata(md))


def _columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """The rows' values by column (None where a row lacks the key), for the columns some row has.

    One pass over the rows, each value dropped into its column: a row has a few of the ~50 columns, so
    asking every row for every column would cost ten times as many look-ups.
    """
    n = len(rows)
    data: dict[str, list[Any]] = {}
    for i, r in enumerate(rows):
        for k, v in r.items():
            try:
                data[k][i] = v
            except KeyError:  # a column's first value
                data[k] = [None] * n
                data[k][i] = v
    return data


def _public(path: str) -> None:
    """mkstemp creates 0600; give outputs the mode a plain open() would (0666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _temp_for(dest: Path) -> tuple[int, str]:
    """A new hidden temporary file beside ``dest``: ``.NAME.PID.XXXXXXXX.tmp`` (the pid lets a later
    write tell a leftover of a killed writer from a write still in progress)."""
    return tempfile.mkstemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=".tmp", dir=dest.parent)


def process_exists(pid: int) -> bool:
    """Whether process ``pid`` exists (the writer or recorder that named a leftover after itself)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temps(dest: Path) -> list[Path]:
    """Delete temporary files that earlier writes to ``dest`` left behind when killed (SIGKILL, power
    loss: no ``except`` ran).  Only files named like ours whose writer process no longer exists are
    touched, so a concurrent write to the same name keeps its temporary file.  (A writer on another
    host sharing the directory would look dead: its write then fails loudly at the rename.)"""
    pattern = re.compile(re.escape(f".{dest.name}.") + r"(\d+)\.[A-Za-z0-9_]{8}\.tmp")
    removed = []
    for p in dest.parent.glob(glob.escape(f".{dest.name}.") + "*.tmp"):
        m = pattern.fullmatch(p.name)
        if m and int(m.group(1)) != os.getpid() and not process_exists(int(m.group(1))):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def write_table_atomic(table: pa.Table, path: str | os.PathLike[str]) -> Path:
    """Write ``table`` as Parquet under ``path`` via a temporary file and a rename."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_for(dest)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP_ROWS)
        _public(tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    remove_stale_temps(dest)
    return dest


def write_trace(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]],
                meta: Mapping[str, str], *, renumber: bool = False, shared: bool = False) -> Path:
    """Write a trace from row dicts, atomically (``renumber``, ``shared``: as :func:`rows_to_table`)."""
    return write_table_atomic(rows_to_table(rows, meta, renumber=renumber, shared=shared), path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write a text output (report, JSON, JUnit) via a temporary file and a rename."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_for(dest)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        _public(tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    remove_stale_temps(dest)
    return dest


def find_traces(paths: Iterable[str]) -> list[Path]:
    """Every ``*.parquet`` under ``paths`` (files taken as they are), sorted, de-duplicated."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(x for x in p.rglob("*.parquet") if x.is_file() and not x.name.startswith("."))
        elif p.exists():
            found.append(p)
        else:
            raise InputError(str(p), "no such file or directory")
    seen: set[Path] = set()
    out = []
    for p in found:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            out.append(p)
    return out
