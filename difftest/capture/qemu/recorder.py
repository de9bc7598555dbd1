"""Record traces under QEMU TCG: compile, build, boot, decode QEMU's outcomes into a trace.

Each trace gets one boot, which starts at power-on exactly as the model assumes; all its events
share that boot (a RESET event reboots it in place).  If the guest stops early (an unexpected
fault, a timeout), the events it did not report are "not recorded", with the reason.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from difftest.capture.qemu.boot import DEFAULT_TIMEOUT, BootResult, boot, qemu_version
from difftest.capture.qemu.build import build_image
from difftest.capture.qemu.compiler import RowPlan, Unit, compile_unit
from difftest.capture.qemu.runtime import program_source
from difftest.trace.io import TraceRow
from reference_model.events import EVENT_KINDS
from reference_model.registers import PF_W

RESULT_OF_VECTOR = {13: "gp", 6: "ud", 14: "pf"}
# Guest instructions whose outcome carries a value (what the guest program can store and print).
VALUE_KINDS = frozenset(k.name for k in EVENT_KINDS.values() if k.reads_value and k.level == "l1" and not k.nested)
MEMORY_1G_MIB = 2112  # the 1 GiB frame sits at 1 GiB physical


@dataclass
class TraceInput:
    """A trace to record: its name, its rows and its metadata."""

    name: str
    rows: list[TraceRow]
    meta: dict[str, str]


@dataclass
class Recording:
    """One recorded trace: rows with QEMU's outcomes as expectations, metadata, what was skipped."""

    name: str
    rows: list[dict[str, Any]]
    meta: dict[str, str]
    not_recorded: list[tuple[int, str, str]]  # (seq, what, reason)
    recorded: int
    boot_seconds: float = 0.0


@dataclass
class _Probe:
    vector: int
    error: int
    cr2: int
    value: int


@dataclass
class _Output:
    probes: dict[int, _Probe] = field(default_factory=dict)
    phases: set[int] = field(default_factory=set)
    stop: str | None = None


_LINE = re.compile(r"^@([0-9a-f]+) ([0-9a-f]+) ([0-9a-f]+) ([0-9a-f]+) ([0-9a-f]+)$")


def parse_output(boot_result: BootResult) -> _Output:
    """The guest's debugcon lines as probe results, started phases and why it stopped."""
    out = _Output()
    done = False
    for line in boot_result.output.splitlines():
        m = _LINE.match(line)
        if m:
            n, vec, err, cr2, val = (int(g, 16) for g in m.groups())
            out.probes[n] = _Probe(vec, err, cr2, val)
        elif line.startswith("P") and line[1:].isalnum():
            out.phases.add(int(line[1:], 16))
        elif line.startswith("X "):
            out.stop = f"unexpected fault in the guest ({line}: vector error rip cr2)"
        elif line == "T":
            out.stop = "the guest rebooted without a RESET event (triple fault)"
        elif line == "D":
            done = True
    if not done and out.stop is None:
        out.stop = ("QEMU timed out" if boot_result.timed_out else f"QEMU exited with {boot_result.exit_code}") + \
            " before the guest finished"
    return out


def _program(unit: Unit) -> tuple[str, int]:
    src = program_source("\n".join(unit.code), "\n".join(unit.user), unit.phases, [unit.key] * len(unit.phases),
                         n_tables=unit.tables)
    return src, (MEMORY_1G_MIB if unit.uses_1g else 64)


def _row_dict(row: TraceRow) -> dict[str, Any]:
    """The row's event (or snapshot) columns, without the original expectations."""
    if row.snapshot is not None:
        return {"seq": row.seq, "kind": "snapshot", "vcpu": 0, "level": "host", "path": row.snapshot.path}
    ev = row.event
    assert ev is not None
    d: dict[str, Any] = {"seq": row.seq, "kind": ev.kind, **ev.inputs()}
    for k in ("msrs", "values"):
        if k in d:
            d[k] = list(d[k])
    if row.expect is not None and row.expect.rule:
        d["exp_rule"] = row.expect.rule
    if row.note:
        d["note"] = row.note
    return d


