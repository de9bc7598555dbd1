"""Shrink a trace while it still shows the same divergence.

The property kept is the first divergence: its rule id and event kind (:class:`DivergenceKind`)
and the event that triggers it (the same row content, wherever it moves).  With two policies it
is the first difference between A and B (lockstep compare); with one, the first divergence of A
from the trace's expectations, and then the policies known to pass the trace (``keep_passing``:
by default those of its ``policy`` metadata that pass it) must still pass every candidate, so the
expectations stay right and the shrink cannot drift to a trace that is merely wrong.  No candidate
snapshots a vCPU that no event before it creates.

Passes are ordered as Hypothesis orders its shrink passes: delete blocks (halves down to pairs,
whole vCPUs, nesting levels), then single events (any one, then redundant writes), then simplify
values (0 or one set bit); the list repeats until no pass makes progress.  Each pass keeps its
statistics (:class:`ShrinkPass`: candidates tried, accepted, rows deleted), shown by ``--verbose``.
The setup prologue (metadata ``setup_rows``) is never touched.  Every candidate tried is remembered,
so nothing is tested twice and the loop ends; a cap on candidates bounds the work; the result is
checked once more at the end.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from difftest.engine.reference import compare_rows, replay_rows
from difftest.progress import advance as advance_progress
from difftest.trace.io import TraceRow
from difftest.trace.schema import SNAPSHOT_KIND
from difftest.verdict.profiles import Profile, get_profile
from difftest.verdict.results import ReplayResult, RowResult
from reference_model.events import kinds_where
from reference_model.policies import Policy

from .generate import Draft, MemoryTrace, refill_expectations, trace_row
from .program import to_python as to_python  # (re-exported: the printer of shrunk traces)

# Fields a value-simplification pass may change (kind-defining fields such as msr, field and addr stay).
SIMPLIFIABLE = ("value", "values", "cpuid_7_ecx", "cpuid_1_ecx", "cr0", "cr3", "cr4", "efer", "key", "filter_allow",
                "reason", "cpl", "run_pending", "user", "writable", "nx", "rsvd", "user_upper")
NESTED_KINDS = kinds_where("nested")
# Writes whose effect a later write of the same target replaces.
WRITE_KINDS = kinds_where("overwrites")
_VCPU_PATH = re.compile(r"vcpu(\d+)\.")
DEFAULT_MAX_CANDIDATES = 4000
CAUSE_SEARCH = 64  # events before a diverging snapshot searched for the one that triggers it
CHECKPOINT_ROWS = 512  # rows between two machine checkpoints of the current draft (replay mode)


@dataclass(frozen=True)
class DivergenceKind:
    """What a divergence is about: the rule id it names and the kind of event it happened at."""

    rule: str
    kind: str

    def slug(self) -> str:
        """File-name form: ``KVM.HOST-nested_exit``."""
        return f"{self.rule}-{self.kind}".replace("/", "_")

    def __str__(self) -> str:
        return f"{self.rule} at {self.kind}"

    @classmethod
    def of_divergence(cls, rr: RowResult) -> DivergenceKind:
        """The kind of a replay's (first) divergence."""
        return cls(rr.primary_rule or "unnamed", rr.event.kind if rr.event else SNAPSHOT_KIND)


@dataclass(frozen=True)
class Goal:
    """The divergence to keep: A against B, or A against the trace's own expectations (``against`` None)."""

    policy: Policy
    against: Policy | None = None
    profile: Profile | None = None
    keep_passing: tuple[Policy, ...] = ()  # (replay mode) policies that must still pass every candidate

    def first(self, draft: Draft, rows: RowCache | None = None) -> tuple[DivergenceKind, int] | None:
        """The first divergence's kind and row index, or None if the trace shows none."""
        profile = self.profile or get_profile("strict")
        trace: Any = draft.as_trace() if rows is None else rows.trace(draft)
        if self.against is not None:  # each replay ends at the first divergence: nothing after it counts here
            res = compare_rows(trace, self.policy, self.against, profile, stop_at_first=True)
            row = res.first
            if row is None:
                return None
            ev = row.a.event
            return DivergenceKind(row.rule or "unnamed", ev.kind if ev else SNAPSHOT_KIND), row.index
        rep = ReplayResult(str(trace.path), trace.name, self.policy.name, profile.name)
        replay_rows(trace.rows(with_notes=False), self.policy.build(trace.host()), profile, rep, stop_at_first=True)
        rr = rep.first
        return None if rr is None else (DivergenceKind.of_divergence(rr), rr.index)

    def passes(self, policy: Policy, draft: Draft, rows: RowCache | None = None) -> bool:
        """Whether ``policy`` replays ``draft`` without a divergence from its expectations."""
        profile = self.profile or get_profile("strict")
        trace: Any = draft.as_trace() if rows is None else rows.trace(draft)
        rep = ReplayResult(str(trace.path), trace.name, policy.name, profile.name)
        replay_rows(trace.rows(with_notes=False), policy.build(trace.host()), profile, rep, stop_at_first=True)
        return rep.first is None

    def describe(self) -> str:
        if self.against is not None:
            return f"{self.policy.name} vs {self.against.name}"
        return f"{self.policy.name} vs the trace's expectations"


