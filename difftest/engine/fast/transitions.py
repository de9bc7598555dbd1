"""Memoised model steps: (machine state, event) -> (outcome, next state, side effects).

Recorded and generated traces repeat themselves: a kernel flips PKRS between a few values, and the
same MSR, CR and VMX sequence runs on every context switch.  Stepping the model once per repetition
is most of a replay's time, so the fast path steps an event through the model once per distinct
machine state, keeps what happened as a transition, and applies the transition, without the model,
the next time the same event arrives in the same state.

Why the answers stay exact:

* A state is the machine's pickle: every attribute of every object, sharing included.  Three things
  are left out and kept live instead: the cost counters (a transition carries their increments), the
  TLB sets (a transition carries the fills, flushes and INVLPGs it did, in order; they are replayed
  on the live sets at the row's clock, which is what :class:`~difftest.engine.fast.tlb_log.TlbLog` needs), and
  the host and knobs, which never change.  Equal pickles are equal states, so an equal (state, event) has the same
  outcome, next state and side effects.  Equal states may pickle differently (set order); that only
  costs a miss.
* An event that reads a TLB (``map``; a MOV to CR4 that toggles PKS or PKE, ``Cpu.set_cr4``) depends
  on something the state leaves out: the caller settles the TLBs and adds their contents to its key
  (:meth:`TransitionCache.tlb_contents`), or passes ``reads_tlb`` and it is never remembered.  An
  event that creates a vCPU is never remembered either (the set of live TLBs changes), so every
  state reached by transitions has the live machine's vCPUs.
* The machine object is brought to the current state (unpickled, with the live TLBs and counters put
  back) only when something needs it: a miss, a snapshot row, the access state of a new state.

A miss costs a pickle (about 0.1 ms) on top of the step, so memoising pays only on long, repetitive
traces: it starts after the first window of steps, or sooner once those steps have repeated their
events (a state can only recur on a repeated event: at most one distinct event per ``EARLY_REPEATS``
steps, after ``EARLY_STEPS``), is switched off for a while when more than half of a window's steps
miss (for twice as long after each failed retry), and the table is bounded; when full it starts
afresh.
"""

from __future__ import annotations

import io
import pickle
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import fields as dataclass_fields
from operator import attrgetter
from typing import Any

from reference_model.cpu import Cpu
from reference_model.events import Event, Outcome
from reference_model.host import HostCpu
from reference_model.hw import HwMachine
from reference_model.kvm import KvmMachine
from reference_model.kvm_knobs import KvmKnobs
from reference_model.machine import Machine
from reference_model.pkvm import PkvmMachine

from .tlb_log import TlbLog

# The event's inputs: every field but seq (the model never reads it).
event_key: Callable[[Event], tuple[Any, ...]] = attrgetter(
    *(f.name for f in dataclass_fields(Event) if f.name != "seq"))

WINDOW = 4096  # steps per hit-rate window; memoising starts after the first (short traces never pay for it)
MAX_MISS_RATE = 1 / 2  # more misses than this in a window: stop memoising ...
RETRY_AFTER = 16  # ... for this many windows, doubled after each failed retry ...
MAX_RETRY_AFTER = 1024  # ... up to this
MAX_STATES = 16_384  # about 5 KB each
EARLY_STEPS = 256  # the first window may end after this many steps ...
EARLY_REPEATS = 8  # ... if they had at most one distinct event per this many steps

TlbPath = tuple[int, str]  # (vCPU, "l1" or "l2")
TlbOps = tuple[tuple[str, int | None], ...]  # ("clear", None), ("discard", base), ("add", base) in order
KEY_BITS = 32  # a transition's table key is (state << KEY_BITS) | event key id


class EventKeys:
    """Small integer ids for event keys, shared by the lanes of one run (a dict of ints is cheaper to probe)."""

    def __init__(self) -> None:
        self.ids: dict[tuple[Any, ...], int] = {}
        self.keys: list[tuple[Any, ...]] = []
        self._events: list[Event | None] = []

    def events(self, kids: list[int]) -> list[Event]:
        """One Event per id of ``kids``, built once per distinct key and shared: the model never writes to
        an event nor reads its ``seq`` (the key leaves it out, and so does the Event built here)."""
        cache = self._events
        if len(cache) < len(self.keys):
            cache.extend([None] * (len(self.keys) - len(cache)))
        for k in set(kids):
            if cache[k] is None:
                key = self.keys[k]
                cache[k] = Event(key[0], key[1], key[2], 0, *key[3:])
        return list(map(cache.__getitem__, kids))  # type: ignore[arg-type]

    def intern(self, key: tuple[Any, ...]) -> int:
        kid = self.ids.get(key)
        if kid is None:
            kid = self.ids[key] = len(self.keys)
            if kid >= 1 << KEY_BITS:
                raise OverflowError("too many distinct events for one replay")
            self.keys.append(key)
        return kid


