"""Random traces that respect preconditions, with expectations from one policy's outcomes.

A generated trace is only useful if every event is one a real guest or VMM could issue at that
point: CPUID is set before CR4.PKS, paging (long mode) is on before accesses that key checks
apply to, a page is mapped before it is accessed, vmcs12 is prepared (controls, PKRS fields,
L1's MSR bitmap) before VMLAUNCH, and L2 events happen only while L2 runs.  The generator
therefore steps policy P's machine as it goes and reads its state (``Machine.snapshot``) to
decide what may come next; P's outcomes become the trace's expectations.  Everything random
comes from one ``random.Random(seed)``, so a seed always gives the same trace.

:class:`Draft` (rows in memory) is what generation produces and what shrinking edits; its
:meth:`Draft.as_trace` feeds replay and compare without a round trip through Parquet.
"""

from __future__ import annotations

import gc
import os
import random
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import accumulate
from operator import attrgetter
from pathlib import Path
from typing import Any

from difftest.progress import advance as advance_progress
from difftest.trace.builder import TraceBuilder
from difftest.trace.io import Expect, Snapshot, TraceRow, write_trace
from difftest.trace.schema import SNAPSHOT_KIND
from reference_model.events import OPTIONAL_EVENT_FIELDS, OUTCOME_FIELDS, Event, Outcome, kinds_where
from reference_model.host import DEFAULT_HOST, HOST_FEATURES, HostCpu, parse_features
from reference_model.machine import Machine
from reference_model.policies import Policy
from reference_model.registers import (
    CPUID1_ECX_VMX,
    CPUID7_ECX_PKS,
    CPUID7_ECX_PKU,
    CR0_ET,
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    CR4_PKE,
    CR4_PKS,
    CR4_SMEP,
    EFER_LMA,
    EFER_LME,
    MSR_EFER,
    MSR_IA32_PKRS,
    MSR_LSTAR,
    MSR_STAR,
    MSR_SYSENTER_CS,
    VM_ENTRY_LOAD_IA32_PKRS,
    VM_EXIT_LOAD_IA32_PKRS,
    VMCS_GUEST_IA32_PKRS,
    VMCS_GUEST_IA32_PKRS_HIGH,
    VMCS_HOST_IA32_PKRS,
    VMCS_VM_ENTRY_CONTROLS,
    VMCS_VM_EXIT_CONTROLS,
)
from reference_model.rules import most_specific

DOMAINS = ("arch", "kvm", "nested", "pkvm", "pcpu")
# The domains every policy understands; "pcpu" (vCPUs time-sharing physical CPUs) only means more than
# "kvm" under the 2026 policies, so fuzz adds it only when one of its policies models shared pCPUs.
COMMON_DOMAINS = DOMAINS[:4]
DEFAULT_DOMAIN = "kvm"
DEFAULT_GENERATION_POLICY = "kvm-v7"

_LIST_FIELDS = ("msrs", "values")
_EXPECT_FIELDS = tuple(f"exp_{n}" for n in OUTCOME_FIELDS)
_EXPECT_KEYS = _EXPECT_FIELDS[1:]  # the columns of an Outcome's fields after ``result``, in order
_outcome_values = attrgetter(*OUTCOME_FIELDS[1:])  # those fields of an Outcome, as one tuple
_NO_VALUES = (None,) * len(_EXPECT_KEYS)
# Addresses the generator maps and accesses (one 4 KiB page each, all below 4 GiB).
ADDRESSES = (0x4000_0000, 0x4000_1000, 0x7F00_0000)
# Host features a "different host" lacks (sources/kvm_pks_series.md: B2, B6, B13, B15, B17, D2).
# A CPU without PKS has no load-PKRS controls either; one control alone is B17's "evil L0".
DROPPABLE_FEATURES: tuple[tuple[str, ...], ...] = (
    ("pks", "vmx_entry_load_pkrs", "vmx_exit_load_pkrs"), ("unrestricted_guest",), ("vmx_entry_load_pkrs",),
    ("vmx_exit_load_pkrs",), ("ept",))
# Plain MSRs the pKVM domain writes (PKVM.MSR.PRE allowlists and a write-only command MSR).
PKVM_MSRS = (MSR_STAR, MSR_LSTAR, MSR_SYSENTER_CS, 0xDA0, 0x10B)
# Events after which KVM may have VMREAD a field the CPU lacks (B13, B15): a host.warnings snapshot may follow.
WARNING_KINDS = frozenset({"emu_access", "vmread", "rdmsr", "get_msrs", "get_nested_state", "smi", "nested_exit"})
# Event kinds that only mean something with nested VMX (the model's kind table): until one has run, no
# vCPU can be in L2.
NESTED_KINDS = kinds_where("nested")
# Distinct events kept for reuse (random values make new ones without end: the cache starts over when full).
EVENT_CACHE = 1 << 16
# Events between two progress reports (a report per event would cost more than some events).
PROGRESS_STEP = 4096


