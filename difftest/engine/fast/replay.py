"""Fast replay: the answers of :mod:`difftest.engine.reference`, with page accesses evaluated on columns.

Most of a real trace is page accesses, and an access changes no architectural state: its
outcome is a pure function of the vCPU's registers (CR0/CR4/EFER, the PKRS the hardware checks
against, PKRU), its mappings, the stale-TLB set, and of the access itself, except that
``cr2`` is the address.  So, per record batch:

* every other row (``map``, MSR and CR writes, VMX, host ioctls, snapshots, accesses with
  unusual columns) goes through the reference model one at a time, as in ``replay_rows``;
* between two such rows, each (vCPU, level) pair that is in the guest and may run an access
  has a *state* (a tuple of the values above), interned to an id;
* the accesses' outcomes are computed per distinct (state, 4 KiB page, access kind, CPL) by
  the model's own :func:`~reference_model.paging.check_access`, then spread over the rows with
  numpy and compared with the expectation columns.  Only rows that differ from their
  expectation (divergent or masked) and the rows around the first divergence become
  :class:`RowResult` objects, through :func:`~difftest.verdict.diff.diff_outcome` as in the reference.

Rule coverage is counted per distinct outcome times its number of rows, so it is exact.  The
TLB (ARCH.TLB) stays exact too: an access that succeeds fills the TLB, and fills are applied
late, so the CPU's TLB set is swapped for a :class:`TlbLog` that records flushes and INVLPGs by
row; a fill is kept unless a later flush or INVLPG of its page dropped it.  The only events
that *read* the TLB (``map`` and a ``mov_cr4`` that toggles PKS/PKE) are keyed on the TLBs'
contents, which :meth:`FastReplay._tlb_now` works out from the live sets plus the pending fills
that survive (the same rule, applied to the few accesses since the TLB's last flush); the model
itself, on a miss, runs only after every pending access is settled.

Rows that are not accesses go through :mod:`difftest.engine.fast.transitions`.  When every lane knows the
transitions, a *run* (:meth:`FastReplay._run_transitions`) follows them row after row with one dict
probe each, keyed by small integer ids of the events (:meth:`BatchRows.key_ids`, grouped on
columns); the run's counters, TLB changes and the access states of its ranges are applied in bulk.

An access whose vCPU is not known to be ready (not in the guest, the wrong level for L2, an
unknown machine class) is stepped by the model too.  ``DIFFTEST_REFERENCE=1`` (or
``difftest --reference``) turns all of this off.
"""

from __future__ import annotations

import gc
import os
import time
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from itertools import repeat
from operator import attrgetter
from typing import Any

import numpy as np
import pyarrow as pa

from difftest.engine.fast.transitions import KEY_BITS, EventKeys, TransitionCache, event_key
from difftest.progress import advance as advance_progress
from difftest.trace.arrow_columns import index_array, int_values, valid_mask
from difftest.trace.io import _EVENT_COLUMNS, _LIST_COLUMNS, Expect, Snapshot, TraceFile, TraceRow, column_values
from difftest.trace.schema import SNAPSHOT_KIND
from difftest.verdict.diff import diff_outcome
from difftest.verdict.profiles import Profile
from difftest.verdict.results import CONTEXT, MAX_KEPT_DIVERGENCES, ReplayResult, RowResult
from difftest.verdict.snapshot import check_snapshot
from reference_model import cpu as cpu_mod
from reference_model import kvm as kvm_mod
from reference_model import paging as paging_mod
from reference_model.cpu import AccessInputs, Cpu, classify_access
from reference_model.events import ACCESS_KINDS, OUTCOME_FIELDS, RESULTS, Event, Outcome, kinds_where
from reference_model.hw import HwMachine, HwVcpu
from reference_model.kvm import GuestCpu, KvmMachine, KvmVcpu
from reference_model.machine import Machine
from reference_model.paging import Mapping, PageTables
from reference_model.pkvm import PkvmMachine, PkvmVcpu
from reference_model.policies import Policy
from reference_model.registers import CR0_PG, CR4_PKE, CR4_PKS

from .dense_table import DenseTable
from .tlb_log import TlbLog

REFERENCE_ENV = "DIFFTEST_REFERENCE"

_RESULT_CODE = {r: i for i, r in enumerate(RESULTS)}
_RULES_OF = attrgetter("rules")
_RESULT_OF = attrgetter("result")
_SCALAR_EXPECT = ("pfec", "cr2", "value", "count", "exit_reason", "vm_error", "exit_qual")
_U64 = (1 << 64) - 1
_PF = _RESULT_CODE["pf"]
_ACCESS_CODE = {a: i for i, a in enumerate(ACCESS_KINDS)}
_LEVELS = ("host", "l1", "l2")
# Columns an access row handled on columns may use; any other non-null column sends it to the model.
_FAST_COLUMNS = frozenset({"seq", "kind", "vcpu", "level", "addr", "access", "cpl", "path", "note",
                           "exp_result", "exp_pfec", "exp_cr2", "exp_rule"})
# Events that read the TLB (Cpu.map, Cpu.set_cr4): pending accesses are settled before them.
_TLB_READERS = kinds_where("reads_tlb")
_MACHINES = (KvmMachine, PkvmMachine, HwMachine)
_CPUS = (Cpu, GuestCpu)
_NO_PAGES: frozenset[int] = frozenset()
SMALL = 512  # rows up to which a lookup in Python beats numpy's per-call cost
PAGE_WINDOW = 1 << 20  # 4 KiB pages (4 GiB) from the lowest first seen, whose ids a dense table gives
assert len(ACCESS_KINDS) <= 8, "Lane.classify packs (access << 2 | cpl) in 5 bits"
# Stretches: the trace is judged STRETCH rows at a time (see FastReplay.stretches) ...
STRETCH = 8192
ACCESS_RUN = 2  # ... repeated enough for the columns when its accesses outnumber its stepped rows this many times ...
REPEAT_SAMPLE = 1024  # ... or when at most 1 in DISTINCT_SHARE of up to this many stepped rows is a new event;
DISTINCT_SHARE = 4
PLAIN_KEYS = 1 << 16  # distinct events of stretches stepped row by row, kept for later stretches (some 50 MB at most)
TRIAL_ROWS = 1024  # a stretch on a memo that has not proven itself yet (see TransitionCache.failing)
MAX_UNSAMPLED = 16  # ... (sampled again at most this many stretches after one that did not repeat)
STRETCH_MODE = "judge"  # tests: "columns" or "model" for every stretch, "alternate" to switch at each
MIN_FAST_ROWS = 64  # (a stretch this short is stepped by the model: the columns' fixed cost is more than it saves)
TLB_PEEK = 256  # pending accesses a TLB reader looks at one by one before it settles them all instead
# Event's fields after ``kind``, in declaration order (trace columns of the same names fill them).
_EVENT_FIELDS = tuple(f.name for f in dataclass_fields(Event))[1:]
assert set(_EVENT_FIELDS) - {"seq"} == set(_EVENT_COLUMNS), "Event fields and trace columns disagree"


def reference_only() -> bool:
    """True when the user asked for the one-event-at-a-time reference path."""
    return os.environ.get(REFERENCE_ENV, "") not in ("", "0")


def can_use(trace: object, observer: object = None) -> bool:
    """The fast path needs record batches (a trace file), no per-row observer and the model as written."""
    return observer is None and not reference_only() and isinstance(trace, TraceFile) and model_is_pristine()


# What the fast path relies on, by defining module and qualified name.  A test that monkeypatches one
# of them (tests/test_mutation.py breaks one rule at a time) gets the reference path, which follows
# the patched model wherever it goes.
_RELIED_ON = (
    (cpu_mod, "check_access", "reference_model.paging", "check_access"),
    (paging_mod, "check_access", "reference_model.paging", "check_access"),
    (paging_mod, "denies", "reference_model.pkeys", "denies"),
    (cpu_mod, "classify_access", "reference_model.cpu", "classify_access"),
    *((Cpu, name, "reference_model.cpu", f"Cpu.{name}")
      for name in ("access", "access_inputs", "pkrs_for_access", "set_cr4", "mov_cr4", "map", "flush_tlb", "invlpg",
                   "__init__")),
    *((cls, name, cls.__module__, f"{cls.__name__}.{name}")
      for cls in (KvmMachine, HwMachine) for name in ("access_cpu", "cpus", "cpu_at")),
    (KvmVcpu, "access_cpu", "reference_model.kvm", "KvmVcpu.access_cpu"),
    (GuestCpu, "pkrs_for_access", "reference_model.kvm", "GuestCpu.pkrs_for_access"),
    (KvmMachine, "step", "reference_model.kvm", "KvmMachine.step"),
    (KvmVcpu, "step", "reference_model.kvm", "KvmVcpu.step"),
    (KvmVcpu, "enter", "reference_model.kvm", "KvmVcpu.enter"),
    (KvmVcpu, "nested_handler", "reference_model.kvm", "KvmVcpu.nested_handler"),
    (PkvmVcpu, "step", "reference_model.pkvm", "PkvmVcpu.step"),
    (HwMachine, "step", "reference_model.hw", "HwMachine.step"),
    *((HwVcpu, name, "reference_model.hw", f"HwVcpu.{name}") for name in ("step", "l1_step", "l2_step")),
    (PageTables, "lookup", "reference_model.paging", "PageTables.lookup"),
    (PageTables, "map", "reference_model.paging", "PageTables.map"),
)


def model_is_pristine() -> bool:
    """True when none of the model functions the fast path reasons about has been replaced."""
    for owner, attr, module, qualname in _RELIED_ON:
        f = getattr(owner, attr, None)
        if getattr(f, "__module__", None) != module or getattr(f, "__qualname__", None) != qualname:
            return False
    return cpu_mod.CR0_PG == CR0_PG and "access" not in kvm_mod.KVM_HANDLED and "access" not in kvm_mod.HOST_KINDS


# ------------------------------------------------------------------------------------ columns
def _valid(arr: pa.Array) -> np.ndarray:
    return valid_mask(arr)


def _ints(arr: pa.Array | None, n: int) -> np.ndarray:
    if arr is None:
        return np.zeros(n, dtype=np.int64)
    return int_values(arr)


