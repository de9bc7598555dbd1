"""The trace builder: write a scenario as code and get a valid trace file.

    t = TraceBuilder("pks-wd-write", "WD blocks a supervisor write when CR0.WP=1")
    t.cpuid(pks=True).cr4(pks=True).wrmsr(0x6E1, 0x8)
    t.access(0x40000000, key=1, write=True).expect_pf(0x23, rule="ARCH.RIGHTS")
    t.write("traces/arch/wd-write.parquet")

The builder tracks the control registers it has written so ``cr4(pks=True)`` means "the
current CR4 with PKS set".  Expectations attach to the last *primary* event (the one the call
was about, not a helper event such as the mapping an ``access`` needed).  An expected fault on
a register write undoes the builder's tracking of that write, as the CPU would.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from difftest.trace.io import write_trace
from reference_model.events import EVENT_KINDS
from reference_model.registers import (
    CPUID1_ECX_VMX,
    CPUID7_ECX_PKS,
    CPUID7_ECX_PKU,
    CR0_ET,
    CR0_PE,
    CR0_PG,
    CR0_RESET,
    CR0_WP,
    CR4_PAE,
    CR4_PKE,
    CR4_PKS,
    CR4_SMAP,
    CR4_SMEP,
    CR4_VMXE,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
    MSR_EFER,
    MSR_EXIT_FILTER,
    PF_P,
    PF_PK,
    PF_U,
    PF_W,
)

from .schema import SNAPSHOT_KIND

# Kinds recorded at the host level unless the trace says otherwise (the model's kind table decides).
_HOST_KINDS = frozenset(k.name for k in EVENT_KINDS.values() if k.level == "host")


@dataclass
class _CpuView:
    """What the builder believes a vCPU's registers are (to compute full CR values)."""

    cr0: int = CR0_RESET
    cr3: int = 0
    cr4: int = 0
    efer: int = 0
    mapped: dict[int, dict[str, Any]] = field(default_factory=dict)