# --------------------------------------------------------------------------- in-memory traces
@dataclass
class Draft:
    """A trace as row dicts (trace columns) plus metadata: generated, shrunk, then written.

    Rows are values, never changed in place: drafts share them, and a generated draft repeats one dict
    wherever the same event had the same outcome.  A row's ``seq`` is its position: generated rows carry
    none, and :meth:`numbered` and :meth:`write` number them.
    """

    rows: list[dict[str, Any]]
    meta: dict[str, str]

    @property
    def setup_rows(self) -> int:
        """Leading rows that are the setup prologue (metadata ``setup_rows``; shrinking keeps them)."""
        try:
            return max(0, min(int(self.meta.get("setup_rows", "0")), len(self.rows)))
        except ValueError:
            return 0

    @property
    def events(self) -> int:
        """Rows that are events (not snapshot checks)."""
        return sum(1 for r in self.rows if r["kind"] != SNAPSHOT_KIND)

    def with_rows(self, rows: list[dict[str, Any]], setup_rows: int | None = None) -> Draft:
        meta = dict(self.meta)
        n = self.setup_rows if setup_rows is None else setup_rows
        if n:
            meta["setup_rows"] = str(n)
        else:
            meta.pop("setup_rows", None)
        return Draft(list(rows), meta)  # row dicts are values: shared between drafts, never changed in place

    def numbered(self) -> list[dict[str, Any]]:
        """The rows with ``seq`` renumbered 0, 1, ... (shrinking leaves gaps)."""
        return [{**r, "seq": i} for i, r in enumerate(self.rows)]

    def fingerprint(self) -> tuple[tuple[tuple[str, Any], ...], ...]:
        """A hashable form of the rows (seq ignored), for the shrinker's history."""
        return tuple(tuple(sorted((k, v) for k, v in r.items() if k != "seq" and v is not None)) for r in self.rows)

    def host(self) -> HostCpu:
        text = self.meta.get("cpu.features")
        return DEFAULT_HOST if text is None else parse_features(text)

    def as_trace(self, path: str = "<memory>") -> MemoryTrace:
        return MemoryTrace(Path(path), dict(self.meta), self.numbered())

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically as a trace file."""
        return write_trace(path, self.rows, self.meta, renumber=True, shared=True)


def load_draft(path: str | os.PathLike[str]) -> Draft:
    """A trace file as a :class:`Draft` (every row validated first; bad input raises InputError)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from difftest.trace.io import column_values, open_trace

    tf = open_trace(path)
    for _ in tf.batches(with_notes=True):  # validation, on columns
        pass
    table = pq.read_table(tf.path)
    rows: list[dict[str, Any]] = [{} for _ in range(table.num_rows)]
    for name, col in zip(table.column_names, table.columns, strict=True):  # column by column: most are all null
        if col.null_count == len(col):
            continue
        values = [v for chunk in col.chunks for v in column_values(chunk)]
        if pa.types.is_list(col.type):
            values = [None if v is None else tuple(v) for v in values]
        for r, v in zip(rows, values, strict=True):
            if v is not None:
                r[name] = v
    return Draft(rows, dict(tf.meta))


@dataclass
class MemoryTrace:
    """The part of :class:`~difftest.trace.io.TraceFile` that replay and compare use, from memory."""

    path: Path
    meta: dict[str, str]
    row_dicts: list[dict[str, Any]] = field(repr=False)

    @property
    def name(self) -> str:
        return self.meta.get("name") or self.path.stem

    @property
    def num_rows(self) -> int:
        return len(self.row_dicts)

    def host(self) -> HostCpu:
        text = self.meta.get("cpu.features")
        return DEFAULT_HOST if text is None else parse_features(text)

    def policies(self) -> list[str]:
        return [p.strip() for p in self.meta.get("policy", "").split(",") if p.strip()]

    def rows(self, with_notes: bool = True) -> Iterator[TraceRow]:
        for i, r in enumerate(self.row_dicts):
            yield trace_row(i, r)

    def notes_for(self, indices: Iterable[int]) -> dict[int, str]:
        return {i: n for i in indices if 0 <= i < len(self.row_dicts) and (n := self.row_dicts[i].get("note"))}


def event_of(row: Mapping[str, Any]) -> Event:
    """The model event a row dict describes."""
    ev = Event(row["kind"], vcpu=row.get("vcpu", 0), level=row.get("level", "l1"), seq=row.get("seq", 0))
    for name in OPTIONAL_EVENT_FIELDS:
        v = row.get(name)
        if v is not None:
            setattr(ev, name, tuple(v) if name in _LIST_FIELDS else v)
    return ev


def trace_row(index: int, row: Mapping[str, Any]) -> TraceRow:
    """A row dict as replay sees a row read from a file."""
    seq = row.get("seq", index)
    if row["kind"] == SNAPSHOT_KIND:
        return TraceRow(index, seq, None, Snapshot(row["path"], row["exp_value"], row.get("exp_rule")), None, row.get("note"))
    vals = row.get("exp_values")
    expect = Expect(row.get("exp_result"), row.get("exp_pfec"), row.get("exp_cr2"), row.get("exp_value"),
                    tuple(vals) if vals is not None else None, row.get("exp_count"), row.get("exp_exit_reason"),
                    row.get("exp_vm_error"), row.get("exp_exit_qual"), row.get("exp_rule"))
    return TraceRow(index, seq, event_of(row), None, None if expect.is_empty() else expect, row.get("note"))