class LiveCounters(Counter):  # type: ignore[type-arg]
    """The machine's cost counters, marked so that a state's pickle refers to them instead of holding them."""


_CONSTANTS: dict[int, object] = {}  # id -> immutable object (host, knobs) referred to by pickles
_loading: list[TransitionCache] = []  # the cache an unpickle links the live TLBs and counters of


def _constant(key: int) -> object:
    return _CONSTANTS[key]


def _live_tlb(path: TlbPath) -> TlbLog:
    return _loading[-1].tlbs[path]


def _live_counters() -> LiveCounters:
    return _loading[-1].counters


def _reduce_constant(obj: object) -> tuple[Callable[[int], object], tuple[int]]:
    _CONSTANTS.setdefault(id(obj), obj)
    return _constant, (id(obj),)


def _reduce_tlb(tlb: TlbLog) -> tuple[Callable[[TlbPath], TlbLog], tuple[TlbPath]]:
    if tlb.path is None:
        raise pickle.PicklingError("a TLB the transition cache has not adopted")
    return _live_tlb, (tlb.path,)


def _reduce_counters(_: LiveCounters) -> tuple[Callable[[], LiveCounters], tuple[()]]:
    return _live_counters, ()


_DISPATCH = {HostCpu: _reduce_constant, KvmKnobs: _reduce_constant, TlbLog: _reduce_tlb,
             LiveCounters: _reduce_counters}


def machine_cpus(machine: Machine) -> Iterator[tuple[TlbPath, Cpu]]:
    """Every CPU of the machine's vCPUs by (vCPU, level), as the model lists them (:meth:`Machine.cpus`)."""
    return machine.cpus() if supports(machine) else iter(())


def supports(machine: Machine) -> bool:
    """Machines whose CPUs this module can find (the ones the fast path knows)."""
    return type(machine) in (KvmMachine, PkvmMachine, HwMachine)