def _codes(arr: pa.Array | None, table: dict[str, int], n: int) -> np.ndarray:
    """Dictionary or string column as codes of ``table`` (-1 null, -2 not in the table)."""
    if arr is None:
        return np.full(n, -1, dtype=np.int64)
    if not pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_encode()
    lut = np.array([table.get(s, -2) for s in arr.dictionary.to_pylist()] + [-1], dtype=np.int64)
    codes = lut[int_values(arr)]
    if arr.null_count:
        codes[~valid_mask(arr)] = -1
    return codes  # type: ignore[no-any-return]


def _event_fields(arrays: dict[str, pa.Array], m: int, seqs: list[Any] | None) -> list[list[Any]]:
    """One list of Python values per Event field after ``kind``, in order (``seq`` left out when ``seqs`` is None)."""
    none = [None] * m
    fields: list[list[Any]] = []
    for f in _EVENT_FIELDS:
        if f == "seq":
            if seqs is not None:
                fields.append(seqs)
            continue
        arr = arrays.get(f)
        if arr is None or arr.null_count == m:
            fields.append(none)
        elif f in _LIST_COLUMNS:
            fields.append([None if v is None else tuple(v) for v in column_values(arr)])
        else:
            fields.append(column_values(arr))
    return fields


def _distinct_small(values: np.ndarray) -> np.ndarray:
    """The sorted distinct values of a non-negative int64 array; a bincount, not a sort, when they are small."""
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    if int(values.max()) < 1 << 16:
        return np.flatnonzero(np.bincount(values))
    return np.unique(values)


def _gap_masks(slow_idx: np.ndarray, fast_idx: np.ndarray, fast_keys: np.ndarray, keys: np.ndarray) -> list[int]:
    """For each gap before a stepped row (and the one after the last), a bit mask of the access keys in it.

    Bit ``kp`` stands for ``keys[kp]``; ``fast_keys`` is the key of each access row ``fast_idx``.
    """
    n_gaps = len(slow_idx) + 1
    gap_of = np.searchsorted(slow_idx, fast_idx)
    if len(keys) <= 1:
        bits = np.zeros(n_gaps, dtype=np.int64)
        bits[gap_of] = 1
        return bits.tolist()  # type: ignore[no-any-return]
    kpos = np.searchsorted(keys, fast_keys)
    pairs = _distinct_small(gap_of * len(keys) + kpos)
    gaps, kps = np.divmod(pairs, len(keys))
    if len(keys) <= 62:
        bits = np.zeros(n_gaps, dtype=np.int64)
        np.bitwise_or.at(bits, gaps, np.int64(1) << kps)
        return bits.tolist()  # type: ignore[no-any-return]
    masks = [0] * n_gaps  # more keys than an int64 has bits: Python ints
    for g, kp in zip(gaps.tolist(), kps.tolist(), strict=True):
        masks[g] |= 1 << kp
    return masks


_MIX = np.uint64(0x100000001B3)
_NULL = np.int64(-0x5A5A_5A5A_5A5A_5A5B)  # what a null integer reads as when rows are grouped


class ListColumn:
    """A list column's contents at rows ``idx`` of a batch, for grouping rows by value: the flat items,
    each row's first item there, and its length (a null list: length 0, told apart by its own column)."""

    def __init__(self, flat: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> None:
        self.flat, self.starts, self.lens = flat, starts, lens

    def hashes(self) -> np.ndarray:
        """A 64-bit hash of each row's items and their positions (equal lists hash equally)."""
        total = int(self.lens.sum())
        if total == 0:
            return np.zeros(len(self.lens), dtype=np.uint64)
        pos = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(self.lens) - self.lens, self.lens)
        items = self.flat[np.repeat(self.starts, self.lens) + pos]
        eh = (items * _MIX) ^ (pos.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(1))
        eh ^= eh >> np.uint64(31)
        eh *= _MIX
        cs = np.concatenate([np.zeros(1, dtype=np.uint64), np.cumsum(eh, dtype=np.uint64)])
        ends = np.cumsum(self.lens)
        return cs[ends] - cs[ends - self.lens]  # type: ignore[no-any-return]  # (wraps: a sum mod 2^64)

    def same_as(self, rep: np.ndarray) -> bool:
        """Whether every row's items equal those of row ``rep[row]`` (whose length is already known equal)."""
        total = int(self.lens.sum())
        if total == 0:
            return True
        pos = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(self.lens) - self.lens, self.lens)
        mine = self.flat[np.repeat(self.starts, self.lens) + pos]
        theirs = self.flat[np.repeat(self.starts[rep], self.lens) + pos]
        return bool((mine == theirs).all())


def _list_column(arr: pa.Array, idx: np.ndarray) -> ListColumn | None:
    """The list column ``arr`` at rows ``idx`` (None if its items hold nulls: such rows are grouped apart)."""
    items = arr.values  # (the whole child array: the offsets index it, the slice's offset included)
    if items.null_count:
        return None
    offs = int_values(arr.offsets).astype(np.int64)
    lens = np.diff(offs)
    if arr.null_count:
        lens = np.where(valid_mask(arr), lens, 0)
    return ListColumn(int_values(items).astype(np.uint64), offs[:-1][idx], lens[idx])


def _row_hashes(batch: pa.RecordBatch, idx: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], list[ListColumn]]:
    """A 64-bit hash of the event columns (all but ``seq``) of each row at ``idx``, those columns as int64,
    and the list columns (KVM_SET/GET_MSRS), whose items a grouping is checked against separately.

    Equal events hash equally.  The columns are read whole from the batch and indexed in numpy (no Arrow
    ``take`` of every column); a list column whose items hold nulls makes each row with a list its own group.
    """
    n, m = batch.num_rows, len(idx)
    whole = m == n
    cols: list[np.ndarray] = []
    lists: list[ListColumn] = []
    extra: list[np.ndarray] = []  # hashed but not compared: list contents (ListColumn.same_as checks them)
    for name in ("kind", *(f for f in _EVENT_FIELDS if f != "seq")):
        arr = batch.column(name) if name in batch.schema.names else None
        if arr is None or arr.null_count == n:
            continue
        if name in _LIST_COLUMNS:
            valid = valid_mask(arr) if whole else valid_mask(arr)[idx]
            lc = _list_column(arr, idx)
            if lc is None:
                cols.append(np.where(valid, idx, -1))
                continue
            lists.append(lc)
            cols.append(np.where(valid, lc.lens, -1))
            extra.append(lc.hashes().view(np.int64))
            continue
        t = arr.type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            arr = arr.dictionary_encode()
        c = int_values(arr).astype(np.int64) if pa.types.is_dictionary(arr.type) else int_values(arr).view(np.int64) \
            if arr.type.bit_width == 64 else int_values(arr).astype(np.int64)
        if arr.null_count:  # a null reads as _NULL; a column where some value is _NULL also gets its validity
            valid = valid_mask(arr)
            c = np.where(valid, c, _NULL)
            if ((c == _NULL) & valid).any():
                cols.append(valid.astype(np.int64) if whole else valid[idx].astype(np.int64))
        cols.append(c if whole else c[idx])
    h = np.zeros(m, dtype=np.uint64)
    for c in (*cols, *extra):  # (a polynomial hash: its grouping is checked against the columns anyway)
        h *= _MIX
        h += c.view(np.uint64)
    return h, cols, lists


class BatchRows:
    """One validated record batch: numpy columns for the fast path, exact TraceRows on demand."""

    def __init__(self, batch: pa.RecordBatch, start: int) -> None:
        self.batch = batch
        self.start = start
        self.n = n = batch.num_rows
        cols = {name: batch.column(i) for i, name in enumerate(batch.schema.names)}
        self.cols = cols
        kind = _codes(cols["kind"], {"access": 0, SNAPSHOT_KIND: 1}, n)
        self.level = _codes(cols["level"], {lv: i for i, lv in enumerate(_LEVELS)}, n)
        self.vcpu = _ints(cols["vcpu"], n).astype(np.int64)
        self.seq = _ints(cols["seq"], n)
        self.addr = _ints(cols.get("addr"), n).astype(np.uint64)
        self.access = _codes(cols.get("access"), _ACCESS_CODE, n)
        self.cpl = _ints(cols.get("cpl"), n).astype(np.int64)
        fast = (kind == 0) & (self.level >= 1) & (self.access >= 0)
        for name, arr in cols.items():
            if name not in _FAST_COLUMNS and arr.null_count < n:
                fast &= ~_valid(arr)
        self.fast = fast
        self.exp_result = _codes(cols.get("exp_result"), _RESULT_CODE, n)
        pfec = cols.get("exp_pfec")
        self.exp_pfec = _ints(pfec, n).astype(np.int64)
        self.has_pfec = _valid(pfec) if pfec is not None else np.zeros(n, dtype=bool)
        cr2 = cols.get("exp_cr2")
        self.exp_cr2 = _ints(cr2, n).astype(np.uint64)
        self.has_cr2 = _valid(cr2) if cr2 is not None else np.zeros(n, dtype=bool)
        self.key = self.vcpu * 2 + (self.level == 2)
        # Every scalar expectation as (present, uint64 value), for the stepped rows compared on columns.
        self.exp: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        has_expect = np.zeros(n, dtype=bool)
        for name in _SCALAR_EXPECT:
            arr = cols.get(f"exp_{name}")
            if arr is not None and arr.null_count < n:
                valid = _valid(arr)
                self.exp[name] = (valid, _ints(arr, n).astype(np.uint64))
                has_expect |= valid
        has_expect |= self.exp_result >= 0
        values = cols.get("exp_values")
        self.snapshot = kind == 1
        self.special = self.snapshot.copy()  # snapshot rows, and (on columns) rows expecting a list: stepped as TraceRows
        self.exp_values: pa.Array | None = None  # the expected lists, where some row has one
        self.has_values = np.zeros(n, dtype=bool)
        if values is not None and values.null_count < n:
            self.exp_values = values
            self.has_values = _valid(values)
            has_expect |= self.has_values
            self.special |= self.has_values
        self.has_expect = has_expect

    def event_keys(self, idx: np.ndarray) -> tuple[list[tuple[Any, ...]], list[int]]:
        """(event key, seq) of the event rows at ``idx``: :func:`~difftest.engine.fast.transitions.event_key` of their Events."""
        m = len(idx)
        if m == 0:
            return [], []
        arrays = _take(self.batch, idx)
        fields = _event_fields(arrays, m, None)
        return list(zip(column_values(arrays["kind"]), *fields, strict=True)), column_values(arrays["seq"])

    def key_ids(self, idx: np.ndarray, keys: EventKeys) -> np.ndarray:
        """The interned event key of each event row at ``idx`` (only distinct rows become Python tuples).

        Rows are told apart by a hash of their integer-coded columns; the hash's grouping is checked
        against the columns themselves, and a collision falls back to sorting the rows.
        """
        m = len(idx)
        if m == 0:
            return np.zeros(0, dtype=np.int64)
        h, cols, lists = _row_hashes(self.batch, idx)
        _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
        rep = first[inverse]  # (each row's group's first row)
        if not (all((c[rep] == c).all() for c in cols) and all(lc.same_as(rep) for lc in lists)):
            # a hash collision: group the rows exactly (each row with a list its own group)
            apart = [np.where(lc.lens > 0, np.arange(m, dtype=np.int64), -1) for lc in lists]
            mat = np.stack([*cols, *apart], axis=1) if cols else np.zeros((m, 1), dtype=np.int64)
            _, first, inverse = np.unique(mat, axis=0, return_index=True, return_inverse=True)
        tuples, _ = self.event_keys(idx[first])
        ids = np.array([keys.intern(k) for k in tuples], dtype=np.int64)
        return ids[inverse.reshape(-1)]  # type: ignore[no-any-return]

    def rows(self, idx: Sequence[int] | np.ndarray) -> list[TraceRow]:
        """The rows at batch positions ``idx``, exactly as :func:`difftest.trace.io.TraceFile.rows` gives them."""
        return rows_of_batch(self.batch, self.start, idx)