def expectation_of(out: Outcome) -> dict[str, Any]:
    """``exp_*`` keyword arguments stating ``out`` (none when the architecture leaves the result undefined)."""
    if "result" in out.undefined:
        return {}
    exp: dict[str, Any] = {"result": out.result}
    for name in OUTCOME_FIELDS[1:]:
        v = getattr(out, name)
        if v is not None and name not in out.undefined:
            exp[name] = v
    return exp


def event_row(kind: str, vcpu: int, level: str, fields: Mapping[str, Any], out: Outcome,
              values: tuple[Any, ...] | None = None) -> dict[str, Any]:
    """The row (without seq) of an event whose outcome ``out`` is its expectation (``values``: the outcome's
    fields after ``result``, when the caller has them)."""
    row = {"kind": kind, "vcpu": vcpu, "level": level, **fields}
    if not out.undefined:  # (expectation_of, inlined)
        row["exp_result"] = out.result
        got = _outcome_values(out) if values is None else values
        if got != _NO_VALUES:  # (most outcomes are a result alone)
            for key, x in zip(_EXPECT_KEYS, got, strict=True):
                if x is not None:
                    row[key] = x
            if out.values is not None and type(out.values) is not tuple:
                row["exp_values"] = tuple(out.values)  # (replaces in place: the key order stays)
    else:
        exp = expectation_of(out)
        if exp:
            row["exp_result"] = exp.pop("result")
            for k, x in exp.items():
                row[f"exp_{k}"] = tuple(x) if k == "values" else x
    return row


def refill_expectations(draft: Draft, policy: Policy) -> Draft:
    """The same events with expectations (and snapshot values) recomputed from ``policy``."""
    machine = policy.build(draft.host())
    rows: list[dict[str, Any]] = []
    for r in draft.rows:
        row = {k: v for k, v in r.items() if k not in _EXPECT_FIELDS and k != "exp_rule"}
        if r["kind"] == SNAPSHOT_KIND:
            try:
                row["exp_value"] = machine.snapshot(r["path"])
            except KeyError:
                row["exp_value"] = r["exp_value"]
            if r.get("exp_rule"):
                row["exp_rule"] = r["exp_rule"]
        else:
            for k, v in expectation_of(machine.step(event_of(r))).items():
                row[f"exp_{k}"] = tuple(v) if k == "values" else v
        rows.append(row)
    return draft.with_rows(rows)


# --------------------------------------------------------------------------- the generator
@dataclass
class _VcpuState:
    """What the generator remembers about a vCPU beyond what the model's snapshots tell."""

    prepared: bool = False  # vmcs12 controls, fields and L1's MSR bitmap written
    in_smm: bool = False
    smm_level: str = "l1"  # the level that took the SMI: RSM is executed there


@dataclass(frozen=True)
class _Menu:
    """Weighted actions, with their total and running sums (built once per state, drawn from per event)."""

    items: list[tuple[float, Callable[[], object]]]
    total: float
    bounds: list[float]  # running sums of the weights
    actions: list[Callable[[], object]]
    margin: float  # far beyond the rounding that separates a running sum from repeated subtraction

    @classmethod
    def of(cls, items: list[tuple[float, Callable[[], object]]]) -> _Menu:
        bounds = list(accumulate(w for w, _ in items))
        total = sum(w for w, _ in items)  # (as pick() sums them)
        return cls(items, total, bounds, [a for _, a in items], 1e-9 * total)


