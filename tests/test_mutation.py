"""Rule-breaking (mutation) test: break one architectural rule at a time and check the corpus catches it.

Each mutant is the CPU model with one rule changed (a monkeypatch of one function).  The table
says, from the corpus design in traces/build_arch.py (which marked event exercises what), which
traces must diverge, at which event, and which rule the first divergence must name; every other
trace of traces/arch must still pass.  The expected sets were derived by reading the scenarios,
not by running the mutants.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import reference_model.cpu as cpu_mod
import reference_model.paging as paging_mod
from difftest.engine import replay_trace
from difftest.trace.io import open_trace
from difftest.verdict.profiles import get_profile
from reference_model import get_policy
from reference_model.events import Event, Outcome, gp
from reference_model.paging import Mapping
from reference_model.registers import (
    CPUID7_ECX_PKS,
    CR0_PG,
    CR4_PKE,
    CR4_PKS,
    EFER_LMA,
    MSR_IA32_PKRS,
    PF_P,
    PF_PK,
    PF_RSVD,
)
from reference_model.rules import RULES

ROOT = Path(__file__).resolve().parents[1]
ARCH_DIR = ROOT / "traces" / "arch"
BUILD_SCRIPT = ROOT / "traces" / "build_arch.py"

Patch = Callable[[pytest.MonkeyPatch], None]


def load_build_arch() -> ModuleType:
    """traces/build_arch.py as a module (traces/ is not a package)."""
    name = "pksdt_build_arch"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BUILD_SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


# --- the mutants --------------------------------------------------------------------------------
_check_access = paging_mod.check_access


def _wd_ignores_wp(mp: pytest.MonkeyPatch) -> None:
    """ARCH.RIGHTS broken: WD denies every write, whatever CR0.WP."""
    def denies(pkr: int, key: int, is_write: bool, wp: bool, user_mode_access: bool) -> bool:
        bits = (pkr >> (2 * key)) & 3
        return bool(bits & 1) or (bool(bits & 2) and is_write)
    mp.setattr(paging_mod, "denies", denies)


def _wrap_access(mp: pytest.MonkeyPatch, fn: Callable[..., Outcome]) -> None:
    mp.setattr(cpu_mod, "check_access", fn)


def _fetch_key_checked(mp: pytest.MonkeyPatch) -> None:
    """ARCH.CHK.DATA broken: an instruction fetch is key-checked like a read."""
    def check(m: Mapping | None, addr: int, access: str, cpl: int, cr0: int, cr4: int, efer: int, pkrs: int,
              pkru: int) -> Outcome:
        out = _check_access(m, addr, access, cpl, cr0, cr4, efer, pkrs, pkru)
        if access != "fetch":
            return out
        as_read = _check_access(m, addr, "read", cpl, cr0, cr4, efer, pkrs, pkru)
        if as_read.result == "pf" and (as_read.pfec or 0) & PF_PK:
            return Outcome("pf", pfec=(out.pfec or 0) | PF_P | PF_PK, cr2=addr, rules=as_read.rules)
        return out
    _wrap_access(mp, check)


def _register_by_cpl(mp: pytest.MonkeyPatch) -> None:
    """ARCH.CHK.REG broken: an explicit CPL3 access uses PKRU (if PKE), every other access PKRS (if PKS)."""
    def check(m: Mapping | None, addr: int, access: str, cpl: int, cr0: int, cr4: int, efer: int, pkrs: int,
              pkru: int) -> Outcome:
        if m is None:
            return _check_access(m, addr, access, cpl, cr0, cr4, efer, pkrs, pkru)
        user_mode = cpl == 3 and access not in paging_mod.IMPLICIT_ACCESSES
        base = cr4 & ~(CR4_PKE | CR4_PKS)
        if user_mode and not m.user_address:  # a supervisor address checked against PKRU under PKE
            cr4 = base | (CR4_PKS if cr4 & CR4_PKE else 0)
            pkrs = pkru
        elif not user_mode and m.user_address:  # a user address checked against PKRS under PKS
            cr4 = base | (CR4_PKE if cr4 & CR4_PKS else 0)
            pkru = pkrs
        return _check_access(m, addr, access, cpl, cr0, cr4, efer, pkrs, pkru)
    _wrap_access(mp, check)


def _pk_dropped_on_rw(mp: pytest.MonkeyPatch) -> None:
    """ARCH.PFEC.PK broken: PK is not reported when the ordinary R/W check fails too."""
    def check(*args: Any) -> Outcome:
        out = _check_access(*args)
        if out.result == "pf" and "X86.PAGE.RW" in out.rules:
            out.pfec = (out.pfec or 0) & ~PF_PK
        return out
    _wrap_access(mp, check)


def _us_before_keys(mp: pytest.MonkeyPatch) -> None:
    """ARCH.PFEC.CPL3 broken (QEMU 7.2's order): a CPL3 access to a supervisor address never gets PK."""
    def check(*args: Any) -> Outcome:
        out = _check_access(*args)
        if out.result == "pf" and "ARCH.PFEC.CPL3" in out.rules:
            out.pfec = (out.pfec or 0) & ~PF_PK
        return out
    _wrap_access(mp, check)


def _rsvd_without_p(mp: pytest.MonkeyPatch) -> None:
    """ARCH.PFEC.TERMINAL broken (QEMU 7.2): a reserved-bit fault reports RSVD without P."""
    def check(*args: Any) -> Outcome:
        out = _check_access(*args)
        if out.result == "pf" and (out.pfec or 0) & PF_RSVD:
            out.pfec = (out.pfec or 0) & ~PF_P
        return out
    _wrap_access(mp, check)


def _np_sets_pk(mp: pytest.MonkeyPatch) -> None:
    """ARCH.PFEC.TERMINAL broken: a not-present fault also reports PK when the key would deny."""
    def check(m: Mapping | None, addr: int, access: str, cpl: int, cr0: int, cr4: int, efer: int, pkrs: int,
              pkru: int) -> Outcome:
        out = _check_access(m, addr, access, cpl, cr0, cr4, efer, pkrs, pkru)
        if out.result == "pf" and m is not None and not m.present:
            present = _check_access(dataclasses.replace(m, present=True), addr, access, cpl, cr0, cr4, efer, pkrs, pkru)
            if (present.pfec or 0) & PF_PK:
                out.pfec = (out.pfec or 0) | PF_PK
        return out
    _wrap_access(mp, check)


def _addr_type_from_leaf(mp: pytest.MonkeyPatch) -> None:
    """ARCH.ADDR broken: the address type is the leaf's U/S alone (upper levels ignored)."""
    def check(m: Mapping | None, *rest: Any) -> Outcome:
        if m is not None:
            m = dataclasses.replace(m, user_upper=True)
        return _check_access(m, *rest)
    _wrap_access(mp, check)


def _pks_outside_ia32e(mp: pytest.MonkeyPatch) -> None:
    """ARCH.CR4.EFFECT broken: PKS is also enforced under 32-bit and PAE paging."""
    def check(m: Mapping | None, addr: int, access: str, cpl: int, cr0: int, cr4: int, efer: int, pkrs: int,
              pkru: int) -> Outcome:
        out = _check_access(m, addr, access, cpl, cr0, cr4, efer, pkrs, pkru)
        if out.result == "ok" and cr0 & CR0_PG and not efer & EFER_LMA:
            as_ia32e = _check_access(m, addr, access, cpl, cr0, cr4, efer | EFER_LMA, pkrs, pkru)
            if (as_ia32e.pfec or 0) & PF_PK:
                return as_ia32e
        return out
    _wrap_access(mp, check)


def _init_clears_pkrs(mp: pytest.MonkeyPatch) -> None:
    """ARCH.INIT broken (the withdrawn v5 cover-letter text): INIT clears PKRS."""
    orig = cpu_mod.Cpu.init

    def init(self: cpu_mod.Cpu, ev: Event) -> Outcome:
        out = orig(self, ev)
        self.pkrs = 0
        return out
    mp.setattr(cpu_mod.Cpu, "init", init)


def _reset_keeps_pkrs(mp: pytest.MonkeyPatch) -> None:
    """ARCH.RESET broken: RESET leaves PKRS as it was."""
    orig = cpu_mod.Cpu.reset

    def reset(self: cpu_mod.Cpu, ev: Event) -> Outcome:
        kept = self.pkrs
        out = orig(self, ev)
        self.pkrs = kept
        return out
    mp.setattr(cpu_mod.Cpu, "reset", reset)


def _pkrs_upper_truncated(mp: pytest.MonkeyPatch) -> None:
    """ARCH.MSR.RSVD broken (Bochs): WRMSR 0x6E1 drops bits 63:32 instead of faulting."""
    orig = cpu_mod.Cpu.wrmsr

    def wrmsr(self: cpu_mod.Cpu, ev: Event) -> Outcome:
        if ev.msr == MSR_IA32_PKRS and (ev.value or 0) >> 32:
            ev = dataclasses.replace(ev, value=(ev.value or 0) & 0xFFFF_FFFF)
        return orig(self, ev)
    mp.setattr(cpu_mod.Cpu, "wrmsr", wrmsr)


def _msr_no_cpuid_gate(mp: pytest.MonkeyPatch) -> None:
    """ARCH.MSR.CPUID broken (QEMU 7.2): IA32_PKRS works without CPUID.PKS."""
    write, read = cpu_mod.check_pkrs_write, cpu_mod.check_pkrs_read
    mp.setattr(cpu_mod, "check_pkrs_write", lambda has_pks, value: write(True, value))
    mp.setattr(cpu_mod, "check_pkrs_read", lambda has_pks: read(True))


def _msr_no_cpl_check(mp: pytest.MonkeyPatch) -> None:
    """ARCH.MSR.CPL broken: RDMSR/WRMSR of IA32_PKRS at CPL>0 is executed."""
    for name in ("wrmsr", "rdmsr"):
        orig = getattr(cpu_mod.Cpu, name)

        def handler(self: cpu_mod.Cpu, ev: Event, _orig: Callable[..., Outcome] = orig) -> Outcome:
            if ev.msr == MSR_IA32_PKRS:
                ev = dataclasses.replace(ev, cpl=0)
            return _orig(self, ev)
        mp.setattr(cpu_mod.Cpu, name, handler)


def _cr4_pks_needs_paging(mp: pytest.MonkeyPatch) -> None:
    """ARCH.CR4.RSVD broken: setting CR4.PKS while CR0.PG=0 faults."""
    orig = cpu_mod.Cpu.mov_cr4

    def mov_cr4(self: cpu_mod.Cpu, ev: Event) -> Outcome:
        if (ev.value or 0) & CR4_PKS and not self.cr4 & CR4_PKS and not self.cr0 & CR0_PG:
            return gp("ARCH.CR4.RSVD")
        return orig(self, ev)
    mp.setattr(cpu_mod.Cpu, "mov_cr4", mov_cr4)


def _cpuid_hides_pks(mp: pytest.MonkeyPatch) -> None:
    """ARCH.CPUID broken: the CPUID instruction reports ECX[31]=0 on a CPU with PKS."""
    orig = cpu_mod.Cpu.cpuid

    def cpuid(self: cpu_mod.Cpu, ev: Event) -> Outcome:
        out = orig(self, ev)
        if ev.cpuid_leaf == 7 and out.value is not None:
            out.value &= ~CPUID7_ECX_PKS
        return out
    mp.setattr(cpu_mod.Cpu, "cpuid", cpuid)


def _key_three_bits(mp: pytest.MonkeyPatch) -> None:
    """ARCH.KEY broken: only bits 61:59 of the leaf are read, so keys 8-15 alias keys 0-7."""
    def check(m: Mapping | None, *rest: Any) -> Outcome:
        if m is not None:
            m = dataclasses.replace(m, key=m.key & 7)
        return _check_access(m, *rest)
    _wrap_access(mp, check)


def _pkrs_write_needs_pks(mp: pytest.MonkeyPatch) -> None:
    """ARCH.MSR.INDEP broken: WRMSR 0x6E1 succeeds but is dropped while CR4.PKS=0."""
    orig = cpu_mod.Cpu.wrmsr

    def wrmsr(self: cpu_mod.Cpu, ev: Event) -> Outcome:
        before = self.pkrs
        out = orig(self, ev)
        if ev.msr == MSR_IA32_PKRS and out.result == "ok" and not self.cr4 & CR4_PKS:
            self.pkrs = before
        return out
    mp.setattr(cpu_mod.Cpu, "wrmsr", wrmsr)


def _cr4_pks_flushes(mp: pytest.MonkeyPatch) -> None:
    """ARCH.TLB broken: the model claims a CR4.PKS/PKE change flushes, so nothing is ever undefined."""
    mp.setattr(cpu_mod, "CR4_FLUSH_BITS", cpu_mod.CR4_FLUSH_BITS | CR4_PKS | CR4_PKE)


@dataclass(frozen=True)
class Mutant:
    name: str
    patch: Patch
    # trace name -> (mark in build_arch.py of the first event that must diverge, its primary rule)
    caught_by: dict[str, tuple[str, str]]


CHK_DATA = "ARCH.CHK.DATA-implicit-and-fetch"
CHK_REG = "ARCH.CHK.REG-address-type"
ADDR_UPPER = "ARCH.ADDR-upper-level-us0"
ADDR_PKRU = "ARCH.ADDR-pkru-side"
PFEC_PK = "ARCH.PFEC.PK-with-rw-violation"
PFEC_CPL3 = "ARCH.PFEC.CPL3-sup-addr"
TERMINAL = "ARCH.PFEC.TERMINAL-np-rsvd"

MUTANTS = (
    # Every supervisor-mode write with WD (no AD) under CR0.WP=0 to a key-checked address.
    Mutant("wd-ignores-wp", _wd_ignores_wp, {
        "T4-kut-wd-wp0-sup-write": ("access", "ARCH.RIGHTS"),
        "V2-wd-wp0-sup-write": ("access", "ARCH.RIGHTS"),
        CHK_DATA: ("implicit-write-cpl3-wp0", "ARCH.RIGHTS"),
        "ARCH.RIGHTS-ad-wd-wp": ("wd-write-wp0", "ARCH.RIGHTS"),
        PFEC_PK: ("ro-wd-wp0", "ARCH.RIGHTS"),
    }),
    # The only traces that fetch from a page whose key has AD.
    Mutant("fetch-key-checked", _fetch_key_checked, {
        "V5-ad-sup-fetch": ("access", "ARCH.CHK.DATA"),
        CHK_DATA: ("fetch-cpl0", "ARCH.CHK.DATA"),
    }),
    # Supervisor-mode accesses to user addresses with PKRS or PKRU denying differently, and CPL3
    # accesses to supervisor addresses where PKRS denies (PKE=0 there, so PK is lost).  T5 is not
    # caught: PKRS.WD with WP=0 would not deny a supervisor write anyway.
    Mutant("register-by-cpl", _register_by_cpl, {
        "T6-kut-wd-wp1-user-write": ("access", "ARCH.CHK.REG"),
        "T7-kut-ad-wp0-user-read": ("access", "ARCH.CHK.REG"),
        "V6-wd-wp0-user-write-sup-addr": ("access", "ARCH.PFEC.CPL3"),
        "V9-pke1-pks1-pkru-ad-sup-read-user-addr": ("access", "ARCH.CHK.REG"),
        ADDR_UPPER: ("user", "ARCH.ADDR"),
        ADDR_PKRU: ("user", "ARCH.ADDR"),
        CHK_REG: ("pkru-cpl0-user-addr", "ARCH.CHK.REG"),
        PFEC_CPL3: ("ad-read", "ARCH.PFEC.CPL3"),
    }),
    # Only the read-only pages (PFEC.PK, and the last access of PFEC.CPL3) make R/W fail with a key.
    Mutant("pk-dropped-on-rw-violation", _pk_dropped_on_rw, {
        PFEC_PK: ("ro-wd-wp1", "ARCH.PFEC.PK"),
        PFEC_CPL3: ("wd-write-ro", "ARCH.PFEC.CPL3"),
    }),
    # CPL3 accesses to supervisor addresses where the key denies.
    Mutant("us-before-keys", _us_before_keys, {
        "V6-wd-wp0-user-write-sup-addr": ("access", "ARCH.PFEC.CPL3"),
        ADDR_UPPER: ("leaf-u1-upper-u0-cpl3", "ARCH.ADDR"),
        PFEC_CPL3: ("ad-read", "ARCH.PFEC.CPL3"),
    }),
    Mutant("rsvd-without-p", _rsvd_without_p, {TERMINAL: ("rsvd-read", "ARCH.PFEC.TERMINAL")}),
    Mutant("not-present-sets-pk", _np_sets_pk, {TERMINAL: ("np-read", "ARCH.PFEC.TERMINAL")}),
    # The only pages with U/S=0 above a U/S=1 leaf.
    Mutant("addr-type-from-leaf", _addr_type_from_leaf, {
        ADDR_UPPER: ("leaf-u1-upper-u0", "ARCH.ADDR"),
        ADDR_PKRU: ("leaf-u1-upper-u0", "ARCH.ADDR"),
    }),
    # The only key-denied accesses under paging that is not IA-32e.
    Mutant("pks-outside-ia32e", _pks_outside_ia32e, {
        "V10-pae-no-lma-ad-sup-read": ("access", "ARCH.CR4.EFFECT"),
        "ARCH.CR4.EFFECT-modes": ("32bit-read", "ARCH.CR4.EFFECT"),
    }),
    Mutant("init-clears-pkrs", _init_clears_pkrs, {"ARCH.INIT-preserves-pkrs": ("rdmsr", "ARCH.INIT")}),
    Mutant("reset-keeps-pkrs", _reset_keeps_pkrs, {"ARCH.RESET-clears-pkrs": ("rdmsr", "ARCH.RESET")}),
    Mutant("pkrs-upper-half-truncated", _pkrs_upper_truncated,
           {"ARCH.MSR.RSVD-upper-half": ("bit32", "ARCH.MSR.RSVD")}),
    Mutant("msr-no-cpuid-gate", _msr_no_cpuid_gate, {"ARCH.MSR.CPUID-no-pks": ("real-wrmsr", "ARCH.MSR.CPUID")}),
    Mutant("msr-no-cpl-check", _msr_no_cpl_check, {"ARCH.MSR.CPL-ring3": ("wrmsr-cpl3", "ARCH.MSR.CPL")}),
    # Only one trace sets CR4.PKS while paging is off (ARCH.CR4.RSVD-no-cpuid faults there anyway).
    Mutant("cr4-pks-needs-paging", _cr4_pks_needs_paging,
           {"ARCH.CR4.RSVD-any-mode": ("real-mode", "ARCH.CR4.RSVD")}),
    # CPUID-absent reads ECX[31]=0 already.
    Mutant("cpuid-hides-pks", _cpuid_hides_pks, {"ARCH.CPUID-pks-enumerated": ("cpuid", "ARCH.CPUID")}),
    # Only ARCH.KEY uses a key above 7 (15), and first denies it at key15-ad.
    Mutant("key-three-bits", _key_three_bits, {"ARCH.KEY-leaf-sizes": ("key15-ad", "ARCH.KEY")}),
    # Traces that write PKRS while CR4.PKS=0 and later rely on the value (V7 relies on nothing).
    Mutant("pkrs-write-needs-pks", _pkrs_write_needs_pks, {
        "ARCH.MSR.INDEP-any-mode": ("real-rdmsr", "ARCH.MSR.INDEP"),
        "ARCH.CR4.EFFECT-modes": ("ia32e-read", "ARCH.CR4.EFFECT"),
        "ARCH.TLB-cr4-pks-flush": ("a-after-cr3", "ARCH.TLB"),
    }),
    # The only CR4.PKS change without a flush; its expectation (QEMU's stale 'ok') is then compared.
    Mutant("cr4-pks-change-flushes", _cr4_pks_flushes, {"ARCH.TLB-cr4-pks-flush": ("a-unflushed", "ARCH.TLB")}),
)


@pytest.fixture(scope="module")
def marks() -> dict[str, dict[str, int]]:
    """Trace name -> mark -> seq, from the corpus design."""
    return {s.name: s.marks for s in load_build_arch().build_corpus()}


def _first_divergences() -> dict[str, tuple[int, str | None]]:
    policy, profile = get_policy("hw"), get_profile("strict")
    out: dict[str, tuple[int, str | None]] = {}
    for path in sorted(ARCH_DIR.glob("*.parquet")):
        trace = open_trace(path)
        result = replay_trace(trace, policy, profile)
        if result.divergence_count:
            first = result.divergences[0]
            out[trace.name] = (first.seq, first.primary_rule)
    return out


def test_unmutated_model_passes_the_corpus() -> None:
    assert _first_divergences() == {}


def test_every_mutant_names_existing_traces_and_marks(marks: dict[str, dict[str, int]]) -> None:
    for m in MUTANTS:
        for trace, (mark, _rule) in m.caught_by.items():
            assert trace in marks, f"{m.name}: no trace {trace}"
            assert mark in marks[trace], f"{m.name}: {trace} has no mark {mark}"


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_mutant_is_caught_exactly_where_designed(mutant: Mutant, marks: dict[str, dict[str, int]],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    mutant.patch(monkeypatch)
    got = _first_divergences()
    want = {trace: (marks[trace][mark], rule) for trace, (mark, rule) in mutant.caught_by.items()}
    assert got == want


def test_every_arch_rule_has_a_mutant() -> None:
    # Each SPEC §1 rule is broken by some mutant and named by a first divergence it causes.
    named = {rule for m in MUTANTS for _mark, rule in m.caught_by.values()}
    assert len({m.name for m in MUTANTS}) == len(MUTANTS)
    assert {r for r in RULES if r.startswith("ARCH.")} - named == set()