@dataclass
class ShrinkResult:
    """The smallest trace found, the divergence it keeps, and what it cost."""

    draft: Draft
    kind: DivergenceKind
    index: int
    original_events: int
    tried: int
    accepted: int
    capped: bool
    passes: list[ShrinkPass] = field(default_factory=list)
    trigger: dict[str, Any] = field(default_factory=dict)  # the row content of the first divergence kept


@dataclass
class ShrinkPass:
    """One pass of the shrinker and what it achieved (Hypothesis keeps the same per-pass statistics)."""

    name: str
    candidates: Callable[[Draft], Iterator[Draft]] = field(repr=False)
    calls: int = 0  # candidates tried (not seen before)
    shrinks: int = 0  # candidates accepted
    deletions: int = 0  # rows removed by the accepted ones

    def describe(self) -> str:
        return f"{self.name}: {self.calls} tried, {self.shrinks} accepted, {self.deletions} rows deleted"


class RowCache:
    """Per row dict (drafts share them): its parsed TraceRow, and the drafts' fingerprints for the history.

    Candidates differ from the current trace in a few rows, so parsing and fingerprinting every row
    of every candidate would dominate shrinking; each row is done once.
    """

    def __init__(self) -> None:
        self.by_id: dict[int, tuple[dict[str, Any], TraceRow]] = {}
        self.alive: list[list[dict[str, Any]]] = []

    def entry(self, row: dict[str, Any]) -> tuple[dict[str, Any], TraceRow]:
        got = self.by_id.get(id(row))
        if got is None or got[0] is not row:
            got = self.by_id[id(row)] = (row, trace_row(0, row))
        return got

    def fingerprint(self, draft: Draft) -> tuple[int, ...]:
        """The draft's row objects: equal for drafts made of the same rows.

        Rows are values shared between drafts and this cache keeps every row it has seen alive, so
        an id is never reused.  A row rebuilt with equal content gets a new id, so such a candidate
        may be tried twice; that costs a replay, never a wrong answer (and the candidate cap holds).
        """
        self.alive.append(draft.rows)  # (so that no id is reused while the history lives)
        return tuple(map(id, draft.rows))

    def trace(self, draft: Draft) -> ParsedTrace:
        """``draft.as_trace()``, from the parsed rows (the model never reads an Event's seq)."""
        return ParsedTrace(Path("<memory>"), dict(draft.meta), draft.rows, [self.entry(r)[1] for r in draft.rows])


@dataclass
class ParsedTrace(MemoryTrace):
    """A draft as a trace whose rows were parsed once (by :class:`RowCache`); indices and seq are positions."""

    parsed: list[TraceRow] = field(default_factory=list, repr=False)

    def rows(self, with_notes: bool = True) -> Iterator[TraceRow]:
        for i, t in enumerate(self.parsed):
            yield TraceRow(i, i, t.event, t.snapshot, t.expect, t.note)