def _decode(unit: Unit, out: _Output, phase_base: int) -> tuple[list[dict[str, Any]], list[tuple[int, str, str]]]:
    rows: list[dict[str, Any]] = []
    skipped: list[tuple[int, str, str]] = []
    distrust: str | None = None

    def what(plan: RowPlan) -> str:
        r = plan.row
        return f"snapshot {r.snapshot.path}" if r.snapshot is not None else (r.event.kind if r.event else "?")

    for plan in unit.plans:
        d = _row_dict(plan.row)
        reason = plan.reason or distrust
        exp: dict[str, Any] = {}
        if reason is None:
            if plan.decode == "boot":
                if phase_base in out.phases:
                    exp = {"exp_result": "ok"}
                else:
                    reason = out.stop or "the guest never started"
            elif plan.decode == "phase":
                if plan.phase in out.phases:
                    exp = {"exp_result": "ok"}
                else:
                    reason = f"the guest did not come back from it ({out.stop})"
            elif plan.probe not in out.probes:
                reason = f"the guest stopped before this event: {out.stop}"
            else:
                exp, reason = _expectation(plan, out.probes[plan.probe])
        if reason is None and plan.assumed is not None and exp.get("exp_result") != plan.assumed:
            distrust = (f"QEMU answered {exp.get('exp_result')} to the mode event at seq {plan.row.seq}, "
                        "where the compiler assumed ok; later events may run in another mode than the trace's")
        if reason is not None:
            if plan.row.snapshot is None:
                rows.append({**d, "note": _join(d.get("note"), f"not recorded: {reason}")})
            skipped.append((plan.row.seq, what(plan), reason))
            continue
        rows.append({**d, **exp})
    return rows, skipped


def _join(a: str | None, b: str) -> str:
    return f"{a}; {b}" if a else b


def _expectation(plan: RowPlan, p: _Probe) -> tuple[dict[str, Any], str | None]:
    if plan.decode == "snapshot":
        if p.vector != 0xFF:
            return {}, f"reading the state faulted (vector {p.vector})"
        return {"exp_value": p.value}, None
    ev = plan.row.event
    assert ev is not None
    if p.vector == 0xFF:
        exp: dict[str, Any] = {"exp_result": "ok"}
        if ev.kind in VALUE_KINDS:
            exp["exp_value"] = p.value
        return exp, None
    result = RESULT_OF_VECTOR.get(p.vector)
    if result is None:
        return {}, f"the probe raised vector {p.vector} (error {p.error:#x}), which no trace result names"
    if result == "gp" and p.error:
        return {}, f"#GP with error code {p.error:#x}, not #GP(0)"
    if result != "pf":
        return {"exp_result": result}, None
    cr2 = p.cr2
    if plan.implicit_write_addr is not None:
        if not p.error & PF_W:
            return {}, "the descriptor read faulted before the accessed-bit write this event stands for"
        if cr2 == plan.implicit_write_addr:
            cr2 = ev.addr or 0  # the write lands 4 bytes into the descriptor, on the same page
    return {"exp_result": "pf", "exp_pfec": p.error, "exp_cr2": cr2}, None


def _meta(t: TraceInput, cpu: str, version: str, skipped: list[tuple[int, str, str]], recorded: int) -> dict[str, str]:
    meta = {k: v for k, v in t.meta.items() if k not in ("schema_version", "producer", "notes", "source")}
    meta.update({
        "producer": "recorded-qemu",
        "policy": "hw",
        "profile": "qemu",  # replay masks exactly QEMU's documented deviations, each named and counted
        "name": f"qemu-{t.name}",
        "source": f"QEMU {version} TCG (-accel tcg -cpu {cpu}), events of {t.name}",
        "host.backend": "qemu-tcg",
        "host.cpu": f"QEMU {version} -cpu {cpu}",
        "host.qemu_version": version,
        "host.qemu_cpu": cpu,
    })
    notes = [f"expectations are what QEMU TCG did; {recorded} events recorded, {len(skipped)} rows not recorded"]
    notes += [f"seq {seq} {what}: {reason}" for seq, what, reason in skipped]
    meta["notes"] = "; ".join(notes)
    return meta


def record_one(trace: TraceInput, *, timeout: float = DEFAULT_TIMEOUT, cache: Path | None = None,
               version: str | None = None) -> tuple[Recording, BootResult]:
    """Compile, build and boot one trace; decode what QEMU did into a recording."""
    unit = compile_unit(trace.name, trace.rows)
    src, memory = _program(unit)
    res = boot(build_image(src, cache), unit.cpu, memory_mib=memory, timeout=timeout)
    rows, skipped = _decode(unit, parse_output(res), 0)
    recorded = sum(1 for r in rows if "exp_result" in r or "exp_value" in r)
    meta = _meta(trace, unit.cpu, version if version is not None else qemu_version(), skipped, recorded)
    return Recording(trace.name, rows, meta, skipped, recorded, res.seconds), res


def record(traces: Sequence[TraceInput], *, timeout: float = DEFAULT_TIMEOUT, cache: Path | None = None,
           log: list[BootResult] | None = None, jobs: int | None = None) -> list[Recording]:
    """Record every trace, one boot each, ``jobs`` boots at a time (default: one per CPU).

    One boot per trace rather than one boot for many: a RESET between traces goes through the
    whole firmware again and costs more (0.2-0.3 s) than starting a new QEMU (about 0.15 s), and
    separate processes run in parallel."""
    version = qemu_version()
    workers = max(1, jobs or os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = list(pool.map(lambda t: record_one(t, timeout=timeout, cache=cache, version=version), traces))
    if log is not None:
        log.extend(res for _, res in done)
    return [rec for rec, _ in done]