def _take(batch: pa.RecordBatch, idx: np.ndarray) -> dict[str, pa.Array]:
    """The rows at positions ``idx`` of ``batch``, by column name."""
    sub = batch.take(index_array(idx))
    return {name: sub.column(i) for i, name in enumerate(sub.schema.names)}


def rows_of_batch(batch: pa.RecordBatch, start: int, idx: Sequence[int] | np.ndarray) -> list[TraceRow]:
    """The rows at positions ``idx`` of ``batch`` (whose first row is row ``start`` of the trace), as
    :func:`difftest.trace.io.TraceFile.rows` gives them."""
    idx = np.asarray(idx, dtype=np.int64)
    m = len(idx)
    if m == 0:
        return []
    arrays = _take(batch, idx)
    seqs, kinds = column_values(arrays["seq"]), column_values(arrays["kind"])
    notes = column_values(arrays["note"]) if "note" in arrays and arrays["note"].null_count < m else [None] * m
    none = [None] * m
    fields = _event_fields(arrays, m, seqs)  # Event's fields after kind, in order, one list per field
    events: list[Event | None] = [None if k == SNAPSHOT_KIND else Event(k, *vals)
                                  for k, vals in zip(kinds, zip(*fields, strict=True), strict=True)]
    exp_names = ("exp_result", "exp_pfec", "exp_cr2", "exp_value", "exp_values", "exp_count",
                 "exp_exit_reason", "exp_vm_error", "exp_exit_qual", "exp_rule")
    has = np.zeros(m, dtype=bool)
    exp: list[list[Any] | None] = []
    for c in exp_names:
        arr = arrays.get(c)
        if arr is None or arr.null_count == m:
            exp.append(None)
            continue
        exp.append(column_values(arr))
        if c != "exp_rule":
            has |= _valid(arr)
    has_list = has.tolist()
    paths = column_values(arrays["path"]) if "path" in arrays and arrays["path"].null_count < m else [None] * m
    out: list[TraceRow] = []
    e0, e1, e2, e3, e4, e5, e6, e7, e8, e9 = (none if e is None else e for e in exp)
    indexes = (idx + start).tolist()
    for j, (index, seq, ev, note, has_j) in enumerate(zip(indexes, seqs, events, notes, has_list, strict=True)):
        if ev is None:
            out.append(TraceRow(index, seq, None, Snapshot(paths[j], e3[j], e9[j]), None, note))  # type: ignore[arg-type]
        elif has_j:  # Expect.is_empty() is false
            v = e4[j]
            out.append(TraceRow(index, seq, ev, None, Expect(e0[j], e1[j], e2[j], e3[j], None if v is None else tuple(v),
                                                             e5[j], e6[j], e7[j], e8[j], e9[j]), note))
        else:
            out.append(TraceRow(index, seq, ev, None, None, note))
    return out


# ------------------------------------------------------------------------------------ lanes
@dataclass(frozen=True, slots=True)
class AccessState:
    """What an access's outcome depends on, for one CPU between two model-stepped rows: the model's
    :meth:`~reference_model.cpu.Cpu.access_inputs` and the page tables (as of a version)."""

    cpu: Cpu
    inputs: AccessInputs
    pages: PageTables
    pages_version: int


@dataclass(slots=True)
class AccessClass:
    """The outcome shared by every access of one (state, page, access kind, CPL)."""

    result: int
    pfec: int  # -1: none
    rules: tuple[str, ...]
    undefined: tuple[str, ...]
    fill: int  # page base the access puts in the TLB, -1 for none
    cpu: Cpu

    def outcome(self, addr: int) -> Outcome:
        pf = self.result == _PF
        return Outcome(RESULTS[self.result], pfec=self.pfec if self.pfec >= 0 else None, cr2=addr if pf else None,
                       rules=self.rules, undefined=self.undefined)


def guest_cpu(machine: Machine, vcpu: int, level: int) -> Cpu | None:
    """The CPU an access of ``vcpu`` at ``level`` (1 = L1, 2 = L2) runs on without any other effect, or None.

    The model answers (:meth:`~reference_model.machine.Machine.access_cpu`); None means "let the model
    step it", as does a machine or CPU class this module does not know.
    """
    if type(machine) not in _MACHINES:
        return None
    cpu = machine.access_cpu(vcpu, "l2" if level == 2 else "l1")
    return cpu if cpu is not None and type(cpu) in _CPUS else None


def tlb_cpu(machine: Machine, vcpu: int, level: str) -> Cpu | None:
    """The CPU whose TLB an event of ``vcpu`` at ``level`` may touch (None: unknown), as the model says."""
    return machine.cpu_at(vcpu, "l2" if level == "l2" else "l1") if type(machine) in _MACHINES else None


class PageIds:
    """Small ids for 4 KiB page numbers, shared by the lanes of one run."""

    def __init__(self) -> None:
        self.ids: dict[int, int] = {}
        self.pages: list[int] = []
        self.base: int | None = None  # page numbers from here on are looked up in a dense table ...
        self.table = DenseTable(max_cells=PAGE_WINDOW)  # ... of PAGE_WINDOW pages

    def combos(self, addr: np.ndarray, access: np.ndarray, cpl: np.ndarray) -> np.ndarray:
        """(page id, access kind, CPL) of each access as one integer (:meth:`Lane.classify` adds the state)."""
        pages = (addr >> np.uint64(12)).astype(np.int64)
        ids = None
        if len(pages):
            if self.base is None:
                self.base = int(pages.min())
            base = self.base
            ids = self.table.get_many(np.zeros(len(pages), dtype=np.int64), pages - base, lambda _, p: self.id_of(p + base))
        if ids is None:  # pages far apart: sort them
            upages, pinv = np.unique(pages, return_inverse=True)
            ids = np.array([self.id_of(p) for p in upages.tolist()], dtype=np.int64)[pinv]
        return (ids << 8) | (access << 2) | cpl

    def id_of(self, page: int) -> int:
        pid = self.ids.get(page)
        if pid is None:
            pid = self.ids[page] = len(self.pages)
            self.pages.append(page)
        return pid