class TransitionCache:
    """One machine, stepped through memoised transitions (see the module docstring)."""

    def __init__(self, machine: Machine, clock: list[int], logs: list[TlbLog], keys: EventKeys) -> None:
        self._machine = machine
        self.keys = keys
        self.clock = clock
        self.logs = logs  # the lane's list of TLB logs (cleared per batch)
        self.tlbs: dict[TlbPath, TlbLog] = {}
        self.counters = LiveCounters(machine.counters)
        machine.counters = self.counters
        self.supported = supports(machine)
        self.window = WINDOW
        self.enabled = False
        self.hits = self.misses = 0
        self.window_hits = self.window_misses = 0
        self.off_windows = 1 if self.supported else 0  # windows left before memoising is tried (again)
        self.off_steps = 0
        self.retry_after = RETRY_AFTER
        self.proven = False  # a window since memoising last started had hits enough (see failing)
        self.first_events: set[tuple[Any, ...]] | None = set() if self.supported else None  # distinct, until first on
        self.epoch = 0
        self.before_reset: Callable[[], None] | None = None  # the owner's last use of this epoch's state ids
        self._adopt(machine)
        self._reset_tables()

    # -- states ----------------------------------------------------------------------------
    def _reset_tables(self) -> None:
        """Forget every state and transition (a new epoch); intern the machine's state if memoising."""
        if self.enabled and self.before_reset is not None:
            self.before_reset()
        self.epoch += 1  # state ids are per epoch
        self.ids: dict[bytes, int] = {}
        self.snapshots: list[bytes] = []
        # transitions: (state << KEY_BITS | key id) -> transition id, indexing the parallel lists below
        self.trans: dict[int, int] = {}
        self.t_out: list[Outcome] = []
        self.t_next: list[int] = []
        self.t_incs: list[tuple[tuple[str, int], ...]] = []
        self.t_tlb: list[tuple[tuple[TlbPath, TlbOps], ...]] = []
        self.per_state: dict[tuple[Any, ...], Any] = {}  # answers about a state (access states, observe)
        self.state = self.live_state = self._intern() if self.enabled else -1

    def _pickle(self) -> bytes:
        f = io.BytesIO()
        p = pickle.Pickler(f, protocol=5)
        p.dispatch_table = _DISPATCH  # type: ignore[assignment]
        p.dump(self._machine)
        return f.getvalue()

    def _intern(self) -> int:
        data = self._pickle()
        sid = self.ids.get(data)
        if sid is None:
            sid = self.ids[data] = len(self.snapshots)
            self.snapshots.append(data)
        return sid

    def _adopt(self, machine: Machine) -> None:
        """Give every CPU a live, logged TLB of its own path."""
        for path, cpu in machine_cpus(machine):
            tlb = self.tlbs.get(path)
            if tlb is None:
                tlb = cpu.tlb if type(cpu.tlb) is TlbLog else TlbLog(cpu.tlb, self.clock)
                tlb.path = path
                self.tlbs[path] = tlb
                self.logs.append(tlb)
            elif cpu.tlb is not tlb:  # (cannot happen: vCPUs are only created by stepped events)
                raise AssertionError(f"a second CPU at {path}")
            cpu.tlb = tlb

    def live(self) -> Machine:
        """The machine, brought to the current state."""
        if self.enabled and self.live_state != self.state:
            _loading.append(self)
            try:
                self._machine = pickle.loads(self.snapshots[self.state])
            finally:
                _loading.pop()
            self.live_state = self.state
        return self._machine

    # -- steps -----------------------------------------------------------------------------
    def lookup(self, key: tuple[Any, ...]) -> Outcome | None:
        """Apply the transition of ``key`` from the current state, if known (the clock is the row)."""
        if not self.enabled:
            return None
        kid = self.keys.ids.get(key)
        t = None if kid is None else self.trans.get((self.state << KEY_BITS) | kid)
        if t is None:
            return None
        self.apply_effects(t)
        self.state = self.t_next[t]
        out = self.t_out[t]
        self.window_hits += 1
        if self.window_hits + self.window_misses >= self.window:
            self.window_done()
        return out

    def apply_effects(self, t: int) -> None:
        """The counter increments and TLB changes of transition ``t`` (the TLB's at the clock's row)."""
        incs = self.t_incs[t]
        if incs:
            counters = self.counters
            for name, n in incs:
                counters[name] += n
        self.replay_tlb(t)

    def replay_tlb(self, t: int) -> None:
        """The TLB changes of transition ``t``, on the live TLBs at the clock's row."""
        for path, ops in self.t_tlb[t]:
            self.tlbs[path].replay(ops)

    def add_counts(self, counts: Iterable[tuple[int, int]]) -> None:
        """Counter increments of transitions given as (transition id, times applied)."""
        counters = self.counters
        t_incs = self.t_incs
        for t, c in counts:
            for name, n in t_incs[t]:
                counters[name] += n * c

    def step(self, ev: Event, key: tuple[Any, ...], reads_tlb: bool) -> Outcome:
        """Step ``ev`` through the model; remember the transition unless it must not be."""
        m = self.live()
        if not self.enabled:
            out = m.step(ev)
            self._adopt(m)
            if self.off_windows:
                self.off_steps += 1
                if self.first_events is not None and self._repeats_early(key):
                    self.off_windows = 1
                    self.off_steps = self.window
                if self.off_steps >= self.window:
                    self.off_steps = 0
                    self.off_windows -= 1
                    if not self.off_windows:  # try again, from the state the machine is in now
                        self.first_events = None
                        self.enabled = True
                        self.proven = False
                        self._reset_tables()
            return out
        before = self.state
        n_tlbs = len(self.tlbs)
        tlbs = list(self.tlbs.values())
        for tlb in tlbs:
            tlb.ops = []
        incs: Counter[str] = LiveCounters()
        m.counters = incs
        try:
            out = m.step(ev)
        finally:
            m.counters = self.counters
            self.counters.update(incs)
            tlb_ops = tuple((tlb.path, tuple(tlb.ops)) for tlb in tlbs if tlb.ops and tlb.path is not None)
            for tlb in tlbs:
                tlb.ops = None
        self._adopt(m)
        if len(self.snapshots) >= MAX_STATES:
            self._reset_tables()
            return out
        self.state = self.live_state = self._intern()
        self.misses += 1
        self.window_misses += 1
        if not reads_tlb and len(self.tlbs) == n_tlbs:
            self.trans[(before << KEY_BITS) | self.keys.intern(key)] = len(self.t_out)
            self.t_out.append(out)
            self.t_next.append(self.state)
            self.t_incs.append(tuple(incs.items()))
            self.t_tlb.append(tlb_ops)
        if self.window_hits + self.window_misses >= self.window:
            self.window_done()
        return out

    def suspend(self) -> Machine:
        """The live machine, for the caller to step itself until :meth:`resume` (nothing is remembered)."""
        m = self.live()
        self._suspended = (self.enabled, self.off_windows)
        self.enabled = False
        self.off_windows = 0
        return m

    def resume(self, steps: int) -> None:
        """After :meth:`suspend`: the caller stepped the machine ``steps`` times."""
        self.enabled, self.off_windows = self._suspended
        self.stepped_outside(steps)

    def stepped_outside(self, steps: int) -> None:
        """The caller stepped the live machine ``steps`` times itself (a stretch that does not repeat).

        New vCPUs get logged TLBs; memoising on, the state is interned afresh; off, the steps count
        towards its next try, as steps through :meth:`step` would.
        """
        self._adopt(self._machine)
        if self.enabled:
            self.state = self.live_state = self._intern()
            return
        if not self.off_windows:
            return
        self.off_steps += steps
        while self.off_windows and self.off_steps >= self.window:
            self.off_steps -= self.window
            self.off_windows -= 1
        if not self.off_windows:
            self.off_steps = 0
            self.first_events = None
            self.enabled = True
            self.proven = False
            self._reset_tables()

    def _repeats_early(self, key: tuple[Any, ...]) -> bool:
        """Before memoising first starts: have the steps so far repeated their events enough to start now?"""
        seen = self.first_events
        assert seen is not None
        seen.add(key)
        return self.off_steps >= EARLY_STEPS and len(seen) * EARLY_REPEATS <= self.off_steps

    def window_done(self) -> None:
        """Close a window of steps: stop memoising if it missed too often."""
        self.hits += self.window_hits
        if self.window_misses > MAX_MISS_RATE * (self.window_hits + self.window_misses):
            if self.before_reset is not None:
                self.before_reset()
            self.live()
            self.enabled = False
            self.off_windows = self.retry_after
            self.retry_after = min(2 * self.retry_after, MAX_RETRY_AFTER)
            self.off_steps = 0
            self._reset_tables()
        else:
            self.retry_after = RETRY_AFTER
            self.proven = True
        self.window_hits = self.window_misses = 0

    def failing(self, after: int) -> bool:
        """Whether a try that has not yet proven itself missed more than its share of ``after`` or more steps.

        A miss costs a pickle: a caller that can tell early that a stretch's states do not recur
        closes the window here (:meth:`window_done` then switches memoising off) instead of at its end.
        """
        seen = self.window_hits + self.window_misses
        return self.enabled and not self.proven and seen >= after and self.window_misses > MAX_MISS_RATE * seen

    def cached_at(self, state: int, what: str, arg: Any, compute: Callable[[Machine], Any]) -> Any:
        """:meth:`cached` for another state of this epoch (a run of transitions looks back at its states)."""
        got = self.per_state.get((state, what, arg), self)
        if got is not self:
            return got
        now = self.state
        self.state = state
        try:
            return self.cached(what, arg, compute)
        finally:
            self.state = now

    def tlb_contents(self) -> tuple[frozenset[int], ...]:
        """Every live TLB's pages, in a fixed order: part of the key of an event that reads a TLB."""
        return tuple(frozenset(t) for t in self.tlbs.values())

    def cached(self, what: str, arg: Any, compute: Callable[[Machine], Any]) -> Any:
        """``compute(machine)`` for the current state, remembered per state (``what``, ``arg`` name it)."""
        if not self.enabled:
            return compute(self._machine)
        k = (self.state, what, arg)
        got = self.per_state.get(k, self)
        if got is self:
            got = self.per_state[k] = compute(self.live())
        return got