class Shrinker:
    """Greedy, pass-ordered shrinking with a history of every candidate tried."""

    def __init__(self, goal: Goal, max_candidates: int = DEFAULT_MAX_CANDIDATES) -> None:
        self.goal = goal
        self.max_candidates = max_candidates
        self.rows = RowCache()
        self.seen: set[object] = set()
        self.tried = 0
        self.accepted = 0
        self.current: Draft | None = None
        # Replay mode: pickled machines before rows of the current draft, every CHECKPOINT_ROWS rows up to
        # its first divergence; a candidate sharing the current draft's first rows resumes from one.
        self.checkpoints: list[tuple[int, bytes]] = []
        self.safe = 0  # the current draft's first divergence: no row before it diverges
        self.last: tuple[tuple[DivergenceKind, int] | None, list[tuple[int, bytes]]] = (None, [])

    def first(self, draft: Draft) -> tuple[DivergenceKind, int] | None:
        """The goal's first divergence in ``draft``; in replay mode, resumed from a checkpoint where possible."""
        if self.goal.against is not None:
            return self.goal.first(draft, self.rows)
        start, blob = 0, None
        cur = self.current
        if cur is not None and self.checkpoints:
            limit = min(len(draft.rows), len(cur.rows), self.safe)
            shared = next((j for j, (a, b) in enumerate(zip(draft.rows[:limit], cur.rows[:limit], strict=True))
                           if a is not b), limit)
            for pos, data in reversed(self.checkpoints):
                if pos <= shared:
                    start, blob = pos, data
                    break
        machine = pickle.loads(blob) if blob is not None else self.goal.policy.build(draft.host())
        parsed = [self.rows.entry(r)[1] for r in draft.rows]
        checkpoints = [c for c in self.checkpoints if c[0] <= start] if blob is not None else []

        def rows() -> Iterator[TraceRow]:
            for i in range(start, len(parsed)):
                if i % CHECKPOINT_ROWS == 0 and i > start:
                    checkpoints.append((i, pickle.dumps(machine)))  # the machine before row i
                t = parsed[i]
                yield TraceRow(i, i, t.event, t.snapshot, t.expect, t.note)

        profile = self.goal.profile or get_profile("strict")
        rep = ReplayResult("<memory>", draft.meta.get("name", ""), self.goal.policy.name, profile.name)
        replay_rows(rows(), machine, profile, rep, stop_at_first=True)
        rr = rep.first
        found = None if rr is None else (DivergenceKind.of_divergence(rr), rr.index)
        self.last = (found, checkpoints)
        return found

    def adopt(self, draft: Draft) -> None:
        """Make ``draft`` (just checked by :meth:`first`) the current trace, with its checkpoints."""
        self.current = draft
        found, self.checkpoints = self.last
        self.safe = found[1] if found is not None else 0

    def shrink(self, draft: Draft) -> ShrinkResult:
        found = self.first(draft)
        if found is None:
            raise ValueError(f"the trace shows no divergence ({self.goal.describe()}): nothing to shrink")
        self.kind = found[0]
        self.trigger = trigger_of(draft.rows[found[1]])
        self.cause = cause_of(draft, found[1], self.goal, self.kind)  # (a snapshot's: kept too)
        self.live_snapshots = snapshots_live(draft)  # (kept only if the original has it)
        self.adopt(draft)
        self.seen.add(self.rows.fingerprint(draft))
        # Nothing after the first divergence can change it: cut there first (one candidate, checked).
        cut = draft.with_rows(draft.rows[:max(found[1] + 1, draft.setup_rows)])
        if len(cut.rows) < len(draft.rows):
            self.seen.add(self.rows.fingerprint(cut))
            self.tried += 1
            advance_progress(1, unit="candidates")
            if self.holds(cut):
                self.adopt(cut)
                self.accepted += 1
        self.passes = [ShrinkPass(name, fn) for name, fn in PASSES]
        progress = True
        while progress and not self.capped:
            progress = False
            for p in self.passes:
                while self.run_pass(p):
                    progress = True
        result = self.current
        assert result is not None
        if self.goal.against is not None:
            # the expectations a minimal A-vs-B trace states are B's, so it replays clean under B
            refilled = refill_expectations(result, self.goal.against)
            if self.holds(refilled):
                result = refilled
        final = self.goal.first(result)  # the final re-check, from scratch
        if final is None or final[0] != self.kind or trigger_of(result.rows[final[1]]) != self.trigger:
            result, final = draft, found
        assert final is not None
        return ShrinkResult(result, self.kind, final[1], draft.events, self.tried, self.accepted, self.capped,
                            self.passes, dict(result.rows[final[1]]))

    @property
    def capped(self) -> bool:
        return self.tried >= self.max_candidates

    def valid(self, cand: Draft) -> bool:
        """Checks that need no replay: every snapshot is of a vCPU an earlier event created."""
        return not self.live_snapshots or snapshots_live(cand)

    def holds(self, cand: Draft) -> bool:
        """The candidate keeps the first divergence (kind and trigger) and the passing policies still pass."""
        found = self.first(cand)
        if found is None or found[0] != self.kind or trigger_of(cand.rows[found[1]]) != self.trigger:
            return False
        if self.cause is not None and self.cause not in {trigger_of(r) for r in cand.rows[:found[1]]}:
            return False
        return all(self.goal.passes(p, cand, self.rows) for p in self.goal.keep_passing)

    def run_pass(self, p: ShrinkPass) -> bool:
        """Try the pass's candidates on the current trace; True (and adopt it) at the first that keeps the divergence."""
        assert self.current is not None
        for cand in p.candidates(self.current):
            fp = self.rows.fingerprint(cand)
            if fp in self.seen:
                continue
            if self.capped:
                return False
            self.seen.add(fp)
            if not self.valid(cand):
                continue
            self.tried += 1
            advance_progress(1, unit="candidates")
            p.calls += 1
            if self.holds(cand):
                p.shrinks += 1
                p.deletions += len(self.current.rows) - len(cand.rows)
                self.adopt(cand)
                self.accepted += 1
                return True
        return False