class TraceBuilder:
    """Fluent construction of one trace."""

    def __init__(self, name: str, description: str = "", *, producer: str = "synthetic",
                 policy: str | None = None, source: str = "", notes: str = "",
                 long_mode: bool = False, wp: bool = True, host_features: str | None = None) -> None:
        self.meta: dict[str, str] = {"name": name, "description": description, "producer": producer}
        if host_features is not None:
            self.meta["cpu.features"] = host_features
        if policy:
            self.meta["policy"] = policy
        if source:
            self.meta["source"] = source
        if notes:
            self.meta["notes"] = notes
        self._rows: list[dict[str, Any]] = []
        self._views: dict[int, _CpuView] = {}
        self._vcpu = 0
        self._level = "l1"
        self._last: int | None = None
        self._undo: tuple[int, _CpuView] | None = None
        self._setup_rows = 0
        if long_mode:
            self.long_mode(wp=wp)
            self.end_setup()

    # -- plumbing -------------------------------------------------------------------------
    def _view(self, vcpu: int | None = None) -> _CpuView:
        v = self._vcpu if vcpu is None else vcpu
        return self._views.setdefault(v, _CpuView())

    def on(self, vcpu: int | None = None, level: str | None = None) -> TraceBuilder:
        """Make later guest events concern ``vcpu`` at ``level`` (l1 or l2)."""
        if vcpu is not None:
            self._vcpu = vcpu
        if level is not None:
            self._level = level
        return self

    def event(self, kind: str, *, primary: bool = True, **fields: Any) -> TraceBuilder:
        """Append a raw event (fields are trace columns)."""
        row: dict[str, Any] = {"seq": len(self._rows), "kind": kind}
        row["vcpu"] = fields.pop("vcpu", self._vcpu)
        row["level"] = fields.pop("level", "host" if kind in _HOST_KINDS else self._level)
        row.update({k: v for k, v in fields.items() if v is not None})
        if primary:
            v = self._view(row["vcpu"])
            self._undo = (row["vcpu"], _CpuView(v.cr0, v.cr3, v.cr4, v.efer, v.mapped))
            self._last = len(self._rows)
        self._rows.append(row)
        return self

    def end_setup(self) -> TraceBuilder:
        """Mark the rows so far as the setup prologue (shrinking keeps them)."""
        self._setup_rows = len(self._rows)
        return self

    # -- expectations ---------------------------------------------------------------------
    def expect(self, result: str | None = None, *, rule: str | None = None, **fields: Any) -> TraceBuilder:
        """Attach an expectation to the last primary event (fields: pfec, cr2, value, ...)."""
        if self._last is None:
            raise ValueError("expect() before any event")
        row = self._rows[self._last]
        if result is not None:
            row["exp_result"] = result
        for k, v in fields.items():
            if v is not None:
                row[f"exp_{k}"] = tuple(v) if k == "values" else v
        if rule is not None:
            row["exp_rule"] = rule
        if result in ("gp", "ud", "einval", "eperm", "vmfail", "entry_fail") and self._undo is not None:
            vcpu, view = self._undo
            self._views[vcpu] = view
        return self

    def expect_ok(self, rule: str | None = None, **fields: Any) -> TraceBuilder:
        return self.expect("ok", rule=rule, **fields)

    def expect_gp(self, rule: str | None = None) -> TraceBuilder:
        return self.expect("gp", rule=rule)

    def expect_ud(self, rule: str | None = None) -> TraceBuilder:
        return self.expect("ud", rule=rule)

    def expect_pf(self, pfec: int, cr2: int | None = None, rule: str | None = None) -> TraceBuilder:
        """#PF with ``pfec``; CR2 defaults to the address of the access the fault is expected on."""
        if cr2 is None and self._last is not None:
            cr2 = self._rows[self._last].get("addr")
        return self.expect("pf", rule=rule, pfec=pfec, cr2=cr2)

    def expect_value(self, value: int, rule: str | None = None) -> TraceBuilder:
        return self.expect("ok", rule=rule, value=value)

    def expect_user_exit(self, reason: int = MSR_EXIT_FILTER, rule: str | None = None) -> TraceBuilder:
        return self.expect("user_exit", rule=rule, exit_reason=reason)

    def note(self, text: str) -> TraceBuilder:
        """A note shown beside the last primary event."""
        if self._last is not None:
            self._rows[self._last]["note"] = text
        return self

    def snapshot(self, path: str, value: int, note: str | None = None, rule: str | None = None) -> TraceBuilder:
        """Check that state ``path`` holds ``value`` after the previous event (``rule``: the rule it checks)."""
        self._rows.append({"seq": len(self._rows), "kind": SNAPSHOT_KIND, "vcpu": self._vcpu, "level": "host",
                           "path": path, "exp_value": value, "note": note, "exp_rule": rule})
        return self

    # -- host ioctls ----------------------------------------------------------------------
    def cpuid(self, pks: bool = False, pku: bool = False, vmx: bool = False, *, ecx7: int | None = None) -> TraceBuilder:
        """KVM_SET_CPUID2 (on policy hw: the CPU's enumeration)."""
        ecx = ecx7 if ecx7 is not None else (CPUID7_ECX_PKS if pks else 0) | (CPUID7_ECX_PKU if pku else 0)
        return self.event("set_cpuid", cpuid_7_ecx=ecx, cpuid_1_ecx=CPUID1_ECX_VMX if vmx else 0)

    def set_msrs(self, msrs: dict[int, int]) -> TraceBuilder:
        return self.event("set_msrs", msrs=tuple(msrs), values=tuple(msrs.values()))

    def get_msrs(self, *msrs: int) -> TraceBuilder:
        return self.event("get_msrs", msrs=tuple(msrs))

    def set_sregs(self, *, cr0: int | None = None, cr3: int | None = None, cr4: int | None = None,
                  efer: int | None = None) -> TraceBuilder:
        self.event("set_sregs", cr0=cr0, cr3=cr3, cr4=cr4, efer=efer)
        v = self._view()
        for name, val in (("cr0", cr0), ("cr3", cr3), ("cr4", cr4), ("efer", efer)):
            if val is not None:
                setattr(v, name, val)
        return self

    def get_sregs(self, reg: str) -> TraceBuilder:
        return self.event("get_sregs", reg=reg)

    def msr_filter(self, default: str = "allow", msrs: tuple[int, ...] = (), allow: int = 0) -> TraceBuilder:
        """KVM_X86_SET_MSR_FILTER: ``msrs`` get ``allow`` (bit 0 read, bit 1 write), the rest ``default``."""
        return self.event("set_msr_filter", filter_default=default, msrs=tuple(msrs), filter_allow=allow)

    def user_msr_exits(self, mask: int) -> TraceBuilder:
        return self.event("enable_user_msr", value=mask)

    # -- lifecycle ------------------------------------------------------------------------
    def reset(self) -> TraceBuilder:
        self._views[self._vcpu] = _CpuView(mapped=self._view().mapped)
        return self.event("reset")

    def init(self) -> TraceBuilder:
        self._views[self._vcpu] = _CpuView(mapped=self._view().mapped)
        return self.event("init")

    # -- guest instructions ---------------------------------------------------------------
    def wrmsr(self, msr: int, value: int, cpl: int = 0) -> TraceBuilder:
        return self.event("wrmsr", msr=msr, value=value, cpl=cpl or None)

    def rdmsr(self, msr: int, cpl: int = 0) -> TraceBuilder:
        return self.event("rdmsr", msr=msr, cpl=cpl or None)

    def guest_cpuid(self, leaf: int = 7, subleaf: int = 0) -> TraceBuilder:
        return self.event("cpuid", cpuid_leaf=leaf, cpuid_subleaf=subleaf)

    def cr0(self, value: int | None = None, *, pe: bool | None = None, pg: bool | None = None,
            wp: bool | None = None, cpl: int = 0) -> TraceBuilder:
        v = self._view()
        new = v.cr0 if value is None else value
        new = _set(new, CR0_PE, pe)
        new = _set(new, CR0_PG, pg)
        new = _set(new, CR0_WP, wp)
        self.event("mov_cr0", value=new, cpl=cpl or None)
        v.cr0 = new
        if new & CR0_PG and v.efer & EFER_LME:
            v.efer |= EFER_LMA
        else:
            v.efer &= ~EFER_LMA
        return self

    def cr3(self, value: int | None = None, cpl: int = 0) -> TraceBuilder:
        v = self._view()
        new = v.cr3 if value is None else value
        self.event("mov_cr3", value=new, cpl=cpl or None)
        v.cr3 = new
        return self

    def cr4(self, value: int | None = None, *, pks: bool | None = None, pke: bool | None = None,
            pae: bool | None = None, smep: bool | None = None, smap: bool | None = None,
            vmxe: bool | None = None, flush: bool = True, cpl: int = 0) -> TraceBuilder:
        """MOV to CR4.  With ``flush`` (default), a PKS/PKE change is followed by a CR3 reload (ARCH.TLB)."""
        v = self._view()
        old = v.cr4
        new = old if value is None else value
        for mask, on in ((CR4_PKS, pks), (CR4_PKE, pke), (CR4_PAE, pae), (CR4_SMEP, smep), (CR4_SMAP, smap),
                         (CR4_VMXE, vmxe)):
            new = _set(new, mask, on)
        self.event("mov_cr4", value=new, cpl=cpl or None)
        v.cr4 = new
        if flush and (old ^ new) & (CR4_PKS | CR4_PKE) and v.cr0 & CR0_PG:
            self.event("mov_cr3", value=v.cr3, primary=False)
        return self

    def efer(self, *, lme: bool | None = None, nxe: bool | None = None) -> TraceBuilder:
        v = self._view()
        new = _set(_set(v.efer & ~EFER_LMA, EFER_LME, lme), EFER_NXE, nxe)
        self.event("wrmsr", msr=MSR_EFER, value=new)
        v.efer = new | (v.efer & EFER_LMA)
        return self

    def long_mode(self, wp: bool = True) -> TraceBuilder:
        """Enter IA-32e paging: CR4.PAE, EFER.LME, then CR0.PE|PG (and WP)."""
        self.cr4(pae=True).efer(lme=True)
        return self.cr0(CR0_ET | CR0_PE | CR0_PG | (CR0_WP if wp else 0))

    def wrpkru(self, value: int) -> TraceBuilder:
        return self.event("wrpkru", value=value)

    def rdpkru(self) -> TraceBuilder:
        return self.event("rdpkru")

    def invlpg(self, addr: int) -> TraceBuilder:
        return self.event("invlpg", addr=addr)

    # -- memory ---------------------------------------------------------------------------
    def map(self, addr: int, *, key: int = 0, user: bool = False, user_upper: bool = True, writable: bool = True,
            present: bool = True, rsvd: bool = False, nx: bool = False, size: str = "4k") -> TraceBuilder:
        """The guest writes a leaf entry for ``addr`` (and the entries above it)."""
        attrs: dict[str, Any] = dict(key=key, user=user, user_upper=user_upper, writable=writable, present=present,
                                     rsvd=rsvd, nx=nx, page_size=size)
        self._view().mapped[addr] = attrs
        return self.event("map", addr=addr, **attrs)

    def access(self, addr: int, *, write: bool = False, kind: str | None = None, cpl: int = 0,
               emulated: bool = False, **map_attrs: Any) -> TraceBuilder:
        """A data access (or ``kind``: rmw, fetch, implicit, implicit_write) at ``addr``.

        Mapping attributes given here (key, user, writable, ...) map the page first if it is not
        mapped that way yet; a remap is followed by INVLPG so the new entry is the one used.
        """
        if map_attrs:
            size = map_attrs.pop("size", "4k")
            want = dict(key=0, user=False, user_upper=True, writable=True, present=True, rsvd=False, nx=False,
                        page_size=size)
            want.update(map_attrs)
            have = self._view().mapped.get(addr)
            if have != want:
                self.event("map", addr=addr, primary=False, **want)
                if have is not None:
                    self.event("invlpg", addr=addr, primary=False)
                self._view().mapped[addr] = want
        access = kind or ("write" if write else "read")
        return self.event("emu_access" if emulated else "access", addr=addr, access=access, cpl=cpl or None)

    # -- VMX / nested ---------------------------------------------------------------------
    def vm_exit(self, reason: int | None = None) -> TraceBuilder:
        return self.event("vm_exit", reason=reason)

    def host_pkrs(self, value: int) -> TraceBuilder:
        return self.event("host_pkrs", value=value)

    def vmwrite(self, field_enc: int, value: int) -> TraceBuilder:
        return self.event("vmwrite", field=field_enc, value=value)

    def vmread(self, field_enc: int) -> TraceBuilder:
        return self.event("vmread", field=field_enc)

    def vmlaunch(self) -> TraceBuilder:
        return self.event("vmlaunch")

    def vmresume(self) -> TraceBuilder:
        return self.event("vmresume")

    def nested_exit(self, reason: int | None = None) -> TraceBuilder:
        return self.event("nested_exit", reason=reason)

    def get_nested_state(self) -> TraceBuilder:
        return self.event("get_nested_state")

    def set_nested_state(self, src_vcpu: int, run_pending: bool = False) -> TraceBuilder:
        return self.event("set_nested_state", src_vcpu=src_vcpu, run_pending=run_pending)

    # -- output ---------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._rows]

    def metadata(self) -> dict[str, str]:
        meta = dict(self.meta)
        if self._setup_rows:
            meta["setup_rows"] = str(self._setup_rows)
        return meta

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the trace atomically."""
        return write_trace(path, self._rows, self.metadata())


def _set(value: int, mask: int, on: bool | None) -> int:
    if on is None:
        return value
    return value | mask if on else value & ~mask


def pfec(*, write: bool = False, user: bool = False, pk: bool = False, present: bool = True) -> int:
    """A PFEC from its parts, for readable expectations: ``pfec(write=True, pk=True) == 0x23``."""
    return (PF_P if present else 0) | (PF_W if write else 0) | (PF_U if user else 0) | (PF_PK if pk else 0)