class Lane:
    """One machine driven by the fast path: its interned states, outcome classes and pending TLB fills."""

    def __init__(self, machine: Machine, result: ReplayResult, clock: list[int], page_ids: PageIds,
                 keys: EventKeys) -> None:
        self.result = result
        self.page_ids = page_ids
        self.clock = clock
        self.state_ids: dict[tuple[Any, ...], int] = {}
        self.states: list[AccessState] = []
        self.classes: list[AccessClass] = []
        self.class_of: dict[int, int] = {}  # (state, page id, access, cpl) key -> class id
        self.class_table = DenseTable()  # the same: [state, page id << 5 | access << 2 | cpl]
        # per class: result, pfec, filled page number (base >> 12, so any u64 base fits; -1 none), cpu index,
        # rule set (grows by doubling)
        self._cls = np.zeros((64, 5), dtype=np.int64)
        self.rule_sets: dict[tuple[str, ...], int] = {}  # distinct rule tuples of classes, by id
        self.fills: list[tuple[int, int]] = []  # per class: (page base it fills or -1, cpu index)
        self.cpu_index: dict[int, int] = {}
        self.cpus: dict[int, Cpu] = {}
        self.mappings: dict[tuple[int, int, int], Mapping | None] = {}
        self.pages_version: dict[int, int] = {}
        self.logs: list[TlbLog] = []
        self.memo = TransitionCache(machine, clock, self.logs, keys)
        self.sids_at: dict[int, int] = {}  # (memo state << 32 | access key) -> state id, for this memo epoch
        self.sids_table = DenseTable()  # the same: [memo state, access key]
        self.sids_epoch = -1

    @property
    def machine(self) -> Machine:
        """The lane's machine in its current state (see :class:`~difftest.engine.fast.transitions.TransitionCache`)."""
        return self.memo.live()

    def state_id(self, vcpu: int, level: int) -> int:
        """The interned state of (vcpu, level), or -1 if an access there must be stepped by the model."""
        memo = self.memo
        sid = memo.per_state.get((memo.state, "access", (vcpu, level)))  # (memo.cached, inlined: the hot path)
        if sid is not None and memo.enabled:
            return sid  # type: ignore[no-any-return]
        return memo.cached("access", (vcpu, level), lambda m: self._state_id(m, vcpu, level))  # type: ignore[no-any-return]

    def state_ids_at(self, combos: np.ndarray) -> np.ndarray:
        """:meth:`state_id_at` for each of ``combos`` (many: once per distinct value)."""
        if len(combos) > SMALL:
            self._sync_epoch()
            got = self.sids_table.get_many(combos >> 32, combos & 0xFFFF_FFFF, lambda st, k: self.state_id_at(st << 32 | k))
            if got is not None:
                return got
            uniq, inverse = np.unique(combos, return_inverse=True)
            return self.state_ids_at(uniq)[inverse]  # type: ignore[no-any-return]
        return np.array([self.state_id_at(c) for c in combos.tolist()], dtype=np.int64)

    def _sync_epoch(self) -> None:
        """Forget the state ids of a previous memo epoch (memo state numbers start afresh in each)."""
        if self.memo.epoch != self.sids_epoch:
            self.sids_at = {}
            self.sids_table = DenseTable()
            self.sids_epoch = self.memo.epoch

    def state_id_at(self, combo: int) -> int:
        """:meth:`state_id` for ``(memo state << 32) | access key``: a run of transitions looks back at its states."""
        memo = self.memo
        if memo.epoch != self.sids_epoch:
            self._sync_epoch()
        sid = self.sids_at.get(combo)
        if sid is None:
            vcpu, level = (combo & 0xFFFF_FFFF) >> 1, 2 if combo & 1 else 1
            sid = self.sids_at[combo] = memo.cached_at(combo >> 32, "access", (vcpu, level),
                                                       lambda m: self._state_id(m, vcpu, level))
        return sid  # type: ignore[no-any-return]

    def _state_id(self, machine: Machine, vcpu: int, level: int) -> int:
        cpu = guest_cpu(machine, vcpu, level)
        if cpu is None:
            return -1
        tlb = cpu.tlb
        if type(tlb) is not TlbLog:
            cpu.tlb = tlb = TlbLog(tlb, self.clock)
            self.logs.append(tlb)
        pages = cpu.pages
        inputs = cpu.access_inputs()
        version = self.pages_version.get(id(pages), 0)
        key = (id(cpu), inputs, id(pages), version)
        sid = self.state_ids.get(key)
        if sid is None:
            sid = self.state_ids[key] = len(self.states)
            self.states.append(AccessState(cpu, inputs, pages, version))
        return sid

    def pages_changed(self) -> None:
        """A ``map`` was stepped: mappings looked up before are no longer valid."""
        for pt in self.machine.pages.values():
            self.pages_version[id(pt)] = self.pages_version.get(id(pt), 0) + 1

    def classify(self, sids: np.ndarray, combos: np.ndarray) -> np.ndarray:
        """The AccessClass id of each access (new combinations go through the model once).

        A few accesses are looked up one by one in a dict (numpy's fixed cost per call is what a small
        lookup would pay for otherwise); many, in a dense table of (state, page id, access, CPL).
        """
        keys = (sids << 40) | combos
        known = self.class_of
        if len(keys) <= SMALL:
            got = [known.get(k) for k in keys.tolist()]
            if None in got:
                got = [self.class_id(k) if c is None else c for k, c in zip(keys.tolist(), got, strict=True)]
            return np.array(got, dtype=np.int64)
        table = self.class_table.get_many(sids, (combos >> 8) << 5 | (combos & 0x1F),
                                          lambda sid, c: self.class_id(sid << 40 | (c >> 5) << 8 | (c & 0x1F)))
        if table is not None:
            return table
        ukeys, inverse = np.unique(keys, return_inverse=True)  # too many states for the table: sort
        return np.array([self.class_id(k) for k in ukeys.tolist()], dtype=np.int64)[inverse]  # type: ignore[no-any-return]

    def class_id(self, k: int) -> int:
        """The class id of access key ``k`` ((state, page id, access, cpl) packed), made on first use."""
        cid = self.class_of.get(k)
        if cid is None:
            cid = self.class_of[k] = self.access_class(k >> 40, self.page_ids.pages[(k >> 8) & 0xFFFF_FFFF],
                                                      (k >> 2) & 0x3F, k & 3)
        return cid

    def access_class(self, sid: int, page: int, access: int, cpl: int) -> int:
        """Cpu.access for any address in ``page`` from the state ``sid``, as a class id (cr2 left to the caller)."""
        if sid >= 1 << 23:
            raise OverflowError("too many distinct access states for one replay")
        st = self.states[sid]
        mkey = (id(st.pages), st.pages_version, page)
        if mkey in self.mappings:
            m = self.mappings[mkey]
        else:
            m = self.mappings[mkey] = st.pages.lookup(page << 12)
        out, filled = classify_access(m, page << 12, ACCESS_KINDS[access], cpl, st.inputs)
        rules, undefined, fill = out.rules, out.undefined, -1 if filled is None else filled
        cls = AccessClass(_RESULT_CODE[out.result], -1 if out.pfec is None else out.pfec, rules, undefined, fill,
                          st.cpu)
        cpu_ix = self.cpu_index.setdefault(id(st.cpu), len(self.cpu_index))
        self.cpus[cpu_ix] = st.cpu
        n = len(self.classes)
        if n == len(self._cls):
            self._cls = np.concatenate((self._cls, np.zeros_like(self._cls)))
        rule_set = self.rule_sets.setdefault(rules, len(self.rule_sets))
        self._cls[n] = (cls.result, cls.pfec, fill >> 12 if fill >= 0 else -1, cpu_ix, rule_set)
        self.classes.append(cls)
        self.fills.append((fill, cpu_ix))
        return n

    @property
    def cls_result(self) -> np.ndarray:
        return self._cls[: len(self.classes), 0]

    @property
    def cls_pfec(self) -> np.ndarray:
        return self._cls[: len(self.classes), 1]

    @property
    def cls_fill(self) -> np.ndarray:
        """Per class, the page number (not the base) its accesses fill, -1 for none."""
        return self._cls[: len(self.classes), 2]

    @property
    def cls_cpu(self) -> np.ndarray:
        return self._cls[: len(self.classes), 3]

    def count_rules(self, cls_id: np.ndarray, hits: Counter[str]) -> None:
        """Add the rule hits of accesses of classes ``cls_id`` to ``hits`` (per distinct rule set, not per class)."""
        counts = np.bincount(self._cls[: len(self.classes), 4][cls_id], minlength=len(self.rule_sets)).tolist()
        for rules, rid in self.rule_sets.items():
            cnt = counts[rid]
            if cnt:
                for r in rules:
                    hits[r] += cnt

    def apply_fills(self, rows: np.ndarray, cls_id: np.ndarray) -> None:
        """Put the pages of successful accesses in their CPU's TLB unless a later flush or INVLPG dropped them."""
        if len(rows) <= SMALL:
            self._apply_fills_small(rows.tolist(), cls_id.tolist())
            return
        fill = self.cls_fill[cls_id]
        has = fill >= 0
        if has.any():
            r_all, b_all, c_all = rows[has], fill[has], self.cls_cpu[cls_id[has]]
            for cpu_ix in np.unique(c_all).tolist():
                cpu = self.cpus[cpu_ix]
                sel = c_all == cpu_ix
                r, b = r_all[sel], b_all[sel]
                entries: list[tuple[int, int | None]] = cpu.tlb.log if isinstance(cpu.tlb, TlbLog) else []
                clears = [p for p, base in entries if base is None]
                if clears:
                    keep = r > max(clears)
                    r, b = r[keep], b[keep]
                for p, base in entries:
                    if base is not None:
                        keep = ~((b == base >> 12) & (r < p))
                        r, b = r[keep], b[keep]
                set.update(cpu.tlb, [pn << 12 for pn in np.unique(b).tolist()])
        for log in self.logs:
            log.log.clear()

    def _apply_fills_small(self, rows: list[int], cls_id: list[int]) -> None:
        """:meth:`apply_fills` one access at a time (the same rule: the last flush, the last INVLPG of the page)."""
        fills = self.fills
        dropped: dict[int, TlbPeek] = {}  # cpu index -> its log's last flush and INVLPGs
        for r, c in zip(rows, cls_id, strict=True):
            base, cpu_ix = fills[c]
            if base < 0:
                continue
            got = dropped.get(cpu_ix)
            if got is None:
                cpu = self.cpus[cpu_ix]
                got = dropped[cpu_ix] = TlbPeek()
                got.fold(cpu.tlb.log if type(cpu.tlb) is TlbLog else [])
            if r > got.flushed and r > got.invlpg.get(base, -1):
                set.add(self.cpus[cpu_ix].tlb, base)
        for log in self.logs:
            log.log.clear()


# ------------------------------------------------------------------------------------ replay
@dataclass
class _Pending:
    """Accesses not yet evaluated outside runs: row ranges with the state id of each range per key."""

    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    sids: list[tuple[int, ...]] = field(default_factory=list)  # per key index (see FastReplay.keys)


@dataclass(slots=True)
class _Tail:
    """The last rows of a batch, kept as context: a zero-copy slice and what each row's outcome is."""

    batch: pa.RecordBatch
    start: int  # trace row index of the slice's first row
    outcomes: list[tuple[str, Any]]  # per row: ("slow", slow_at entry), ("keyed", Outcome) or ("access", AccessClass)


@dataclass(slots=True)
class TlbPeek:
    """One TLB's log folded: its last flush and the INVLPGs after it (the fill rule of :meth:`Lane.apply_fills`),
    and, for :meth:`FastReplay._tlb_now`, the contents it last worked out."""

    scanned: int = 0  # log entries folded in
    flushed: int = -1  # row of the last flush
    invlpg: dict[int, int] = field(default_factory=dict)  # page -> row of its last INVLPG after that flush
    contents: frozenset[int] | None = None  # the TLB's pages for rows before ``upto`` ...
    upto: int = -1
    at_flush: int = -1  # ... computed when the last flush was this one

    def fold(self, log: list[tuple[int, int | None]]) -> None:
        for p, base in log[self.scanned:]:
            if base is None:
                self.flushed = p
                self.invlpg = {}
            else:
                self.invlpg[base] = p
        self.scanned = len(log)