def trigger_of(row: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """What identifies the event a divergence is at, wherever shrinking moves it: its kind, vCPU, level and
    fields (a snapshot: its path and expected value), not its seq or expectations."""
    snap = row["kind"] == SNAPSHOT_KIND
    out = []
    for k, v in row.items():
        if v is None or k in ("seq", "note") or (k.startswith("exp_") and not snap):
            continue
        out.append((k, v))
    return tuple(sorted(out))


def cause_of(draft: Draft, index: int, goal: Goal, kind: DivergenceKind) -> tuple[tuple[str, Any], ...] | None:
    """For a snapshot row at ``index`` (a snapshot only observes): the event that triggers its divergence, the
    last one before it without which the divergence (``kind`` at that snapshot) does not happen; looked for
    among the ``CAUSE_SEARCH`` events before it.  None for an event row, or if no single event is needed."""
    row = draft.rows[index]
    if row["kind"] != SNAPSHOT_KIND:
        return None
    trigger = trigger_of(row)
    for j in range(index - 1, max(draft.setup_rows, index - CAUSE_SEARCH) - 1, -1):
        if draft.rows[j]["kind"] == SNAPSHOT_KIND:
            continue
        cand = draft.with_rows(draft.rows[:j] + draft.rows[j + 1:index + 1])
        found = goal.first(cand)
        if found is None or found[0] != kind or trigger_of(cand.rows[found[1]]) != trigger:
            return trigger_of(draft.rows[j])
    return None


def snapshots_live(d: Draft) -> bool:
    """Whether every snapshot of a vCPU's state comes after an event of that vCPU (which creates it)."""
    seen: set[int] = set()
    for r in d.rows:
        if r["kind"] == SNAPSHOT_KIND:
            m = _VCPU_PATH.match(r.get("path") or "")
            if m is not None and int(m.group(1)) not in seen:
                return False
        else:
            seen.add(r.get("vcpu", 0))
    return True


def passing_policies(draft: Draft, goal: Goal) -> tuple[Policy, ...]:
    """The policies of the trace's ``policy`` metadata, other than the goal's, that pass it: kept passing."""
    from reference_model.policies import get_policy

    out = []
    for name in (p.strip() for p in draft.meta.get("policy", "").split(",")):
        if not name or name in (goal.policy.name, goal.against.name if goal.against else None):
            continue
        try:
            pol = get_policy(name)
        except KeyError:
            continue
        if goal.passes(pol, draft):
            out.append(pol)
    return tuple(out)


def shrink(draft: Draft, goal: Goal, max_candidates: int = DEFAULT_MAX_CANDIDATES) -> ShrinkResult:
    """Shrink ``draft`` while ``goal``'s first divergence keeps its rule id and event kind."""
    return Shrinker(goal, max_candidates).shrink(draft)


# --------------------------------------------------------------------------- passes
def drop_chunks(d: Draft, smallest: int = 1) -> Iterator[Draft]:
    """Remove runs of rows after the prologue, half the body first, then smaller runs down to ``smallest`` rows."""
    start, n = d.setup_rows, len(d.rows)
    size = max(1, (n - start) // 2)
    if size < smallest:
        return
    while True:
        for i in range(start, n, size):
            yield d.with_rows(d.rows[:i] + d.rows[i + size:])
        if size <= smallest:
            return
        size = max(smallest, size // 2)


def drop_blocks(d: Draft) -> Iterator[Draft]:
    """Remove runs of two rows or more (halves first)."""
    return drop_chunks(d, smallest=2)


def drop_events(d: Draft) -> Iterator[Draft]:
    """Remove one row."""
    start = d.setup_rows
    for i in range(start, len(d.rows)):
        yield d.with_rows(d.rows[:i] + d.rows[i + 1:])


def _body_vcpus(d: Draft) -> list[int]:
    setup = {r.get("vcpu", 0) for r in d.rows[:d.setup_rows]}
    return sorted({r.get("vcpu", 0) for r in d.rows[d.setup_rows:]} - setup)


def drop_vcpus(d: Draft) -> Iterator[Draft]:
    """Remove every row of one vCPU (not one the prologue sets up), then renumber vCPUs densely."""
    for v in _body_vcpus(d):
        keep = d.rows[:d.setup_rows] + [r for r in d.rows[d.setup_rows:] if r.get("vcpu", 0) != v]
        yield d.with_rows(keep)
    used = sorted({r.get("vcpu", 0) for r in d.rows})
    mapping = {old: new for new, old in enumerate(used)}
    if any(old != new for old, new in mapping.items()) and all(
            mapping[r.get("vcpu", 0)] == r.get("vcpu", 0) for r in d.rows[:d.setup_rows]):
        yield d.with_rows([_renumber(r, mapping) for r in d.rows])


def _renumber(row: dict[str, Any], mapping: dict[int, int]) -> dict[str, Any]:
    out = dict(row)
    out["vcpu"] = mapping.get(row.get("vcpu", 0), row.get("vcpu", 0))
    if row.get("src_vcpu") is not None:
        out["src_vcpu"] = mapping.get(row["src_vcpu"], row["src_vcpu"])
    path = row.get("path")
    if isinstance(path, str) and path.startswith("vcpu"):
        head, _, rest = path.partition(".")
        if head[4:].isdigit():
            out["path"] = f"vcpu{mapping.get(int(head[4:]), int(head[4:]))}.{rest}"
    return out


def drop_levels(d: Draft) -> Iterator[Draft]:
    """Remove L2's events, then everything nested (VMX instructions, nested state)."""
    head, body = d.rows[:d.setup_rows], d.rows[d.setup_rows:]
    yield d.with_rows(head + [r for r in body if r.get("level") != "l2"])
    yield d.with_rows(head + [r for r in body if r.get("level") != "l2" and r["kind"] not in NESTED_KINDS])


def _simpler(value: Any) -> list[Any]:
    """Simpler forms of a value: False for a flag, 0 and each single set bit for a number."""
    if isinstance(value, bool):
        return [False] if value else []
    if isinstance(value, int):
        if value == 0:
            return []
        out = [0]
        if value & (value - 1):
            out += [1 << b for b in range(value.bit_length()) if value >> b & 1]
        return out
    if isinstance(value, tuple):
        return [(*value[:i], s, *value[i + 1:]) for i, x in enumerate(value) for s in _simpler(x)]
    return []


def simplify_values(d: Draft) -> Iterator[Draft]:
    """One field of one row (after the prologue) replaced by 0 or by one of its set bits."""
    for i in range(d.setup_rows, len(d.rows)):
        row = d.rows[i]
        if row["kind"] == SNAPSHOT_KIND:
            continue
        for name in SIMPLIFIABLE:
            v = row.get(name)
            if v is None:
                continue
            for s in _simpler(v):
                yield d.with_rows([*d.rows[:i], {**row, name: s}, *d.rows[i + 1:]])


def _target(row: dict[str, Any]) -> tuple[Any, ...]:
    """What a write writes: later writes of the same target make it redundant."""
    key: tuple[Any, ...] = (row.get("vcpu", 0), row.get("level"), row["kind"])
    if row["kind"] in ("wrmsr", "set_msr_bitmap"):
        key += (row.get("msr"),)
    elif row["kind"] == "vmwrite":
        key += (row.get("field"),)
    elif row["kind"] in ("set_msrs", "map"):
        key += (row.get("msrs"), row.get("addr"))
    return key


def drop_redundant_writes(d: Draft) -> Iterator[Draft]:
    """Drop a write that a later write of the same target overwrites, or an exact repeat of the row before."""
    rows = d.rows
    for i in range(d.setup_rows, len(rows)):
        r = rows[i]
        if r["kind"] not in WRITE_KINDS:
            continue
        t = _target(r)
        later = any(_target(x) == t for x in rows[i + 1:] if x["kind"] == r["kind"])
        repeat = i > d.setup_rows and _same_event(rows[i - 1], r)
        if later or repeat:
            yield d.with_rows(rows[:i] + rows[i + 1:])


def _same_event(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def strip(r: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in r.items() if k != "seq" and not k.startswith("exp_") and v is not None}

    return strip(a) == strip(b)


# In Hypothesis's order: delete blocks, then single events, then simplify values.
PASSES: tuple[tuple[str, Callable[[Draft], Iterator[Draft]]], ...] = (
    ("delete blocks", drop_blocks),
    ("delete vCPUs", drop_vcpus),
    ("delete nesting levels", drop_levels),
    ("delete single events", drop_events),
    ("delete redundant writes", drop_redundant_writes),
    ("simplify values", simplify_values),
)


# --------------------------------------------------------------------------- command line