class Generator:
    """Builds one trace: a setup prologue, then ``events`` random events chosen among those allowed."""

    def __init__(self, seed: int, events: int, domain: str, policy: Policy) -> None:
        if domain not in DOMAINS:
            raise ValueError(f"unknown domain {domain!r}; one of {', '.join(DOMAINS)}")
        self.rng = random.Random(seed)
        self.seed, self.target, self.domain, self.policy = seed, max(1, events), domain, policy
        self.host = self._choose_host()
        self.machine: Machine = policy.build(self.host)
        # Since P's last step: snapshot path -> P's value (None: not modelled), and vCPU -> its nested.guest_mode.
        self.known: dict[str | int, object] = {}
        # Whether an event of a kind the model's table marks ``nested`` has run: until one has, no vCPU has
        # L2 state, so no vCPU can be in guest mode and the generator need not ask P on every event.
        self.l2_possible = False
        # A variant file's policy is recorded by its name, base and knobs, never by its path, and not as
        # 'pksdt.policy' (which names registered policies only): replay it with --policy FILE.
        from difftest.variants import variant_provenance

        variant = variant_provenance(policy)
        # (the builder makes the metadata; the generator appends the rows itself, as Draft keeps them)
        self.tb = TraceBuilder(f"gen-{domain}-s{seed}", f"generated: {domain} domain, seed {seed}, expectations from "
                               f"{policy.name}", policy=None if variant else policy.name,
                               source=f"difftest generate --seed {seed} --events {events} --domain {domain} "
                               f"--policy {policy.name}",
                               host_features=None if self.host == DEFAULT_HOST else self.host.describe())
        if variant is not None:
            self.tb.meta["variant"] = f"{policy.name}: base {variant[0]}" + "".join(
                f", {k}={v!r}" for k, v in sorted(variant[1].items()))
        self.rows: list[dict[str, Any]] = []  # the trace's rows, as Draft keeps them (no None values, no seq)
        self.warnings = domain != "arch"  # host.warnings snapshots (KVM's, not the bare CPU's)
        # (kind, vCPU, level, *fields) -> the Event stepped, and its rows by P's outcome (see emit)
        self.events: dict[tuple[Any, ...], tuple[Event, dict[tuple[Any, ...], dict[str, Any]]]] = {}
        self.snapshot_rows: dict[tuple[Any, ...], dict[str, Any]] = {}  # (vCPU, path, value, rule) -> row
        self.count = 0
        self.vcpus: dict[int, _VcpuState] = {}
        self.mapped: dict[str, set[int]] = {"l1": set(), "l2": set()}
        self.blob_from: int | None = None  # vCPU whose KVM_GET_NESTED_STATE blob exists
        self.cur = 0
        self.last: Outcome | None = None

    # -- plumbing -------------------------------------------------------------------------
    def _choose_host(self) -> HostCpu:
        if self.domain in ("kvm", "nested") and self.rng.random() < 0.25:
            drop = set(self.rng.choice(DROPPABLE_FEATURES))
            return HostCpu(frozenset(f for f in HOST_FEATURES if f not in drop))
        return DEFAULT_HOST

    @property
    def full(self) -> bool:
        return self.count >= self.target

    def emit(self, kind: str, vcpu: int | None = None, level: str | None = None, **fields: Any) -> Outcome | None:
        """Append one event (if there is room), run it on P and state P's outcome as the expectation."""
        if self.count >= self.target:
            return None
        v = self.cur if vcpu is None else vcpu
        lvl = level or self.level(v)
        if None in fields.values():
            fields = {k: v2 for k, v2 in fields.items() if v2 is not None}
        self.known.clear()  # (the state is about to change)
        if not self.l2_possible and kind in NESTED_KINDS:
            self.l2_possible = True
        # Nearly every event repeats an earlier one (a few thousand distinct in 100,000), and so does its row:
        # each event is built once and shared, as the fast engine shares them (the model never writes to an
        # event nor reads its seq), and so is each row of it (rows are values; a row's seq is its position).
        key = (kind, v, lvl, *fields.items())
        entry = self.events.get(key)
        if entry is None:
            if len(self.events) >= EVENT_CACHE:
                self.events.clear()
            entry = self.events[key] = (Event(kind, v, lvl, 0, **fields), {})
        ev, rows_of = entry
        out = self.machine.step(ev)
        got = _outcome_values(out)
        if type(out.values) is not list:  # (an outcome is hashable unless a policy returns a list of values)
            said = (out.result, out.undefined, got)
            row = rows_of.get(said)
            if row is None:
                row = rows_of[said] = event_row(kind, v, lvl, fields, out, got)
        else:
            row = event_row(kind, v, lvl, fields, out, got)
        self.rows.append(row)
        self.count += 1
        self.last = out
        if kind in WARNING_KINDS and self.warnings and self.rng.random() < 0.25:
            self.snapshot("host.warnings")
        return out

    def snap(self, path: str, default: int = 0) -> int:
        """P's state at ``path`` (``default`` where P does not model it), read once per step of P."""
        known = self.known
        if path in known:
            got = known[path]
        else:
            try:
                got = known[path] = self.machine.snapshot(path)
            except KeyError:
                got = known[path] = None
        return default if got is None else got  # type: ignore[return-value]

    def snapshot(self, path: str) -> None:
        """A snapshot row with P's value (only for state P models), citing the most specific rule of P's last event."""
        try:
            value = self.machine.snapshot(path)
        except KeyError:
            return
        rule = most_specific(self.last.rules) if self.last is not None and self.last.rules else None
        key = (self.cur, path, value, rule)
        row = self.snapshot_rows.get(key)
        if row is None:
            row = self.snapshot_rows[key] = {"kind": SNAPSHOT_KIND, "vcpu": self.cur, "level": "host", "path": path}
            if value is not None:
                row["exp_value"] = value
            if rule is not None:
                row["exp_rule"] = rule
        self.rows.append(row)

    def guest_mode(self, v: int) -> bool:
        return bool(self.snap(f"vcpu{v}.nested.guest_mode")) and not self.vcpus[v].in_smm

    def level(self, v: int) -> str:
        """``l2`` while ``v`` is in guest mode (outside SMM), else ``l1`` (guest_mode, inlined: this runs
        two or three times per event)."""
        if not self.l2_possible:
            return "l1"
        state = self.vcpus.get(v)
        if state is None:
            return "l1"
        gm = self.known.get(v)
        if gm is None:
            gm = self.known[v] = self.snap(f"vcpu{v}.nested.guest_mode")
        return "l2" if gm and not state.in_smm else "l1"

    def reg(self, name: str, v: int | None = None) -> int:
        v = self.cur if v is None else v
        return self.snap(f"vcpu{v}.l2.{name}" if self.level(v) == "l2" else f"vcpu{v}.{name}")

    def paging(self) -> bool:
        return bool(self.reg("cr0") & CR0_PG)

    def long_mode(self) -> bool:
        return bool(self.reg("efer") & EFER_LMA)

    def has(self, bit: int) -> bool:
        return bool(self.snap(f"vcpu{self.cur}.cpuid.7.ecx") & bit)

    def pick(self, weighted: list[tuple[float, Callable[[], object]]]) -> None:
        """Run one action, drawn by weight."""
        total = sum(w for w, _ in weighted)
        x = self.rng.random() * total
        for w, action in weighted:
            x -= w
            if x < 0:
                action()
                return
        weighted[-1][1]()

    def choose(self, menu: _Menu) -> Callable[[], object]:
        """The action :meth:`pick` would run from ``menu.items`` for the same draw, found by bisection.

        :meth:`pick` subtracts the weights from the draw one by one; the running sums differ from that
        only by rounding, so a draw farther than ``menu.margin`` from every sum falls where both put it.
        A draw that close (about one in 10^8) takes :meth:`pick`'s own walk.
        """
        x = self.rng.random() * menu.total
        bounds = menu.bounds
        k = bisect_right(bounds, x)
        if k < len(bounds) and bounds[k] - x > menu.margin and (k == 0 or x - bounds[k - 1] > menu.margin):
            return menu.actions[k]
        for w, action in menu.items:
            x -= w
            if x < 0:
                return action
        return menu.items[-1][1]

    # -- values -------------------------------------------------------------------------
    def pkrs_value(self) -> int:
        r = self.rng.random()
        if r < 0.05:
            return 1 << self.rng.randrange(32, 64)  # ARCH.MSR.RSVD
        if r < 0.15:
            return 0
        key = self.rng.choice((1, 1, 1, 2, 0, 15))
        return (self.rng.choice((1, 2, 3)) << (2 * key)) | (self.rng.getrandbits(32) if r > 0.9 else 0)

    def small_value(self) -> int:
        return self.rng.choice((0, 0x4, 0x8, 0xC, 0x10, 0x55555554, self.rng.getrandbits(32)))

    # -- prologue -----------------------------------------------------------------------
    def add_vcpu(self, v: int, ecx7: int | None = None, vmx: bool | None = None) -> None:
        """A vCPU's first events: KVM_CREATE_VCPU under KVM and pKVM, then KVM_SET_CPUID2 (on hw, the enumeration)."""
        self.vcpus[v] = _VcpuState()
        if self.domain != "arch":
            self.emit("create_vcpu", vcpu=v, level="host")
        if ecx7 is None:
            ecx7 = (CPUID7_ECX_PKS if self.rng.random() < 0.85 else 0) | (CPUID7_ECX_PKU if self.rng.random() < 0.6 else 0)
        if vmx is None:
            vmx = self.domain == "nested"
        self.emit("set_cpuid", vcpu=v, level="host", cpuid_7_ecx=ecx7, cpuid_1_ecx=CPUID1_ECX_VMX if vmx else 0)

    def generate(self) -> Draft:
        """The trace, made with the cyclic collector paused.

        Every row stays alive until the trace is done, and the collector would walk all of them again
        and again as they age (a tenth of the time); stepping P leaves no cyclic garbage.
        """
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._generate()
        finally:
            if collecting:
                gc.enable()

    def _generate(self) -> Draft:
        self.add_vcpu(0)
        setup_rows = len(self.rows)
        build = {"arch": self.arch_menu, "kvm": self.kvm_menu, "nested": self.nested_menu, "pkvm": self.pkvm_menu,
                 "pcpu": self.pcpu_menu}[self.domain]
        if self.domain == "pkvm":
            # the host's PV calls on vCPU state (is_guest_vcpu_accessible), made without drawing from the RNG:
            # the rest of the trace makes the same choices (and ends three events earlier)
            for name in ("inject_irq", "set_efer", "inject_exception"):
                self.emit("pv_call", level="host", pv_call=name)
        # A menu depends only on the current vCPU's level (and, in the nested domain, on whether it waits in
        # SMM): built once per such state, with its total weight, instead of once per event.
        menus: dict[tuple[str, bool], _Menu] = {}
        nested = self.domain == "nested"
        stuck = 0
        reported = self.count
        while self.count < self.target and stuck < 50:
            before = self.count
            lvl = self.level(self.cur)
            key = (lvl, nested and lvl == "l1" and self.vcpus[self.cur].in_smm)
            menu = menus.get(key)
            if menu is None:
                menu = menus[key] = _Menu.of(build())
            self.choose(menu)()
            stuck = stuck + 1 if self.count == before else 0
            if self.count - reported >= PROGRESS_STEP:
                advance_progress(self.count - reported)
                reported = self.count
        if self.count > reported:
            advance_progress(self.count - reported)
        meta = self.tb.metadata()
        if setup_rows:
            meta["setup_rows"] = str(setup_rows)
        return Draft(self.rows, meta)

    # -- menus --------------------------------------------------------------------------
    def guest_menu(self) -> list[tuple[float, Callable[[], object]]]:
        lvl = self.level(self.cur)
        items: list[tuple[float, Callable[[], object]]] = [
            (4, lambda: self.emit("wrmsr", msr=MSR_IA32_PKRS, value=self.pkrs_value())),
            (2, lambda: self.emit("rdmsr", msr=MSR_IA32_PKRS)),
            (3, self.cr4_toggle),
            (0.5, lambda: self.emit("cpuid", cpuid_leaf=7, cpuid_subleaf=0)),
        ]
        if lvl == "l1":
            items += [
                (2, self.map_page), (4, lambda: self.access(emulated=False)), (4, lambda: self.access(emulated=True)),
                (1, self.wrpkru), (1, self.enter_paging), (0.5, self.invlpg), (0.5, self.rdpkru),
            ]
        return items

    def arch_menu(self) -> list[tuple[float, Callable[[], object]]]:
        return [*self.guest_menu(), (0.3, self.init_sipi),
                (0.3, lambda: self.emit("reset", level="host")), (0.5, self.cr0_toggle), (0.3, self.write_pdpte)]

    def host_menu(self) -> list[tuple[float, Callable[[], object]]]:
        return [
            (1, self.set_cpuid),
            (1.5, lambda: self.emit("host_pkrs", level="host", value=self.small_value())),
            (1, lambda: self.emit("vm_exit", level="host", reason=self.rng.choice((1, 10, 48)))),
            (0.7, lambda: self.emit("run", level="host")),
            (1, lambda: self.emit("set_msrs", level="host", msrs=(MSR_IA32_PKRS,), values=(self.pkrs_value(),))),
            (1, lambda: self.emit("get_msrs", level="host", msrs=(MSR_IA32_PKRS,))),
            (1, self.msr_filter),
            (0.5, lambda: self.emit("enable_user_msr", level="host", value=self.rng.choice((0, 1, 4, 5, 7)))),
            (0.3, lambda: self.emit("get_msr_index_list", level="host")),
            (0.5, self.init_sipi),
            (0.4, self.reset),
            (0.3, lambda: self.emit("get_cpuid", level="host")),
            (0.3, lambda: self.emit("get_sregs", level="host", reg=self.rng.choice(("cr0", "cr4", "efer")))),
            (0.7, self.cr0_toggle),
            (0.3, self.write_pdpte),
            (0.3, self.other_vcpu),
        ]

    def kvm_menu(self) -> list[tuple[float, Callable[[], object]]]:
        return [*self.guest_menu(), *self.host_menu()]

    def nested_menu(self) -> list[tuple[float, Callable[[], object]]]:
        lvl = self.level(self.cur)
        items = [*self.guest_menu(), *[(w / 2, a) for w, a in self.host_menu()],
                 (1, lambda: self.emit("get_nested_state", level="host")), (0.7, self.migrate)]
        if lvl == "l1":
            if self.vcpus[self.cur].in_smm:
                items.append((3, lambda: self.rsm()))
            else:
                items += [(6, self.vmlaunch), (1.5, self.vmwrite), (1, self.vmread),
                          (0.7, lambda: self.emit("set_msr_bitmap", msr=MSR_IA32_PKRS, value=self.rng.randrange(4)))]
        else:
            items += [(3, lambda: self.emit("nested_exit", reason=self.rng.choice((1, 10, 18)))), (1, self.smi)]
        return items

    def pkvm_menu(self) -> list[tuple[float, Callable[[], object]]]:
        return [*self.kvm_menu(), (2, lambda: self.emit("pvm_start", level="host")),
                (2, self.pkvm_set_msr),
                (1, lambda: self.emit("get_msrs", level="host", msrs=(self.rng.choice(PKVM_MSRS[:4]),)))]

    def pcpu_menu(self) -> list[tuple[float, Callable[[], object]]]:
        """KVM with vCPUs time-sharing physical CPUs (meaningful under the 2026 policies, KVM26.PCPU)."""
        return [*self.kvm_menu(), (2, self.schedule)]

    def schedule(self) -> None:
        """Move a vCPU's thread onto pCPU 0 or 1 (vcpu_load), or take it off its pCPU (vcpu_put)."""
        if len(self.vcpus) == 1:
            self.add_vcpu(1)
        v = self.rng.choice(sorted(self.vcpus))
        shared = getattr(self.machine, "pcpus", None) is not None  # the policy models pCPUs shared by vCPUs
        if self.rng.random() < 0.7:
            self.emit("vcpu_load", vcpu=v, level="host", value=self.rng.randrange(2) if shared else v)
        else:
            self.emit("vcpu_put", vcpu=v, level="host")

    def pkvm_set_msr(self) -> None:
        """A host write of a plain MSR (PKVM.MSR.PRE before the pVM runs, PKVM.PROTECT after)."""
        msr = self.rng.choice(PKVM_MSRS)
        self.emit("set_msrs", level="host", msrs=(msr,), values=(self.rng.choice((0, self.rng.getrandbits(32))),))

    # -- guest actions ------------------------------------------------------------------
    def cr4_toggle(self) -> None:
        """MOV to CR4 flipping one bit the CPUID enumerates (CPUID before CR4.PKS), then a flush."""
        bits = [b for b, ok in ((CR4_PKS, self.has(CPUID7_ECX_PKS)), (CR4_PKE, self.has(CPUID7_ECX_PKU))) if ok]
        if self.rng.random() < 0.1:
            bits.append(CR4_SMEP)
        if not bits:
            return
        out = self.emit("mov_cr4", value=self.enumerated(self.reg("cr4") ^ self.rng.choice(bits)))
        if out is not None and out.result == "ok" and self.paging() and self.rng.random() < 0.6:
            self.emit("mov_cr3", value=self.reg("cr3"))

    def enumerated(self, cr4: int) -> int:
        """``cr4`` without PKS/PKE when CPUID no longer enumerates them (never write them without it)."""
        for bit, leaf7 in ((CR4_PKS, CPUID7_ECX_PKS), (CR4_PKE, CPUID7_ECX_PKU)):
            if not self.has(leaf7):
                cr4 &= ~bit
        return cr4

    def cr0_toggle(self) -> None:
        """Paging off and on again (B6), or CR0.WP flipped; L1 only."""
        if self.level(self.cur) != "l1" or not self.paging():
            return
        cr0 = self.reg("cr0")
        if self.rng.random() < 0.5:
            self.emit("mov_cr0", value=cr0 & ~CR0_PG)
            self.emit("mov_cr0", value=cr0)
        else:
            self.emit("mov_cr0", value=cr0 ^ CR0_WP)

    def enter_paging(self) -> None:
        """Long mode (usually) or 32-bit PAE paging; by instructions in the arch domain, else KVM_SET_SREGS."""
        if self.paging():
            return
        pae_only = self.rng.random() < 0.15
        cr4 = self.enumerated(self.reg("cr4") | CR4_PAE)
        cr0 = CR0_ET | CR0_PE | CR0_PG | (CR0_WP if self.rng.random() < 0.85 else 0)
        efer = 0 if pae_only else EFER_LME
        if self.domain == "arch":
            self.emit("mov_cr4", value=cr4)
            if efer:
                self.emit("wrmsr", msr=MSR_EFER, value=efer)
            self.emit("mov_cr0", value=cr0)
        else:
            self.emit("set_sregs", level="host", cr0=cr0, cr4=cr4, efer=efer)

    def ensure_long_mode(self) -> bool:
        """Key checks need IA-32e paging: enter it first if the guest is not paging yet."""
        if not self.paging():
            self.enter_paging()
        return self.paging()

    def map_page(self, addr: int | None = None) -> int:
        addr = self.rng.choice(ADDRESSES) if addr is None else addr
        self.emit("map", addr=addr, page_size="4k", present=self.rng.random() < 0.95,
                  writable=self.rng.random() < 0.8, user=self.rng.random() < 0.3, key=self.rng.choice((1, 1, 1, 2, 0, 7)))
        self.mapped[self.level(self.cur)].add(addr)
        return addr

    def access(self, emulated: bool) -> None:
        """A data access (or fetch) at a mapped address; maps the page and enters paging first if needed."""
        if not self.ensure_long_mode():
            return
        mapped = sorted(self.mapped[self.level(self.cur)])
        addr = self.rng.choice(mapped) if mapped and self.rng.random() < 0.8 else self.map_page()
        kind = self.rng.choice(("read", "read", "write", "write", "rmw", "fetch", "implicit", "implicit_write"))
        cpl = 3 if self.rng.random() < 0.15 else None
        self.emit("emu_access" if emulated else "access", addr=addr, access=kind, cpl=cpl)

    def invlpg(self) -> None:
        mapped = sorted(self.mapped["l1"])
        if mapped:
            self.emit("invlpg", addr=self.rng.choice(mapped))

    def wrpkru(self) -> None:
        if self.reg("cr4") & CR4_PKE:
            self.emit("wrpkru", value=self.rng.choice((0, 0x4, 0x8, 0xC, 0x55555554)))

    def rdpkru(self) -> None:
        if self.reg("cr4") & CR4_PKE:
            self.emit("rdpkru")

    def write_pdpte(self) -> None:
        """Corrupt or repair the in-memory PDPTEs: only meaningful under 32-bit PAE paging (B1)."""
        if self.paging() and not self.long_mode() and self.reg("cr4") & CR4_PAE:
            self.emit("write_pdpte", rsvd=self.rng.random() < 0.7)

    # -- host actions -------------------------------------------------------------------
    def set_cpuid(self) -> None:
        ecx7 = (CPUID7_ECX_PKS if self.rng.random() < 0.6 else 0) | (CPUID7_ECX_PKU if self.rng.random() < 0.6 else 0)
        vmx = CPUID1_ECX_VMX if self.domain == "nested" else 0
        self.emit("set_cpuid", level="host", cpuid_7_ecx=ecx7, cpuid_1_ecx=vmx)

    def msr_filter(self) -> None:
        if self.rng.random() < 0.25:
            self.emit("set_msr_filter", level="host", filter_default="allow")
        else:
            self.emit("set_msr_filter", level="host", filter_default="allow", msrs=(MSR_IA32_PKRS,),
                      filter_allow=self.rng.randrange(3))

    def other_vcpu(self) -> None:
        """Switch later guest events to another vCPU, creating it (CPUID first) if needed."""
        if len(self.vcpus) == 1 and self.rng.random() < 0.7:
            self.add_vcpu(1)
        self.cur = self.rng.choice(sorted(self.vcpus))

    # -- nested VMX ---------------------------------------------------------------------
    def prepare_vmcs12(self) -> None:
        """vmcs12 before VMLAUNCH: controls, PKRS fields and L1's MSR bitmap for L2."""
        r = self.rng.random
        self.emit("vmwrite", field=VMCS_VM_ENTRY_CONTROLS, value=VM_ENTRY_LOAD_IA32_PKRS if r() < 0.6 else 0)
        self.emit("vmwrite", field=VMCS_VM_EXIT_CONTROLS, value=VM_EXIT_LOAD_IA32_PKRS if r() < 0.6 else 0)
        guest = self.pkrs_value() if r() < 0.8 else 0
        self.emit("vmwrite", field=VMCS_GUEST_IA32_PKRS, value=guest)
        self.emit("vmwrite", field=VMCS_HOST_IA32_PKRS, value=self.pkrs_value() if r() < 0.8 else 0)
        self.emit("set_msr_bitmap", msr=MSR_IA32_PKRS, value=self.rng.randrange(4))
        self.vcpus[self.cur].prepared = True

    def vmlaunch(self) -> None:
        if not self.vcpus[self.cur].prepared:
            self.prepare_vmcs12()
        self.emit("vmlaunch" if self.rng.random() < 0.8 else "vmresume")

    def vmwrite(self) -> None:
        f = self.rng.choice((VMCS_VM_ENTRY_CONTROLS, VMCS_VM_EXIT_CONTROLS, VMCS_GUEST_IA32_PKRS, VMCS_HOST_IA32_PKRS,
                             VMCS_GUEST_IA32_PKRS_HIGH))
        value = {VMCS_VM_ENTRY_CONTROLS: VM_ENTRY_LOAD_IA32_PKRS * self.rng.randrange(2),
                 VMCS_VM_EXIT_CONTROLS: VM_EXIT_LOAD_IA32_PKRS * self.rng.randrange(2),
                 VMCS_GUEST_IA32_PKRS_HIGH: self.rng.choice((0, 0, 1))}.get(f, self.pkrs_value())
        self.emit("vmwrite", field=f, value=value)

    def vmread(self) -> None:
        f = self.rng.choice((VMCS_GUEST_IA32_PKRS, VMCS_GUEST_IA32_PKRS, VMCS_HOST_IA32_PKRS, VMCS_VM_ENTRY_CONTROLS))
        self.emit("vmread", field=f)

    def init_sipi(self) -> None:
        """INIT, then the startup IPIs: INIT-SIPI-SIPI for an AP (X86.SIPI); one SIPI to the BSP, which ignores it."""
        out = self.emit("init", level="host")
        if out is None or out.result != "ok":
            return
        for _ in range(2 if self.cur != 0 else 1):
            self.emit("sipi", level="host", value=0x9A)

    def reset(self) -> None:
        """RESET also leaves SMM (X86.SMM), so the generator forgets a pending RSM."""
        out = self.emit("reset", level="host")
        if out is not None and out.result == "ok":
            self.vcpus[self.cur].in_smm = False

    def smi(self) -> None:
        level = self.level(self.cur)
        out = self.emit("smi")
        if out is not None and out.result == "ok":
            self.vcpus[self.cur].in_smm = True
            self.vcpus[self.cur].smm_level = level

    def rsm(self) -> None:
        out = self.emit("rsm", level=self.vcpus[self.cur].smm_level)
        if out is not None and out.result == "ok":
            self.vcpus[self.cur].in_smm = False

    def migrate(self) -> None:
        """Save the nested state on this vCPU and restore it on a fresh one (B14's order: MSRs first)."""
        src = self.cur
        self.emit("get_nested_state", level="host")
        dst = max(self.vcpus) + 1
        if dst > 3:
            return
        self.add_vcpu(dst, ecx7=self.snap(f"vcpu{src}.cpuid.7.ecx"), vmx=True)
        got = self.emit("get_msrs", vcpu=src, level="host", msrs=(MSR_IA32_PKRS,))
        if got is not None and got.values:
            self.emit("set_msrs", vcpu=dst, level="host", msrs=(MSR_IA32_PKRS,), values=got.values[:1])
        self.emit("set_nested_state", vcpu=dst, level="host", src_vcpu=src, run_pending=self.rng.random() < 0.3)
        self.vcpus[dst].prepared = True
        self.cur = dst
        if self.rng.random() < 0.5:
            self.emit("run", level="host")


def generate(seed: int, events: int, domain: str = DEFAULT_DOMAIN, policy: Policy | None = None) -> Draft:
    """A random trace of about ``events`` events for ``domain``, expectations from ``policy`` (default kvm-v7)."""
    from reference_model.policies import get_policy

    return Generator(seed, events, domain, policy or get_policy(DEFAULT_GENERATION_POLICY)).generate()


# --------------------------------------------------------------------------- command line