class FastReplay:
    """Replay one trace file under one policy on record batches (see the module docstring)."""

    observes_ranges = False  # FastCompare: call _range_opened for every range of accesses
    check_peeks = False  # tests: settle after each TLB peek and record whether the two agree

    def __init__(self, machine: Machine, profile: Profile, result: ReplayResult) -> None:
        self.profile = profile
        self.result = result
        self.clock = [0]
        self.page_ids = PageIds()
        self.event_keys = EventKeys()
        self.plain_keys = EventKeys()  # (the events of stretches stepped row by row: see _plain_part)
        self.lane = Lane(machine, result, self.clock, self.page_ids, self.event_keys)
        self.lanes = [self.lane]
        self._adopt_lanes()
        self.tails: deque[_Tail] = deque()  # the last rows before this batch (context, built if ever needed)
        self.after_first = 0  # rows still to append to the context after the first divergence
        self.stretches_done = 0
        self.unsampled = 0  # stretches judged since the last sample of their events (verdict) ...
        self.sample_every = 1  # ... and how many there are between two samples

    def _adopt_lanes(self) -> None:
        """Have each lane's memo settle the queued runs before it forgets their state ids."""
        self.peeks_checked: list[bool] = []
        self.runnable_for: dict[tuple[int, ...], list[dict[int, int]]] = {}
        self.run_tids: list[list[int]] = [[] for _ in self.lanes]  # transitions of runs, not yet counted
        for lane in self.lanes:
            lane.memo.before_reset = self._before_reset

    def _before_reset(self) -> None:
        if getattr(self, "b", None) is not None:
            self._settle()
            self._count_runs()
        self.runnable_for.clear()

    def _count_runs(self) -> None:
        """Add the counter increments of the transitions runs went through (kept per transition until here)."""
        for lane, tids in zip(self.lanes, self.run_tids, strict=True):
            if tids:
                lane.memo.add_counts(Counter(tids).items())
                tids.clear()

    def run(self, batches: Iterator[pa.RecordBatch]) -> ReplayResult:
        self.feed(batches)
        self.result.counters.update(self.lane.memo.counters)
        return self.result

    # -- stretches: on columns where the trace repeats, row by row where it does not --------
    def feed(self, batches: Iterator[pa.RecordBatch]) -> None:
        """Every batch, stretch by stretch (:meth:`stretches`), through the columns or the model."""
        start = 0
        for batch in batches:
            for piece, repeats in self.stretches(batch):
                if repeats:
                    self.fast_part(piece, start)
                else:
                    self.plain_part(piece, start)
                start += piece.num_rows
                advance_progress(piece.num_rows)

    def stretches(self, batch: pa.RecordBatch) -> Iterator[tuple[pa.RecordBatch, bool]]:
        """``batch`` cut into slices of consecutive stretches with the same verdict (True: on columns).

        A stretch whose verdict rests on the memo (:meth:`verdict` "memo") is its own slice, so the next
        one is judged after it ran, on the memo's fresh record; the others are judged ahead and joined.
        """
        n = batch.num_rows
        if STRETCH_MODE == "alternate":
            for k, lo in enumerate(range(0, n, STRETCH)):
                yield batch.slice(lo, STRETCH), k % 2 == self.stretches_done % 2
            self.stretches_done += 1
            return
        if STRETCH_MODE != "judge":
            yield batch, STRETCH_MODE == "columns"
            return
        lo = 0
        while lo < n:
            v = self.verdict(batch.slice(lo, STRETCH))
            # (a memo that has not proven itself tries a short stretch first: verdict judges it after that)
            hi = lo + (TRIAL_ROWS if v == "memo" and not all(lane.memo.proven for lane in self.lanes) else STRETCH)
            if v != "memo":
                while hi < n and self.verdict(batch.slice(hi, STRETCH)) == v:
                    hi += STRETCH
            yield batch.slice(lo, hi - lo), v != "model"
            lo = hi

    def verdict(self, piece: pa.RecordBatch) -> str:
        """How ``piece`` goes: "columns" (its accesses come in runs), "memo" (its stepped rows repeat their
        events and every lane's memo is on) or "model" (row by row), judged from its columns and the memo.

        The columns pay for their fixed cost where accesses come in runs (one access state serves the
        run), or where the memo replaces steps by remembered transitions.  Events that are mostly new
        cannot recur in a state seen before; a memo that is off (before its first window, or after
        failing) replaces nothing: such stretches go to the model row by row, and count towards the
        memo's next try (:meth:`~difftest.engine.fast.transitions.TransitionCache.stepped_outside`).
        """
        n = piece.num_rows
        if n < MIN_FAST_ROWS:
            return "model"
        slow = np.flatnonzero(_codes(piece.column("kind"), {"access": 0}, n) != 0)
        if n - len(slow) >= ACCESS_RUN * (len(slow) + 1):
            return "columns"
        for lane in self.lanes:  # (a try on stretches like this one that is missing already: stop it now)
            if lane.memo.failing(REPEAT_SAMPLE):
                lane.memo.window_done()
        if not all(lane.memo.enabled for lane in self.lanes):
            return "model"
        # Sampling costs a hash of every event column: after stretches whose events did not repeat it
        # is done again only every 2, 4, ... up to MAX_UNSAMPLED stretches (the rest go to the model).
        self.unsampled += 1
        if self.unsampled < self.sample_every:
            return "model"
        self.unsampled = 0
        sample = slow[:REPEAT_SAMPLE]
        repeated = len(np.unique(_row_hashes(piece, sample)[0])) * DISTINCT_SHARE <= len(sample)
        self.sample_every = 1 if repeated else min(2 * self.sample_every, MAX_UNSAMPLED)
        return "memo" if repeated else "model"

    def repeats(self, piece: pa.RecordBatch) -> bool:
        """Whether :meth:`verdict` sends ``piece`` to the columns."""
        return self.verdict(piece) != "model"

    def fast_part(self, piece: pa.RecordBatch, start: int) -> None:
        """A stretch on columns (see the module docstring)."""
        self.batch(BatchRows(piece, start))

    def plain_part(self, piece: pa.RecordBatch, start: int) -> None:
        """A stretch that does not repeat (see :meth:`_plain_part`), with the cyclic collector paused.

        The stretch's events and outcomes live until it is judged, and the collector would walk every
        one of them several times as they age: a third of the stretch's time.  A model step leaves no
        cyclic garbage, so the collector runs once the stretch is done instead.
        """
        collecting = gc.isenabled()
        gc.disable()
        try:
            self._plain_part(piece, start)
        finally:
            self._drop_outcomes()  # (the stretch is judged and its tail kept: before the collector sees them)
            if collecting:
                gc.enable()

    def _plain_part(self, piece: pa.RecordBatch, start: int) -> None:
        """A stretch that does not repeat: every row through the model, with no memo in the way.

        Each distinct event of the stretch is built once from the columns (:meth:`BatchRows.key_ids`)
        and stepped on each lane's live machine as often as it occurs; the outcomes are judged on
        columns like keyed rows (:meth:`_compare_keyed`), so RowResults are made only for the rows a
        report shows.  Snapshot rows and rows expecting a list are stepped as TraceRows in between.
        """
        b = BatchRows(piece, start)
        self._open_batch(b)
        self._count_runs()  # (none run here: snapshots below read the counters as they stand)
        machines = [lane.memo.suspend() for lane in self.lanes]
        n = b.n
        special_idx = np.flatnonzero(b.snapshot)  # (a row expecting a list is judged with the others)
        ev_idx = np.flatnonzero(~b.snapshot) if len(special_idx) else np.arange(n, dtype=np.int64)
        # (every row grouped, snapshots too: whole columns need no copy per row subset).  The events of such
        # stretches are interned apart from the memo's, and forgotten past PLAIN_KEYS distinct ones: a trace
        # of ever new addresses would otherwise keep every event it ever had.
        if len(self.plain_keys.keys) > PLAIN_KEYS:
            self.plain_keys = EventKeys()
        kids = b.key_ids(np.arange(n, dtype=np.int64), self.plain_keys)[ev_idx].tolist()
        events = self.plain_keys.events(kids)
        specials = special_idx.tolist()
        special_rows = b.rows(special_idx) if specials else []
        ev_rows = ev_idx.tolist()
        self.keyed_rows += ev_rows
        hook = None if type(self)._keyed_stepped is FastReplay._keyed_stepped else self._keyed_stepped
        try:
            if hook is None:
                # Stretches of events between special rows, each lane stepped through it in turn (the
                # lanes are independent machines; nothing is observed between the rows of a stretch).
                done = 0
                for j, (i, row) in enumerate(zip([*specials, n], [*special_rows, None], strict=True)):
                    upto = i - j  # events before special row j
                    if upto > done:
                        part = events[done:upto]
                        for m, outs in zip(machines, self.keyed_outs, strict=True):
                            outs += map(m.step, part)
                        done = upto
                    if row is not None:
                        if row.snapshot is not None and len(machines) == 1:
                            self._snapshot(row, i, machines[0])
                        else:
                            self._step(row, i)
            else:
                pairs = list(zip(machines, self.keyed_outs, strict=True))
                rows_at = dict(zip(specials, special_rows, strict=True))
                k = 0
                for i in range(n):
                    row = rows_at.get(i)
                    if row is not None:
                        self._step(row, i)
                        continue
                    ev = events[k]
                    k += 1
                    for m, outs in pairs:
                        outs.append(m.step(ev))
                    hook(i, (ev.kind, ev.vcpu))
        finally:
            for lane in self.lanes:
                lane.memo.resume(n)
        keys = self.plain_keys.keys
        if any(keys[k][0] == "map" for k in set(kids)):  # (the special rows here are snapshots: no map among them)
            for lane in self.lanes:  # (stepped on the live page tables: mappings looked up before are stale)
                lane.pages_changed()
        self._compare_keyed()
        self._finish_batch()

    def _open_batch(self, b: BatchRows) -> None:
        """The per-batch bookkeeping every batch starts with (rows counted, TLB logs and row records empty)."""
        for lane in self.lanes:
            lane.result.rows += b.n
            for log in lane.logs:  # positions in the logs are per batch
                log.log.clear()
        self.clock[0] = 0
        self.b = b
        self.pending = _Pending()
        # evaluated accesses: (rows, class ids per lane, start of each row's range)
        self.chunks: list[tuple[np.ndarray, list[np.ndarray], np.ndarray]] = []
        self.diverged: list[RowResult] = []  # this batch's divergent rows, any order
        self.slow_at: dict[int, tuple[TraceRow, Outcome | None, RowResult | None]] = {}
        self.keyed_rows: list[int] = []  # stepped rows compared on columns (see _step_keyed) ...
        self.keyed_outs: list[list[Outcome]] = [[] for _ in self.lanes]  # ... and their outcomes per lane
        self._keyed_at: dict[int, int] | None = None  # batch row -> position in keyed_rows (built when needed)
        self.run_spans: list[tuple[int, int, int]] = []  # (first stepped row, end, first access row) of each run

    def _drop_outcomes(self) -> None:
        """Let go of the batch's stepped outcomes and row records (its divergences and tail are kept)."""
        self.keyed_outs = [[] for _ in self.lanes]
        self.keyed_rows = []
        self._keyed_at = None
        self.slow_at = {}

    # -- one batch -------------------------------------------------------------------------
    def batch(self, b: BatchRows) -> None:
        self._open_batch(b)
        fast_idx = np.flatnonzero(b.fast)
        slow_idx = np.flatnonzero(~b.fast)
        self.fast_idx = fast_idx
        self.slow_idx = slow_idx
        fast_keys = b.key[fast_idx]
        self.keys_arr = _distinct_small(fast_keys)
        self.keys: list[int] = self.keys_arr.tolist()
        self.key_rows: dict[int, np.ndarray] = {}
        self.combo = np.zeros(b.n, dtype=np.int64)
        self.combo[fast_idx] = self.page_ids.combos(b.addr[fast_idx], b.access[fast_idx], b.cpl[fast_idx])
        # Per stepped row, the access keys (bit kp: self.keys[kp]) with accesses in the range just before it.
        self.gapmask: list[int] = _gap_masks(slow_idx, fast_idx, fast_keys, self.keys_arr)
        special = b.special[slow_idx]
        special_rows = dict(zip(slow_idx[special].tolist(), b.rows(slow_idx[special]), strict=True))
        kids = np.full(len(slow_idx), -1, dtype=np.int64)  # event key id of each stepped row (-1: a TraceRow)
        kids[~special] = b.key_ids(slow_idx[~special], self.event_keys)
        self.slow_kids: list[int] = kids.tolist()
        slow_list = slow_idx.tolist()
        n, n_slow, si, pos = b.n, len(slow_list), 0, 0
        single = len(self.keys) == 1 and len(self.lanes) == 1
        if single:
            vcpu0, level0 = self.keys[0] // 2, 2 if self.keys[0] % 2 else 1
        state_id = self.lane.state_id
        starts, ends, sids_list = self.pending.starts, self.pending.ends, self.pending.sids
        memos = [lane.memo for lane in self.lanes]
        self.slow_list = slow_list
        self.settled_upto = 0  # accesses before this row are evaluated and their TLB fills applied
        self.promoted = False
        self.peeks: dict[tuple[int, tuple[int, str]], TlbPeek] = {}
        self.key_row_lists: dict[int, list[int]] = {}
        self.before_at = [np.full(n_slow, -1, dtype=np.int64) for _ in self.lanes]  # memo state before each run row
        # memo state -> the batch's access keys with an access state there (kept while the keys are the same)
        self.runnable: list[dict[int, int]] = self.runnable_for.setdefault(tuple(self.keys), [{} for _ in self.lanes])
        if len(self.keys) > 62:
            memos = []  # (no runs: a run's per-state mask of runnable keys is an int64 bit mask)
        while pos < n:
            if si < n_slow and memos and all(memo.enabled for memo in memos):
                m = self._run_transitions(si, pos)
                if m:
                    si += m
                    pos = slow_list[si - 1] + 1
                    continue
            nxt = slow_list[si] if si < n_slow else n
            if nxt > pos:
                if single:
                    sid = state_id(vcpu0, level0)
                    sids: tuple[int, ...] = (sid,)
                    promote = pos if sid < 0 else None
                else:
                    sids, promote = self._open_range(pos, nxt, self.gapmask[si])
                end = nxt if promote is None else promote
                if end > pos:
                    starts.append(pos)
                    ends.append(end)
                    sids_list.append(sids)
                    if si < n_slow:
                        for li, lane in enumerate(self.lanes):
                            self.before_at[li][si] = lane.memo.state
                if promote is not None:
                    self.promoted = True  # (its fill went to the TLB at once: see _tlb_now)
                    self._step(b.rows([promote])[0], promote)
                    pos = promote + 1
                    continue
            if nxt >= n:
                break
            row = special_rows.get(nxt)
            if row is None:
                self._step_keyed(si, nxt)
            else:
                self._step(row, nxt)
            si += 1
            pos = nxt + 1
        self._settle()
        self._count_runs()
        self._compare_keyed()
        self._compare()
        self._finish_batch()

    def _run_transitions(self, si: int, pos: int) -> int:
        """Stepped rows from the ``si``-th on, and the accesses before each, as a run of remembered transitions.

        Each lane follows its transitions while they are known, without the model; the run ends at the
        first row some lane does not know, or before the first range of accesses that some lane must
        step (a state where an access key present in the range has no access state).  The run's
        counters and TLB changes are applied in row order; its accesses are queued with the state of
        their range and evaluated with the others (:meth:`_settle`).  Returns the number of stepped
        rows done (0: none; the caller steps row ``si`` as usual).
        """
        kids = self.slow_kids
        end = len(kids)
        gapmask = self.gapmask
        walks: list[tuple[list[int], list[int], int]] = []
        for li, lane in enumerate(self.lanes):
            memo = lane.memo
            trans, t_next = memo.trans, memo.t_next
            runnable = self.runnable[li]
            s = memo.state
            tids: list[int] = []
            before: list[int] = []
            for j in range(si, end):
                k = kids[j]
                gm = gapmask[j]
                if gm:
                    ok = runnable.get(s)
                    if ok is None:
                        ok = runnable[s] = self._runnable_keys(lane, s)
                    if gm & ~ok:
                        break
                t = trans.get((s << KEY_BITS) | k)
                if t is None:
                    break
                before.append(s)
                tids.append(t)
                s = t_next[t]
            end = si + len(tids)
            if end == si:
                return 0
            walks.append((tids, before, s))
        m = end - si
        self.run_spans.append((si, end, pos))
        row_list = self.slow_list[si:end]
        self.keyed_rows += row_list
        clock = self.clock
        for li, (lane, (tids, before, s)) in enumerate(zip(self.lanes, walks, strict=True)):
            memo = lane.memo
            if len(tids) > m:
                s = before[m]
                del tids[m:], before[m:]
            self.before_at[li][si:end] = before
            memo.state = s
            self.run_tids[li] += tids
            t_tlb = memo.t_tlb
            for j, t in enumerate(tids):
                if t_tlb[t]:
                    clock[0] = row_list[j]
                    memo.replay_tlb(t)
            self.keyed_outs[li] += map(memo.t_out.__getitem__, tids)
            self._run_done(li, row_list, before, s)
        for lane in self.lanes:
            memo = lane.memo
            memo.window_hits += m
            if memo.window_hits + memo.window_misses >= memo.window:
                memo.window_done()
        return m

    def _runnable_keys(self, lane: Lane, state: int) -> int:
        """Bit ``kp`` set when the batch's access key ``kp`` has an access state in memo state ``state``."""
        mask = 0
        for kp, k in enumerate(self.keys):
            if lane.state_id_at((state << 32) | k) >= 0:
                mask |= 1 << kp
        return mask

    def _run_done(self, lane: int, rows: list[int], before: list[int], state: int) -> None:
        """Hook: a lane's run of transitions is committed (compare records the lanes' observed states)."""

    def _run_accesses(self) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]] | None:
        """The queued accesses of the batch's runs: (rows, their range's start, memo state per lane)."""
        if not self.run_spans:
            return None
        spans = np.array(self.run_spans, dtype=np.int64).reshape(-1, 3)
        self.run_spans = []
        slow_idx, fast_idx = self.slow_idx, self.fast_idx
        lo = np.searchsorted(fast_idx, spans[:, 2])
        hi = np.searchsorted(fast_idx, slow_idx[spans[:, 1] - 1])
        lengths = hi - lo
        total = int(lengths.sum())
        if total == 0:
            return None
        pos_in_fast = np.arange(total, dtype=np.int64) + np.repeat(lo - (np.cumsum(lengths) - lengths), lengths)
        rows = fast_idx[pos_in_fast]
        after = np.searchsorted(slow_idx, rows)  # the stepped row each access comes before
        span_of_row = np.repeat(np.arange(len(spans)), lengths)
        prev_end = np.where(after > 0, slow_idx[np.maximum(after - 1, 0)] + 1, 0)
        starts = np.maximum(prev_end, spans[span_of_row, 2])
        states = [b[after] for b in self.before_at]
        return rows, starts, states

    def _open_range(self, pos: int, end: int, present: int) -> tuple[tuple[int, ...], int | None]:
        """State ids (key-major, then lane) for the access-only rows [pos, end), and the first row to step.

        ``present`` has bit ``kp`` set when ``self.keys[kp]`` has accesses in the range.
        """
        sids: list[int] = []
        promote: int | None = None
        lanes = self.lanes
        one = lanes[0] if len(lanes) == 1 else None
        for kp, k in enumerate(self.keys):
            if not present >> kp & 1:
                sids += [-1] * len(lanes)
                continue
            if one is not None:
                sid = one.state_id(k >> 1, 2 if k & 1 else 1)
                sids.append(sid)
                if sid >= 0:
                    continue
            else:
                got = [lane.state_id(k >> 1, 2 if k & 1 else 1) for lane in lanes]
                sids += got
                if min(got) >= 0:
                    continue
            kr = self.key_rows.get(k)  # a lane cannot run this key's accesses: step its first one
            if kr is None:
                kr = self.key_rows[k] = self.fast_idx[self.b.key[self.fast_idx] == k]
            i = int(np.searchsorted(kr, pos))
            if i < len(kr) and kr[i] < end and (promote is None or kr[i] < promote):
                promote = int(kr[i])
        if self.observes_ranges:
            self._range_opened(pos, sids)
        return tuple(sids), promote

    def _range_opened(self, pos: int, sids: list[int]) -> None:
        """Hook: a range of accesses starts at ``pos`` (compare records the vCPUs' observed state)."""

    def _step(self, row: TraceRow, i: int) -> None:
        """One row through the model, as replay_rows does it (snapshots included)."""
        self._count_runs()  # (a snapshot may read the counters)
        res = self.result
        if row.snapshot is not None:
            rr = check_snapshot(row, self.lane.machine, res)
            self.slow_at[i] = (row, None, rr)
            if rr.status == "diverge":
                self.diverged.append(rr)
            return
        ev = row.event
        assert ev is not None
        self.clock[0] = i
        out = self._lane_step(self.lane, event_key(ev), ev.seq, ev)
        res.events += 1
        res.rule_hits.update(out.rules)
        rr = None  # type: ignore[assignment]  # (a RowResult only where the row diverges or is masked)
        expect = row.expect
        if expect is not None:
            res.compared += 1
            if not _matches(expect, out):
                rr = RowResult(row.index, row.seq, ev, expect, out, note=row.note)
                rr.diffs, rr.masked = diff_outcome(expect, out, ev, self.profile)
                if rr.masked:
                    res.masked_count += len(rr.masked)
                    res.masked_by.update(d.mask or "" for d in rr.masked)
                    rr.status = "masked"
                if rr.diffs:
                    rr.status = "diverge"
                    self.diverged.append(rr)
        self.slow_at[i] = (row, out, rr)

    def _snapshot(self, row: TraceRow, i: int, machine: Machine) -> None:
        """A snapshot row of a stretch stepped row by row (:meth:`_step` without the runs to count: none ran)."""
        rr = check_snapshot(row, machine, self.result)
        self.slow_at[i] = (row, None, rr)
        if rr.status == "diverge":
            self.diverged.append(rr)

    def _step_keyed(self, si: int, i: int) -> None:
        """Row ``i`` (the ``si``-th stepped row) on every lane: a remembered transition or the model.

        Only the outcome is kept here; rule hits, counts and the comparison with the expectation are
        done on columns for the whole batch (:meth:`_compare_keyed`).
        """
        key = self.event_keys.keys[self.slow_kids[si]]
        self.clock[0] = i
        self.keyed_rows.append(i)
        seq = int(self.b.seq[i])
        for lane, outs in zip(self.lanes, self.keyed_outs, strict=True):
            outs.append(self._lane_step(lane, key, seq))
        self._keyed_stepped(i, key)

    def _lane_step(self, lane: Lane, key: tuple[Any, ...], seq: int, ev: Event | None = None) -> Outcome:
        """The event ``key`` on one lane: a remembered transition, or the model.

        An event that reads a TLB (:meth:`_reads_tlb`) first settles the pending accesses, and is
        remembered per the TLBs' contents (or, memo off, never).  ``ev`` is built from the key on a
        miss when not given.
        """
        memo = lane.memo
        out = memo.lookup(key)
        if out is not None:
            return out
        if ev is None:
            ev = Event(key[0], key[1], key[2], seq, *key[3:])
        if key[0] not in _TLB_READERS or not self._reads_tlb(lane, key):
            return memo.step(ev, key, False)
        if memo.enabled:  # the outcome depends on the TLBs: remember it per their contents
            contents = self._tlb_now(lane)
            if contents is not None and self.check_peeks:  # (tests: the peek is what settling gives)
                self._settle()
                self.peeks_checked.append(contents == memo.tlb_contents())
            if contents is None:
                self._settle()
                contents = memo.tlb_contents()
            tkey = (*key, contents)
            out = memo.lookup(tkey)
            if out is not None:
                return out
            self._settle()  # the model reads the TLBs: make them current
            out = memo.step(ev, tkey, False)
        else:
            self._settle()
            out = memo.step(ev, key, True)
        if key[0] == "map":  # stepped: the live page tables changed in place
            lane.pages_changed()
        return out

    def _tlb_now(self, lane: Lane) -> tuple[frozenset[int], ...] | None:
        """:meth:`TransitionCache.tlb_contents` as it would be after :meth:`_settle`, without settling.

        A TLB holds its live pages plus the fills of pending accesses that survive: those after its
        last flush with no later INVLPG of their page (the rule of :meth:`Lane.apply_fills`).  Only
        the accesses of the TLB's own (vCPU, level) are looked at, one by one: those after its last
        flush, or after the previous look if there was no flush since (:class:`TlbPeek`).  None when
        there are too many, or when an access's state is not known here (then settle).
        """
        if self.promoted:
            return None
        li = self.lanes.index(lane)
        memo = lane.memo
        now = self.clock[0]
        before_at = self.before_at[li]
        slow = self.slow_list
        combo = self.combo
        out = []
        for path, tlb in memo.tlbs.items():
            pk = self.peeks.get((li, path))
            if pk is None:
                pk = self.peeks[(li, path)] = TlbPeek()
            pk.fold(tlb.log)
            k = path[0] * 2 + (path[1] == "l2")
            rows = self.key_row_lists.get(k)
            if rows is None:
                kr = self.key_rows.get(k)
                if kr is None:
                    kr = self.key_rows[k] = self.fast_idx[self.b.key[self.fast_idx] == k]
                rows = self.key_row_lists[k] = kr.tolist()
            contents = set(tlb)
            start = max(pk.flushed + 1, self.settled_upto)
            if pk.contents is not None and pk.at_flush == pk.flushed and pk.upto >= start:
                start = pk.upto
                contents.update(b for b in pk.contents if pk.invlpg.get(b, -1) < start)
            lo = bisect_left(rows, start)
            hi = bisect_left(rows, now, lo)
            if hi - lo > TLB_PEEK:
                return None
            invlpg = pk.invlpg
            for r in rows[lo:hi]:
                st = int(before_at[bisect_left(slow, r)])
                if st < 0:
                    return None
                sid = lane.state_id_at((st << 32) | k)
                if sid < 0:
                    return None
                base = lane.fills[lane.class_id((sid << 40) | int(combo[r]))][0]
                if base >= 0 and r > invlpg.get(base, -1):
                    contents.add(base)
            pk.contents, pk.upto, pk.at_flush = frozenset(contents), now, pk.flushed
            out.append(pk.contents)
        return tuple(out)

    @property
    def keyed_at(self) -> dict[int, int]:
        """Batch row -> position in ``keyed_rows`` (built once the batch's rows are all stepped)."""
        if self._keyed_at is None or len(self._keyed_at) != len(self.keyed_rows):
            self._keyed_at = {r: k for k, r in enumerate(self.keyed_rows)}
        return self._keyed_at

    def _keyed_stepped(self, i: int, key: tuple[Any, ...]) -> None:
        """Hook: a keyed row was stepped on every lane (compare checks the lanes' observed state)."""

    def _compare_keyed(self) -> None:
        """Rule hits, counts and expectations of the keyed rows of the batch, on columns (lane 0)."""
        if not self.keyed_rows:
            return
        rows = np.array(self.keyed_rows, dtype=np.int64)
        res = self.result
        res.events += len(rows)
        res.compared += int(self.b.has_expect[rows].sum())
        bad = self._keyed_mismatch(rows, self.keyed_outs[0], res)
        if len(bad):
            for rr in self._keyed_row_results(bad):
                if rr.masked:
                    res.masked_count += len(rr.masked)
                    res.masked_by.update(d.mask or "" for d in rr.masked)
                if rr.diffs:
                    self.diverged.append(rr)

    def _keyed_mismatch(self, rows: np.ndarray, outs: list[Outcome], res: ReplayResult) -> np.ndarray:
        """Count the rule hits of ``outs`` into ``res``; the keyed rows whose expectation they may not meet.

        Only rows that expect a field have that field looked at; a row kept here may still match (its
        RowResult is judged exactly by :func:`diff_outcome`), a row left out cannot differ.
        """
        hits = res.rule_hits
        for rules, cnt in Counter(map(_RULES_OF, outs)).items():
            for r in rules:
                hits[r] += cnt
        b = self.b
        bad = np.zeros(len(rows), dtype=bool)
        er = b.exp_result[rows]
        if (er >= 0).any():  # (every outcome's result code, in C: cheaper than picking the rows first)
            got = np.fromiter(map(_RESULT_CODE.get, map(_RESULT_OF, outs), repeat(-3)), dtype=np.int64, count=len(outs))
            bad |= (er >= 0) & (got != er)
        for name, (valid, value) in b.exp.items():
            sel = np.flatnonzero(valid[rows])
            if len(sel):
                get = attrgetter(name)
                sl = sel.tolist()
                bad[[j for j, e in zip(sl, value[rows[sel]].tolist(), strict=True) if get(outs[j]) != e]] = True
        if b.exp_values is not None:
            sel = np.flatnonzero(b.has_values[rows])
            if len(sel):
                want = column_values(b.exp_values.take(index_array(rows[sel])))
                bad[[j for j, e in zip(sel.tolist(), want, strict=True) if outs[j].values != tuple(e)]] = True
        return rows[bad]  # type: ignore[no-any-return]

    def _keyed_row_results(self, idx: np.ndarray, lane: int = 0) -> list[RowResult]:
        """RowResults of keyed rows at batch positions ``idx``, exactly as _step builds them."""
        out = []
        outs = self.keyed_outs[lane]
        for row in self.b.rows(idx):
            out.append(self._judged(row, outs[self.keyed_at[row.index - self.b.start]]))
        return out

    def _judged(self, row: TraceRow, out: Outcome) -> RowResult:
        """The RowResult of an event row and its outcome, with its status, as replay_rows gives it."""
        assert row.event is not None
        rr = RowResult(row.index, row.seq, row.event, row.expect, out, note=row.note)
        if row.expect is None:
            rr.status = "uncompared"
        else:
            rr.diffs, rr.masked = diff_outcome(row.expect, out, row.event, self.profile)
            if rr.masked:
                rr.status = "masked"
            if rr.diffs:
                rr.status = "diverge"
        return rr

    @staticmethod
    def _reads_tlb(lane: Lane, key: tuple[Any, ...]) -> bool:
        """Whether event ``key`` may read a TLB of ``lane``: every map; a MOV to CR4 that changes PKS or PKE
        (Cpu.set_cr4), judged by the CR4 of the lane's current state (remembered per state)."""
        if key[0] != "mov_cr4":
            return True
        vcpu, level = key[1], key[2]

        def cr4(m: Machine) -> int | None:
            cpu = tlb_cpu(m, vcpu, level)
            return None if cpu is None else cpu.cr4

        old = lane.memo.cached("cr4", (vcpu, level), cr4)
        return old is None or bool(((key[4] or 0) ^ old) & (CR4_PKE | CR4_PKS))

    def _settle(self) -> None:
        """Classify every pending access and put its TLB fill in place (before anything reads the TLB)."""
        p = self.pending
        if not p.starts and not self.run_spans:
            return
        nl = len(self.lanes)
        parts = []
        queued = self._run_accesses()
        if queued is not None:
            rows, range_starts, states = queued
            akey = self.b.key[rows]
            parts.append((rows, [lane.state_ids_at((st << 32) | akey) for lane, st in zip(self.lanes, states, strict=True)],
                          range_starts))
            self._runs_settled(rows, range_starts, states)
        if p.starts:
            starts = np.array(p.starts, dtype=np.int64)
            lengths = np.array(p.ends, dtype=np.int64) - starts
            total = int(lengths.sum())
            rows = np.arange(total, dtype=np.int64) + np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
            sid_table = np.array(p.sids, dtype=np.int64)
            range_of_row = np.repeat(np.arange(len(starts)), lengths)
            kpos = np.zeros(total, dtype=np.int64) if len(self.keys) == 1 else \
                np.searchsorted(self.keys_arr, self.b.key[rows])
            parts.append((rows, [sid_table[range_of_row, kpos * nl + li] for li in range(nl)], starts[range_of_row]))
        if not parts:
            return
        if len(parts) == 1:
            rows, sids, range_starts = parts[0]
        else:
            rows = np.concatenate([x[0] for x in parts])
            sids = [np.concatenate([x[1][li] for x in parts]) for li in range(nl)]
            range_starts = np.concatenate([x[2] for x in parts])
            if len(rows) > 1 and not (rows[1:] > rows[:-1]).all():  # ranges and runs interleave: row order
                order = np.argsort(rows, kind="stable")
                rows, range_starts = rows[order], range_starts[order]
                sids = [x[order] for x in sids]
        self.settled_upto = int(rows[-1]) + 1
        self.promoted = False
        self.peeks = {}  # the logs are cleared below
        combo = self.combo[rows]
        cls_ids = []
        for lane, lane_sids in zip(self.lanes, sids, strict=True):
            cls_id = lane.classify(lane_sids, combo)
            lane.apply_fills(rows, cls_id)
            cls_ids.append(cls_id)
        self.chunks.append((rows, cls_ids, range_starts))
        p.starts.clear()
        p.ends.clear()
        p.sids.clear()

    def _runs_settled(self, rows: np.ndarray, starts: np.ndarray, states: list[np.ndarray]) -> None:
        """Hook: the accesses of runs are being evaluated (compare records the lanes' observed states)."""

    def _compare(self) -> None:
        """Count and compare every access of the batch evaluated on columns (rule hits, expectations)."""
        if not self.chunks:
            return
        b, res, lane = self.b, self.result, self.lane
        rows = np.concatenate([c[0] for c in self.chunks])
        cls_id = np.concatenate([c[1][0] for c in self.chunks])
        lane.count_rules(cls_id, res.rule_hits)
        res.events += len(rows)
        result, pfec = lane.cls_result[cls_id], lane.cls_pfec[cls_id]
        er, hp, hc = b.exp_result[rows], b.has_pfec[rows], b.has_cr2[rows]
        compared = (er >= 0) | hp | hc
        res.compared += int(compared.sum())
        bad = ((er >= 0) & (er != result)) | (hp & (b.exp_pfec[rows] != pfec)) | (
            hc & ((result != _PF) | (b.exp_cr2[rows] != b.addr[rows])))
        if bad.any():
            for rr in self._fast_row_results(rows[bad], cls_id[bad]):
                if rr.masked:
                    res.masked_count += len(rr.masked)
                    res.masked_by.update(d.mask or "" for d in rr.masked)
                if rr.diffs:
                    self.diverged.append(rr)

    def _fast_row_results(self, idx: np.ndarray, cls_id: np.ndarray) -> list[RowResult]:
        """RowResults of access rows handled on columns, exactly as replay_rows builds them."""
        out = []
        for row, c in zip(self.b.rows(idx), cls_id.tolist(), strict=True):
            assert row.event is not None
            out.append(self._judged(row, self.lane.classes[c].outcome(row.event.addr or 0)))
        return out

    def _row_results(self, idx: Sequence[int]) -> list[RowResult]:
        """Rows of the current batch as RowResults (context rows), in the order of ``idx``."""
        got: dict[int, RowResult] = {}
        fast: list[int] = []
        keyed: list[int] = []
        for i in idx:
            slow = self.slow_at.get(i)
            if slow is None:
                (keyed if i in self.keyed_at else fast).append(i)
                continue
            got[i] = _stepped_result(slow)
        if fast:
            want = np.array(sorted(fast), dtype=np.int64)
            for i, rr in zip(want.tolist(), self._fast_row_results(want, self._access_classes(want)), strict=True):
                got[i] = rr
        if keyed:
            for i, rr in zip(keyed, self._keyed_row_results(np.array(keyed, dtype=np.int64)), strict=True):
                got[i] = rr
        return [got[i] for i in idx]

    def _access_classes(self, want: np.ndarray) -> np.ndarray:
        """Lane 0's class id of each evaluated access row at (sorted) batch positions ``want``."""
        cls = np.full(len(want), -1, dtype=np.int64)
        for rows, cls_ids, _ in self.chunks:
            j = np.searchsorted(rows, want)
            hit = (j < len(rows)) & (rows[np.minimum(j, len(rows) - 1)] == want)
            cls[hit] = cls_ids[0][j[hit]]
        assert (cls >= 0).all(), "a context row was not evaluated"
        return cls

    # -- divergences and context, in row order ------------------------------------------------
    def _finish_batch(self) -> None:
        res, b = self.result, self.b
        nxt_ctx = 0  # next batch row the context after the first divergence still needs
        for rr in sorted(self.diverged, key=lambda r: r.index):
            i = rr.index - b.start
            res.divergence_count += 1
            if res.divergence_count == 1:
                before = self._row_results(range(max(0, i - CONTEXT), i))
                recent = self._tail_results() + before
                res.context = [*recent[-CONTEXT:], rr]
                self.after_first = CONTEXT
                res.divergences.append(rr)
                nxt_ctx = i + 1
                continue
            rr.consequential = True
            if len(res.divergences) < MAX_KEPT_DIVERGENCES:
                res.divergences.append(rr)
            if self.after_first > 0:
                while self.after_first > 0 and nxt_ctx < i:
                    res.context += self._row_results([nxt_ctx])
                    nxt_ctx += 1
                    self.after_first -= 1
                if self.after_first > 0:
                    res.context.append(rr)
                    self.after_first -= 1
                    nxt_ctx = i + 1
        if self.after_first > 0 and nxt_ctx < b.n:
            take = range(nxt_ctx, min(b.n, nxt_ctx + self.after_first))
            res.context += self._row_results(take)
            self.after_first -= len(take)
        if not res.divergence_count:
            self._keep_tail()

    def _keep_tail(self) -> None:
        """Remember the batch's last rows as the context of a first divergence early in a later batch.

        Their RowResults are built only if that happens (:meth:`_tail_results`); here each row keeps
        what its outcome is (the stepped row's record, a keyed row's Outcome, an access's class).
        """
        b = self.b
        lo = max(0, b.n - CONTEXT)
        outcomes: list[tuple[str, Any]] = []
        accesses: list[int] = []  # positions in ``outcomes`` of the access rows, filled in below
        keyed = self.keyed_rows
        for i in range(lo, b.n):
            slow = self.slow_at.get(i)
            if slow is not None:
                outcomes.append(("slow", slow))
                continue
            k = bisect_left(keyed, i)  # (keyed rows are stepped, so listed, in row order)
            if k < len(keyed) and keyed[k] == i:
                outcomes.append(("keyed", self.keyed_outs[0][k]))
                continue
            accesses.append(len(outcomes))
            outcomes.append(("access", None))
        if accesses:
            cls = self._access_classes(np.array(accesses, dtype=np.int64) + lo)
            for pos, c in zip(accesses, cls.tolist(), strict=True):
                outcomes[pos] = ("access", self.lane.classes[c])
        self.tails.append(_Tail(b.batch.slice(lo), b.start + lo, outcomes))
        while sum(len(t.outcomes) for t in self.tails) - len(self.tails[0].outcomes) >= CONTEXT:
            self.tails.popleft()

    def _tail_results(self) -> list[RowResult]:
        """The RowResults of the rows :meth:`_keep_tail` kept, in order (at most CONTEXT)."""
        out: list[RowResult] = []
        for tail in self.tails:
            rows = rows_of_batch(tail.batch, tail.start, range(len(tail.outcomes)))
            for row, (what, got) in zip(rows, tail.outcomes, strict=True):
                if what == "slow":
                    out.append(_stepped_result(got))
                elif what == "keyed":
                    out.append(self._judged(row, got))
                else:
                    assert row.event is not None
                    out.append(self._judged(row, got.outcome(row.event.addr or 0)))
        return out[-CONTEXT:]


