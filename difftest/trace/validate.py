"""Validation on ingest: every problem becomes one :class:`InputError` naming file, event, column.

The checks run on whole record batches with Arrow compute, so validating costs a few vector
passes per batch rather than Python work per row.  Integer columns written with another integer
type (pandas writes int64) are accepted when every value fits, and are cast to the v1 type.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from difftest.errors import InputError
from reference_model.events import KINDS
from reference_model.machine import SNAPSHOT_PATH
from reference_model.rules import RULES

from .arrow_columns import int_values, valid_mask
from .schema import COLUMN_BY_NAME, EXPECT_COLUMNS, PRODUCERS, REQUIRED, SNAPSHOT_KIND, Column, scalar_max
from .snapshot_paths import known_snapshot_path, snapshot_vcpu

_KIND_REQUIRED: dict[str, tuple[str, ...]] = {
    k: tuple(f[:-1] for f in reads if f.endswith("!")) for k, (reads, _doc) in KINDS.items()
}
_KIND_REQUIRED[SNAPSHOT_KIND] = ("path", "exp_value")
_PATH_RE = re.compile(SNAPSHOT_PATH.pattern)
MAX_VCPU = 0xFFFF  # the vcpu column is uint16; a snapshot path's vCPU id has the same bound


def path_ok(path: str) -> bool:
    """A well-formed state path whose vCPU id, if any, is a vCPU the trace can name (0..65535):
    ``vcpu`` followed by 5,000 digits is bad input, not an integer to convert."""
    m = _PATH_RE.match(path)
    if m is None:
        return False
    digits = m.group(1)
    return digits is None or (len(digits) <= 5 and int(digits) <= MAX_VCPU)
MAX_LIST = 4096  # elements in one list cell (KVM_SET/GET_MSRS take far fewer MSRs per call)


def _type_ok(col: Column, t: pa.DataType) -> bool:
    kind = col.kind
    if kind == "int":
        return pa.types.is_integer(t)
    if kind == "bool":
        return pa.types.is_boolean(t)
    if kind == "str":
        if pa.types.is_dictionary(t):
            t = t.value_type
        return pa.types.is_string(t) or pa.types.is_large_string(t)
    if kind == "list_int":
        return (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_integer(t.value_type)
    return False


def check_file_schema(path: str, schema: pa.Schema, meta: dict[str, str]) -> None:
    """File-level checks: producer, unknown/missing columns, column types."""
    producer = meta.get("producer")
    if producer is None:
        raise InputError(path, "file metadata lacks 'pksdt.producer'")
    if producer not in PRODUCERS:
        raise InputError(path, f"unknown producer {producer!r} in file metadata (one of {', '.join(PRODUCERS)})")
    for name in schema.names:
        col = COLUMN_BY_NAME.get(name)
        if col is None:
            raise InputError(path, "unknown column (see `difftest schema`)", column=name)
        if schema.names.count(name) > 1:
            raise InputError(path, "column appears more than once", column=name)
        t = schema.field(name).type
        if not _type_ok(col, t):
            raise InputError(path, f"wrong type {t} (expected {col.kind.replace('_', ' of ')})", column=name)
    for name in REQUIRED:
        if name not in schema.names:
            raise InputError(path, "required column is missing", column=name)


class BatchValidator:
    """Checks batches in order, carrying what spans batches (last seq, comparable rows)."""

    def __init__(self, path: str, schema: pa.Schema) -> None:
        self.path = path
        self.schema = schema
        self.offset = 0
        self.last_seq: int | None = None
        self.comparable = 0
        self.vcpus_seen: set[int] = set()  # vCPUs some event ran on so far (a snapshot may name only these)

    def fail(self, row: int, column: str | None, message: str, seq: int | None = None) -> InputError:
        return InputError(self.path, message, row=self.offset + row, seq=seq, column=column)

    def _first(self, mask: pa.Array) -> int:
        """Index of the first true value of a boolean mask (nulls count as false)."""
        arr = pc.fill_null(mask, False).to_numpy(zero_copy_only=False)
        return int(np.argmax(arr))

    def _any(self, mask: pa.Array) -> bool:
        return bool(pc.any(pc.fill_null(mask, False)).as_py())

    def _check_utf8(self, name: str, arr: pa.Array) -> None:
        """Parquet does not guarantee that string data is UTF-8; reject it here, naming the first bad row."""
        values = arr.dictionary if pa.types.is_dictionary(arr.type) else arr
        try:
            values.validate(full=True)
            return
        except pa.ArrowInvalid:
            pass
        bad = None
        for j, raw in enumerate(values.cast(pa.binary()).to_pylist()):
            try:
                if raw is not None:
                    raw.decode("utf-8")
            except UnicodeDecodeError:
                bad = j
                break
        if bad is None:  # invalid for another reason (offsets); still unreadable
            raise self.fail(0, name, "malformed string data")
        row = bad if values is arr else self._first(pc.equal(arr.indices, bad))
        raise self.fail(row, name, "text is not UTF-8")

    def check(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Validate ``batch`` and return it with integer columns cast to their v1 types.

        A batch in the canonical layout is first checked on raw buffers (:meth:`_quick`); anything
        that check is not sure of, it leaves to the exact checks below, which name the bad row.
        """
        start = self.offset
        out = batch if self._quick(batch) else self._check(batch)
        self._check_names(out, start)
        return out

    def _check_names(self, batch: pa.RecordBatch, start: int) -> None:
        """Typos are bad input: an ``exp_rule`` that is no rule id, a snapshot path no policy models,
        a snapshot of a vCPU no earlier event ran on (the model would invent it and read 0)."""
        names = batch.schema.names
        columns = {name: batch.column(i) for i, name in enumerate(names)}
        seq = columns["seq"]

        def fail(i: int, column: str, message: str) -> InputError:
            return InputError(self.path, message, row=start + i, seq=int(seq[i].as_py()), column=column)

        def words_of(arr: pa.Array) -> tuple[list[str | None], np.ndarray]:
            """The column as (distinct words, each row's index into them): a dictionary's own codes (no
            string is decoded per row), or codes made for a plain string column."""
            if not pa.types.is_dictionary(arr.type):
                arr = arr.dictionary_encode()
            words: list[str | None] = [*arr.dictionary.to_pylist(), None]
            first_of: dict[str | None, int] = {}
            lut = np.array([first_of.setdefault(w, j) for j, w in enumerate(words)], dtype=np.int64)  # (one code a word)
            codes = lut[int_values(arr)]
            if arr.null_count:
                codes[~valid_mask(arr)] = len(words) - 1
            return words, codes

        def in_row_order(codes: np.ndarray) -> list[int]:
            """The distinct codes, in the order of the rows where each first appears."""
            distinct, first = np.unique(codes, return_index=True)
            return distinct[np.argsort(first)].tolist()  # type: ignore[no-any-return]

        rules = columns.get("exp_rule")
        if rules is not None and rules.null_count < len(rules):
            words, codes = words_of(rules)
            for j in in_row_order(codes):
                r = words[j]
                if r is not None and r not in RULES:
                    raise fail(int(np.argmax(codes == j)), "exp_rule", f"{r!r} is not a rule id (see `difftest rules`)")
        vcpu = int_values(columns["vcpu"])
        kind_words, kind_codes = words_of(columns["kind"])
        is_snap = np.isin(kind_codes, [j for j, w in enumerate(kind_words) if w == SNAPSHOT_KIND])
        if is_snap.any() and "path" in columns:
            path_words, path_codes = words_of(columns["path"])
            events = ~is_snap
            for j in in_row_order(path_codes[is_snap]):
                p = path_words[j]
                if p is None:
                    continue
                at = (path_codes == j) & is_snap
                first = int(np.argmax(at))
                if not known_snapshot_path(p):
                    raise fail(first, "path", f"no policy models state path {p!r} (a typo? see `difftest schema`)")
                v = snapshot_vcpu(p)
                if v is not None and v not in self.vcpus_seen:
                    ran = events & (vcpu == v)
                    if not ran.any() or int(np.argmax(ran)) > first:
                        raise fail(first, "path", f"snapshot of vcpu{v}, which no earlier event ran on")
            self.vcpus_seen.update(np.unique(vcpu[events]).tolist())
        else:
            self.vcpus_seen.update(np.unique(vcpu).tolist())

    def _quick(self, batch: pa.RecordBatch) -> bool:
        """True when ``batch`` certainly passes every check of :meth:`_check` (and then counts it)."""
        n = batch.num_rows
        if n == 0:
            return False
        names = batch.schema.names
        columns = {name: batch.column(i) for i, name in enumerate(names)}
        kinds = columns["kind"]
        if not pa.types.is_dictionary(kinds.type):
            return False
        for name in REQUIRED:
            if columns[name].null_count:
                return False
        valid: dict[str, np.ndarray] = {}
        for name, arr in columns.items():
            col = COLUMN_BY_NAME[name]
            if arr.type != col.type:  # a cast or a plain string column: the exact path
                return False
            nulls = arr.null_count
            if nulls == n:
                continue
            if col.kind == "list_int":
                if not self._quick_list(arr, col):
                    return False
                valid[name] = valid_mask(arr)
                continue
            if col.kind == "str":
                if not pa.types.is_dictionary(arr.type):  # (free text such as notes: the exact path)
                    return False
                words = arr.dictionary
                try:
                    words.validate(full=True)
                except pa.ArrowInvalid:
                    return False
                if col.choices is not None and not set(words.to_pylist()) <= set(col.choices):
                    return False
                if name == "path" and not all(path_ok(w) for w in words.to_pylist()):
                    return False
            elif col.kind == "int":
                signed = not pa.types.is_unsigned_integer(arr.type)
                if signed or col.max_value is not None:  # (otherwise the type itself is the bound)
                    vals = int_values(arr)  # (nulls read as 0, which passes both checks)
                    if int(vals.max()) > scalar_max(col) or (signed and int(vals.min()) < 0):  # type: ignore[operator]
                        return False
            valid[name] = valid_mask(arr)
        seq_np = int_values(columns["seq"])
        if (self.last_seq is not None and int(seq_np[0]) <= self.last_seq) or (n > 1 and (seq_np[1:] <= seq_np[:-1]).any()):
            return False
        codes = int_values(kinds)
        words = kinds.dictionary.to_pylist()
        present = np.bincount(codes, minlength=len(words))
        for code, kind in enumerate(words):
            if not present[code]:
                continue
            need = _KIND_REQUIRED.get(kind, ())
            if kind == "set_msrs" and "msrs" in columns and "values" in columns:
                lens = [np.diff(int_values(columns[c].offsets)) for c in ("msrs", "values")]
                if ((codes == code) & (lens[0] != lens[1])).any():  # (a null list's length reads as 0)
                    return False
            if need:
                is_kind = codes == code
                for fname in need:
                    v = valid.get(fname)
                    if v is None or (is_kind & ~v).any():
                        return False
        comparable = np.zeros(n, dtype=bool)
        if SNAPSHOT_KIND in words:
            comparable |= codes == words.index(SNAPSHOT_KIND)
        for name in EXPECT_COLUMNS:
            v = valid.get(name)
            if v is not None:
                comparable |= v
        self.last_seq = int(seq_np[-1])
        self.comparable += int(comparable.sum())
        self.offset += n
        return True

    @staticmethod
    def _quick_list(arr: pa.Array, col: Column) -> bool:
        """True when list column ``arr`` (of its v1 type) certainly passes :meth:`_check`'s list checks:
        no list longer than MAX_LIST, no null element, every element within the column's bound."""
        lens = np.diff(int_values(arr.offsets))
        if len(lens) and int(lens.max()) > MAX_LIST:
            return False
        items = arr.values  # (the whole child array: a superset of this slice's elements, so a safe test)
        if items.null_count:
            return False
        hi = scalar_max(col)
        return hi is None or not len(items) or int(int_values(items).max()) <= hi

    def _check(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Every check, naming the first bad row; integer columns cast to their v1 types."""
        n = batch.num_rows
        names = batch.schema.names
        columns = {name: batch.column(i) for i, name in enumerate(names)}
        seqs = columns["seq"]
        for name in REQUIRED:
            arr = columns[name]
            if arr.null_count:
                raise self.fail(self._first(pc.is_null(arr)), name, "required value is missing")
        for name, arr in columns.items():
            if COLUMN_BY_NAME[name].kind == "str":
                self._check_utf8(name, arr)
        # integer ranges (and casts to the canonical type)
        for name, arr in list(columns.items()):
            col = COLUMN_BY_NAME[name]
            if col.kind not in ("int", "list_int"):
                continue
            if col.kind == "list_int" and (pc.max(pc.list_value_length(arr)).as_py() or 0) > MAX_LIST:
                lengths = pc.list_value_length(arr)
                i = self._first(pc.greater(lengths, MAX_LIST))
                raise self.fail(i, name, f"list of {lengths[i].as_py()} elements (at most {MAX_LIST})")
            flat = pc.list_flatten(arr) if col.kind == "list_int" else arr
            hi = scalar_max(col)
            if col.kind == "list_int" and flat.null_count:
                idx = int(pc.list_parent_indices(arr)[self._first(pc.is_null(flat))].as_py())
                raise self.fail(idx, name, "null element in a list")
            if len(flat) and flat.null_count < len(flat):
                mm = pc.min_max(flat)
                lo_v, hi_v = mm["min"].as_py(), mm["max"].as_py()
                bad = None
                if lo_v < 0:
                    bad = (pc.less(flat, 0), "negative value")
                elif hi is not None and hi_v > hi:
                    bad = (pc.greater(flat, pa.scalar(hi, flat.type)), f"value out of range (at most {hi})")
                if bad is not None:
                    idx = self._first(bad[0])
                    if col.kind == "list_int":
                        idx = int(pc.list_parent_indices(arr)[idx].as_py())
                    raise self.fail(idx, name, bad[1])
            if arr.type != col.type and not pa.types.is_dictionary(col.type):
                columns[name] = arr.cast(col.type)
        # sequence numbers strictly increasing, across batches too
        seq_np = columns["seq"].to_numpy(zero_copy_only=False).astype(np.uint64)
        if n:
            if self.last_seq is not None and seq_np[0] <= self.last_seq:
                raise self.fail(0, "seq", f"sequence number {int(seq_np[0])} does not follow {self.last_seq}",
                                seq=int(seq_np[0]))
            if n > 1:
                later = np.nonzero(seq_np[1:] <= seq_np[:-1])[0]
                if len(later):
                    i = int(later[0]) + 1
                    raise self.fail(i, "seq", f"sequence number {int(seq_np[i])} does not follow {int(seq_np[i - 1])}",
                                    seq=int(seq_np[i]))
            self.last_seq = int(seq_np[-1])
        del seqs
        # enumerated values
        for name, arr in columns.items():
            col = COLUMN_BY_NAME[name]
            if col.choices is None or arr.null_count == n:
                continue
            plain = arr.cast(pa.string()) if pa.types.is_dictionary(arr.type) else arr
            ok = pc.is_in(plain, value_set=pa.array(col.choices, pa.string()))
            bad = pc.and_(pc.invert(ok), pc.is_valid(plain))
            if self._any(bad):
                i = self._first(bad)
                raise self.fail(i, name, f"unknown value {plain[i].as_py()!r}", seq=int(seq_np[i]))
        # kind-specific required fields
        kinds = columns["kind"]
        kinds_plain = kinds.cast(pa.string()) if pa.types.is_dictionary(kinds.type) else kinds
        for kind in pc.unique(kinds_plain).to_pylist():
            need = _KIND_REQUIRED.get(kind, ())
            if not need:
                continue
            is_kind = pc.equal(kinds_plain, kind)
            for fname in need:
                arr = columns.get(fname)
                if arr is None:
                    i = self._first(is_kind)
                    raise self.fail(i, fname, f"a '{kind}' event needs this column", seq=int(seq_np[i]))
                missing = pc.and_(is_kind, pc.is_null(arr))
                if self._any(missing):
                    i = self._first(missing)
                    raise self.fail(i, fname, f"a '{kind}' event needs a value here", seq=int(seq_np[i]))
        if "path" in columns and columns["path"].null_count < n:
            paths = columns["path"]
            plain = paths.cast(pa.string()) if pa.types.is_dictionary(paths.type) else paths
            for p in pc.unique(plain).to_pylist():
                if p is not None and not path_ok(p):
                    i = self._first(pc.equal(plain, p))
                    why = "vCPU id out of range (0..65535)" if _PATH_RE.match(p) else "malformed state path"
                    raise self.fail(i, "path", f"{why} {p!r} (e.g. vcpu0.pkrs)", seq=int(seq_np[i]))
        if "msrs" in columns and "values" in columns:
            is_set = pc.equal(kinds_plain, "set_msrs")
            if self._any(is_set):
                ln_m = pc.list_value_length(columns["msrs"])
                ln_v = pc.list_value_length(columns["values"])
                bad = pc.and_(is_set, pc.not_equal(ln_m, ln_v))
                if self._any(bad):
                    i = self._first(bad)
                    raise self.fail(i, "values", "set_msrs needs one value per MSR", seq=int(seq_np[i]))
        # comparable rows: a snapshot, or any expectation column set
        comparable = pc.equal(kinds_plain, SNAPSHOT_KIND)
        for name in EXPECT_COLUMNS:
            if name in columns:
                comparable = pc.or_(comparable, pc.is_valid(columns[name]))
        self.comparable += int(pc.sum(pc.fill_null(comparable, False).cast(pa.int64())).as_py() or 0)
        self.offset += n
        return pa.RecordBatch.from_arrays(list(columns.values()), names=list(columns))

    def finish(self) -> None:
        """Trace-level checks once every batch has been seen."""
        if self.offset == 0:
            raise InputError(self.path, "the trace has no events")
        if self.comparable == 0:
            raise InputError(self.path, "the trace has no comparable events (no exp_* value and no snapshot)")
