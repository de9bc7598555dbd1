"""``difftest record kvm``: perform scenarios (or a trace's events) on /dev/kvm and write what happened.

Every step's real outcome becomes its row's expectation; host facts go into the metadata; the
kvm tracepoint lines of this process (a private tracefs instance) are summarised in each row's
note and written whole beside the trace as ``OUT.ftrace.txt`` (importable with ``difftest
import ftrace``).  All scenarios of one run share one VM, each on its own vCPU, and set every
piece of VM-wide state they rely on, so the file replays as one trace.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from difftest.errors import InputError
from difftest.trace.io import open_trace, write_text_atomic, write_trace
from difftest.trace.schema import SNAPSHOT_KIND
from reference_model.events import Event
from reference_model.policies import POLICIES

from . import host_facts
from .executor import Observation, RealVcpuExecutor
from .guest_asm import assembler_missing
from .scenarios import SCENARIOS, Scenario
from .tracefs import TraceInstance, signals_raise, tracefs_unusable
from .vm import Kvm, kvm_usable

NOTE_EVENTS = ("kvm_msr", "kvm_inj_exception", "kvm_cpuid", "kvm_cr", "kvm_exit", "kvm_nested_vmexit_inject")


@dataclass
class Recording:
    rows: list[dict[str, Any]] = field(default_factory=list)
    trace_lines: list[str] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    vm_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def add(self, ev: Event, obs: Observation, extra: Iterable[str] = ()) -> None:
        row: dict[str, Any] = {"seq": len(self.rows), "kind": ev.kind, "vcpu": ev.vcpu, "level": ev.level}
        for name, v in ev.inputs().items():
            if name not in ("vcpu", "level"):
                row[name] = v
        row.update(obs.expectation())
        notes = [*obs.notes, *extra]
        if notes:
            row["note"] = "; ".join(notes)
        self.rows.append(row)
        self.step_seconds.append(obs.seconds)

    def timing(self) -> str:
        if not self.step_seconds:
            return "no steps"
        med = statistics.median(self.step_seconds) * 1e6
        return (f"{len(self.step_seconds)} steps, median {med:.0f} us/step, max {max(self.step_seconds) * 1e6:.0f} us; "
                f"VM create+setup {self.vm_seconds * 1e3:.2f} ms")


def _summarise(lines: list[str]) -> list[str]:
    """kvm tracepoint lines of one step, compact: the interesting events verbatim, the rest counted."""
    picked: list[str] = []
    other: Counter[str] = Counter()
    for line in lines:
        _head, sep, msg = line.partition(": ")
        if not sep or line.lstrip().startswith("#"):
            continue
        ev, _, body = msg.partition(": ")
        if ev in NOTE_EVENTS:
            picked.append(f"{ev}: {body.strip()}")
        elif ev != "tracing_mark_write":
            other[body.strip() if ev == "kvm_userspace_exit" else ev] += 1
    if other:
        picked.append(", ".join(f"{n}x {k}" for k, n in other.items()))
    return [f"trace: {' | '.join(picked)}"] if picked else []


class Session:
    """One VM, the tracefs instance, and the host facts, for the duration of a recording."""

    def __init__(self, trace: bool) -> None:
        self.want_trace = trace

    def __enter__(self) -> Session:
        self._stack: list[Any] = []
        try:
            self.kvm = Kvm()
            self._stack.append(self.kvm)
            self.facts = host_facts.collect(self.kvm)
            self.tracer: TraceInstance | None = None
            self.trace_note = ""
            why = tracefs_unusable() if self.want_trace else "tracing off (--no-trace)"
            if why is None:
                self.tracer = TraceInstance()
                self.tracer.__enter__()
                self._stack.append(self.tracer)
                self.trace_note = "kvm events enabled: " + ",".join(self.tracer.enabled)
            else:
                self.trace_note = f"no kvm tracepoints captured: {why}"
            t0 = time.perf_counter()
            self.executor = RealVcpuExecutor(self.kvm)
            self._stack.append(self.executor)
            self.vm_seconds = time.perf_counter() - t0
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        while self._stack:
            self._stack.pop().close()

    def step(self, ev: Event) -> tuple[Observation, list[str]]:
        obs = self.executor.step(ev)
        lines = self.tracer.drain() if self.tracer else []
        return obs, lines


def _check_host() -> None:
    for why in (kvm_usable(), assembler_missing()):
        if why:
            raise InputError("/dev/kvm", f"cannot record here: {why}")


def record_scenarios(scenarios: list[Scenario], *, trace: bool = True) -> tuple[Recording, dict[str, str]]:
    """Run ``scenarios`` (one vCPU each, one VM) and return the rows and metadata."""
    _check_host()
    rec = Recording()
    with signals_raise(), Session(trace) as s:
        rec.vm_seconds = s.vm_seconds
        _hold_for_tests()
        sup_ecx = s.facts.supported_7_0[2]
        for index, sc in enumerate(scenarios):
            s.executor.reply = sc.reply
            if s.tracer:
                s.tracer.marker(f"BEGIN {sc.name}")
            for n, ev in enumerate(sc.build(sup_ecx)):
                ev.vcpu = index
                obs, lines = s.step(ev)
                rec.trace_lines += lines
                rec.add(ev, obs, [f"scenario {sc.name}"] if n == 0 else [])
                rec.rows[-1]["note"] = "; ".join(filter(None, [rec.rows[-1].get("note"), *_summarise(lines)])) or None
            if s.tracer:
                s.tracer.marker(f"END {sc.name}")
                rec.trace_lines += s.tracer.drain()
        meta = _metadata(s, rec)
    names = [sc.name for sc in scenarios]
    # one scenario: its name; several: a name that says which (reports key runs by trace name)
    meta["name"] = "kvm-" + (names[0] if len(names) == 1 else f"scenarios-{len(names)}-{names[0]}")
    meta["description"] = ("Recorded on /dev/kvm: " + "; ".join(sc.description for sc in scenarios))[:4000]
    return rec, meta


def _hold_for_tests() -> None:
    """With PKSDT_RECORD_HOLD=SECONDS, wait while the VM and tracefs instance exist (the SIGINT test)."""
    hold = os.environ.get("PKSDT_RECORD_HOLD")
    if hold:
        print(f"recorder holding (pid {os.getpid()})", file=sys.stderr, flush=True)
        time.sleep(float(hold))


def _metadata(s: Session, rec: Recording) -> dict[str, str]:
    meta = {"producer": "recorded-kvm", **s.facts.metadata()}
    wanted = "upstream-pvm" if s.facts.backend == "kvm_pvm" else "upstream"
    if wanted in POLICIES:
        meta["policy"] = wanted
    if s.facts.backend == "kvm_pvm":
        meta["profile"] = "pvm"  # the backend's CPUID rewrite is masked, named and counted
    meta["source"] = "difftest record kvm: every expectation is what this host's KVM did"
    meta["notes"] = f"{s.trace_note}. Timing: {rec.timing()}."
    return meta


def record_trace(path: str) -> tuple[Recording, dict[str, str]]:
    """Execute the events of trace ``path`` on a real vCPU and fill in what really happened."""
    tf = open_trace(path)
    rows = list(tf.rows())
    _check_host()
    rec = Recording()
    dropped = Counter[str]()
    with signals_raise(), Session(True) as s:
        rec.vm_seconds = s.vm_seconds
        for row in rows:
            if row.event is not None:
                obs, lines = s.step(row.event)
                rec.trace_lines += lines
                rec.add(row.event, obs, _summarise(lines))
            elif row.snapshot is not None:
                value = _observe_snapshot(s.executor, row.snapshot.path)
                if value is None:
                    dropped[row.snapshot.path] += 1
                    continue
                rec.rows.append({"seq": len(rec.rows), "kind": SNAPSHOT_KIND, "vcpu": 0, "level": "host",
                                 "path": row.snapshot.path, "exp_value": value})
        meta = _metadata(s, rec)
    meta["name"] = f"kvm-{tf.name}"
    meta["description"] = f"{tf.path.name} performed on /dev/kvm. " + tf.meta.get("description", "")
    if dropped:
        meta["notes"] += " Snapshots not observable on a real vCPU, dropped: " + ", ".join(
            f"{p} x{n}" for p, n in dropped.items()) + "."
    return rec, meta


def _observe_snapshot(ex: RealVcpuExecutor, path: str) -> int | None:
    head, _, name = path.partition(".")
    if not head.startswith("vcpu") or not head[4:].isdigit():
        return None
    index = int(head[4:])
    if index not in ex.vm.vcpus:
        return None
    cpu = ex.vm.vcpus[index]
    if name in ("cr0", "cr3", "cr4", "efer"):
        return int(getattr(cpu.get_sregs(), name))
    if name == "pkrs":
        res, vals = cpu.get_msrs([0x6E1])
        return vals[0] if res.ok and res.ret == 1 else None
    return None


def write_recording(rec: Recording, meta: dict[str, str], out: str) -> Path:
    dest = write_trace(out, rec.rows, meta)
    if rec.trace_lines:
        write_text_atomic(str(dest) + ".ftrace.txt", "\n".join(rec.trace_lines) + "\n")
    return dest


def select(names: Iterable[str]) -> Iterator[Scenario]:
    for name in names:
        if name == "all":
            yield from SCENARIOS.values()
        elif name in SCENARIOS:
            yield SCENARIOS[name]
        else:
            raise InputError(name, f"unknown scenario; known: all, {', '.join(SCENARIOS)}")