def _stepped_result(slow: tuple[TraceRow, Outcome | None, RowResult | None]) -> RowResult:
    """The RowResult of a model-stepped row from its ``slow_at`` entry (made here if it matched)."""
    row, out, rr = slow
    if rr is None:
        assert row.event is not None and out is not None
        rr = RowResult(row.index, row.seq, row.event, row.expect, out, note=row.note)
        rr.status = "uncompared" if row.expect is None else "pass"
    return rr


def _matches(e: Expect, out: Outcome) -> bool:
    """True when ``diff_outcome`` would find nothing (every expected field equals the outcome's)."""
    return ((e.result is None or e.result == out.result) and (e.pfec is None or e.pfec == out.pfec)
            and (e.cr2 is None or e.cr2 == out.cr2) and (e.value is None or e.value == out.value)
            and (e.values is None or e.values == out.values) and (e.count is None or e.count == out.count)
            and (e.exit_reason is None or e.exit_reason == out.exit_reason)
            and (e.vm_error is None or e.vm_error == out.vm_error)
            and (e.exit_qual is None or e.exit_qual == out.exit_qual))


assert OUTCOME_FIELDS == ("result", "pfec", "cr2", "value", "values", "count", "exit_reason", "vm_error", "exit_qual")


def whole_trace_plain(trace: TraceFile) -> bool:
    """A trace shorter than one stretch is one stretch judged at once: row by row, as the reference engine
    steps it (numpy's fixed cost per batch is more than such a trace takes to step)."""
    return STRETCH_MODE == "judge" and trace.num_rows < STRETCH


def fast_replay_trace(trace: TraceFile, policy: Policy, profile: Profile) -> ReplayResult:
    """Replay ``trace`` under ``policy`` with ``profile``: the same ReplayResult as replay_trace, faster."""
    t0 = time.perf_counter()
    result = ReplayResult(str(trace.path), trace.name, policy.name, profile.name, meta=dict(trace.meta))
    if whole_trace_plain(trace):
        from difftest.engine.reference import replay_rows

        replay_rows(trace.rows(with_notes=False), policy.build(trace.host()), profile, result)
    else:
        FastReplay(policy.build(trace.host()), profile, result).run(trace.batches())
    result.seconds = time.perf_counter() - t0
    return result
