"""Built-in scenarios for ``difftest record qemu --scenario NAME``: event sequences only.

They carry no expectations: recording them under QEMU is what gives them expectations.  Each one
covers one area of SPEC §1 that QEMU is a useful independent check of.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields

from difftest.trace.builder import TraceBuilder
from difftest.trace.io import Snapshot, TraceRow
from difftest.trace.schema import SNAPSHOT_KIND
from reference_model.events import Event
from reference_model.registers import MSR_IA32_PKRS

_EVENT_FIELDS = frozenset(f.name for f in fields(Event)) - {"kind", "seq"}

A, B, C, USER = 0x4000_0000, 0x4000_1000, 0x4000_2000, 0x4000_3000


def _rights() -> TraceBuilder:
    t = TraceBuilder("qemu-rights", "AD and WD against CR0.WP for supervisor reads, writes and RMW",
                     policy="hw", long_mode=True)
    t.cpuid(pks=True)
    t.cr4(pks=True)
    for pkrs in (0x4, 0x8, 0xC):
        t.wrmsr(MSR_IA32_PKRS, pkrs)
        for wp in (True, False):
            t.cr0(wp=wp)
            for kind in ("read", "write", "rmw"):
                t.access(A, kind=kind, key=1)
    return t


def _address_type() -> TraceBuilder:
    t = TraceBuilder("qemu-address-type", "PKRS for supervisor addresses (U/S=0 in any level), PKRU for user "
                     "addresses, at CPL0 and CPL3", policy="hw", long_mode=True)
    t.cpuid(pks=True, pku=True)
    t.cr4(pks=True, pke=True)
    t.wrmsr(MSR_IA32_PKRS, 0x4).wrpkru(0x4)
    t.access(A, key=1)
    t.access(0x8000_0000, key=1, user=True, user_upper=False)
    t.access(USER, key=1, user=True)
    t.access(USER, key=1, user=True, cpl=3)
    t.access(A, key=1, cpl=3)
    t.access(A, key=1, write=True, cpl=3)
    t.rdpkru().guest_cpuid(7)
    return t


def _terminal_and_sizes() -> TraceBuilder:
    t = TraceBuilder("qemu-terminal-and-sizes", "not-present and reserved-bit faults never set PK; keys of "
                     "2 MiB and 1 GiB leaves; fetches and implicit LDT reads", policy="hw", long_mode=True)
    t.cpuid(pks=True)
    t.cr4(pks=True).wrmsr(MSR_IA32_PKRS, 0x4)
    t.access(A, key=1, present=False)
    t.access(B, key=1, rsvd=True)
    t.access(0x4020_1234, key=1, size="2m")
    t.access(0x80_4000_0000, key=1, size="1g")
    t.access(C, kind="fetch", key=1)
    t.access(C, kind="implicit", key=1)
    t.access(C, kind="implicit", key=1, cpl=3)
    return t


def _init_reset() -> TraceBuilder:
    t = TraceBuilder("qemu-init-reset", "PKRS survives INIT (second vCPU's INIT+SIPI) and is cleared by RESET",
                     policy="hw", long_mode=True)
    t.cpuid(pks=True)
    t.wrmsr(MSR_IA32_PKRS, 0xAAAAAAA8).init().rdmsr(MSR_IA32_PKRS)
    t.snapshot("vcpu0.pkrs", 0xAAAAAAA8)
    t.reset().rdmsr(MSR_IA32_PKRS)
    t.snapshot("vcpu0.pkrs", 0)
    return t


def _no_pks() -> TraceBuilder:
    t = TraceBuilder("qemu-no-pks", "without CPUID.PKS: MSR 0x6E1 and CR4.PKS (the latter is never sent)",
                     policy="hw", long_mode=True)
    t.cpuid(pks=False)
    t.wrmsr(MSR_IA32_PKRS, 0x4).rdmsr(MSR_IA32_PKRS)
    t.cr4(pks=True)
    t.guest_cpuid(7)
    return t


SCENARIOS: dict[str, Callable[[], TraceBuilder]] = {
    "rights": _rights,
    "address-type": _address_type,
    "terminal-and-sizes": _terminal_and_sizes,
    "init-reset": _init_reset,
    "no-pks": _no_pks,
}


def scenario_rows(builder: TraceBuilder) -> list[TraceRow]:
    """A scenario's rows as trace rows (it has no expectations, so it is not a valid trace file)."""
    out: list[TraceRow] = []
    for i, r in enumerate(builder.rows()):
        if r["kind"] == SNAPSHOT_KIND:
            out.append(TraceRow(i, r["seq"], None, Snapshot(r["path"], r["exp_value"]), None, r.get("note")))
            continue
        ev = Event(r["kind"], seq=r["seq"])
        for k, v in r.items():
            if k in _EVENT_FIELDS:
                setattr(ev, k, tuple(v) if k in ("msrs", "values") else v)
        out.append(TraceRow(i, r["seq"], ev, None, None, r.get("note")))
    return out
