"""The CPU model (policy ``hw``), one rule at a time: events in, Outcome out.

Every expectation comes from shared/SPEC.md §1 (the ``ARCH.*`` ids), from
shared/sources/pks_semantics.md (R1-R11, the consensus column of its §3 disagreement table, and
the QEMU probe observations it quotes), or, for the ``X86.*`` helper ids, from the base x86
behaviour their catalogue line in reference_model/rules.py states.  Each test names the rule it
checks and asserts that the outcome cites it.  The property tests compare the model with an
oracle written here from the R11 pseudocode, not with the model's own helpers.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference_model import Event, Machine, Outcome, get_policy

# Architectural numbers, spelled out here from SPEC.md's notation (not imported from the model).
P, W, U, RSVD, ID, PK = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
PKRS = 0x6E1
EFER = 0xC0000080
LSTAR = 0xC0000082
CPUID_PKS = 1 << 31  # CPUID.(7,0):ECX[31]  (ARCH.CPUID)
CPUID_PKU = 1 << 3  # CPUID.(7,0):ECX[3]
CR0_PE, CR0_ET, CR0_WP, CR0_PG = 1, 1 << 4, 1 << 16, 1 << 31
CR0_POWER_UP = 0x60000010  # ET | NW | CD
CR4_PAE, CR4_SMEP, CR4_SMAP, CR4_PKE, CR4_PKS = 1 << 5, 1 << 20, 1 << 21, 1 << 22, 1 << 24
EFER_LME, EFER_LMA, EFER_NXE = 1 << 8, 1 << 10, 1 << 11

SUP = 0x4000_0000  # a supervisor-mode address
USR = 0x5000_0000  # a user-mode address (U/S=1 at every level)


def ad(key: int) -> int:
    return 1 << (2 * key)


def wd(key: int) -> int:
    return 1 << (2 * key + 1)


class Cpu:
    """A bare-CPU machine (policy hw) with terse stepping."""

    def __init__(self) -> None:
        self.m: Machine = get_policy("hw").build()

    def __call__(self, kind: str, **fields: object) -> Outcome:
        level = "host" if kind == "set_cpuid" else "l1"
        return self.m.step(Event(kind, level=level, **fields))  # type: ignore[arg-type]

    def ok(self, kind: str, **fields: object) -> Outcome:
        out = self(kind, **fields)
        assert out.result == "ok", (kind, fields, out)
        return out

    def map(self, addr: int, **attrs: object) -> None:
        a: dict[str, object] = {"page_size": "4k", "present": True}
        a.update(attrs)
        self.ok("map", addr=addr, **a)

    def snap(self, name: str) -> int:
        return self.m.snapshot(f"vcpu0.{name}")


def cpu(*, pks: bool = True, pku: bool = True, long_mode: bool = True, wp: bool = True,
        cr4_pks: bool = True, cr4_pke: bool = False, extra_cr4: int = 0, nxe: bool = False) -> Cpu:
    """A CPU with the given enumeration, in IA-32e paging unless ``long_mode`` is false."""
    c = Cpu()
    c.ok("set_cpuid", cpuid_7_ecx=(CPUID_PKS if pks else 0) | (CPUID_PKU if pku else 0))
    if long_mode:
        c.ok("mov_cr4", value=CR4_PAE | (CR4_PKS if cr4_pks else 0) | (CR4_PKE if cr4_pke else 0) | extra_cr4)
        c.ok("wrmsr", msr=EFER, value=EFER_LME | (EFER_NXE if nxe else 0))
        c.ok("mov_cr0", value=CR0_ET | CR0_PE | CR0_PG | (CR0_WP if wp else 0))
        c.map(SUP, key=1)
        c.map(USR, key=1, user=True)
    return c


def has_rule(out: Outcome, rule: str) -> bool:
    return rule in out.rules


def assert_pf(out: Outcome, pfec: int, cr2: int, rule: str) -> None:
    assert out.result == "pf", out
    assert out.pfec == pfec, f"pfec {out.pfec:#x} != {pfec:#x} ({out.rules})"
    assert out.cr2 == cr2
    assert has_rule(out, rule), out.rules


def assert_ok(out: Outcome, rule: str) -> None:
    assert out.result == "ok", out
    assert out.pfec is None
    assert has_rule(out, rule), out.rules


def assert_gp(out: Outcome, rule: str) -> None:
    assert out.result == "gp", out
    assert has_rule(out, rule), out.rules


# ---------------------------------------------------------------------------------------------
# ARCH.CPUID, ARCH.CR4.RSVD, ARCH.CR4.EFFECT
# ---------------------------------------------------------------------------------------------

def test_arch_cpuid_leaf7_ecx_bit31_enumerates_pks() -> None:
    """ARCH.CPUID: CPUID.(EAX=7,ECX=0):ECX[31] is PKS (pks_semantics R1)."""
    for pks in (False, True):
        c = cpu(pks=pks, pku=False, long_mode=False)
        out = c("cpuid", cpuid_leaf=7, cpuid_subleaf=0)
        assert out.result == "ok"
        assert bool(out.value & CPUID_PKS) is pks
        assert has_rule(out, "ARCH.CPUID")


def test_arch_cpuid_gates_cr4_and_msr() -> None:
    """ARCH.CPUID: the enumeration is what ARCH.CR4.RSVD and ARCH.MSR.CPUID look at."""
    c = cpu(pks=True, long_mode=False)
    assert_ok(c("mov_cr4", value=CR4_PKS), "ARCH.CR4.RSVD")
    assert_ok(c("wrmsr", msr=PKRS, value=4), "ARCH.MSR.CPUID")
    c = cpu(pks=False, long_mode=False)
    assert_gp(c("mov_cr4", value=CR4_PKS), "ARCH.CR4.RSVD")
    assert_gp(c("wrmsr", msr=PKRS, value=4), "ARCH.MSR.CPUID")
    # A later CPUID change is what the gate reads (enumeration is state, not a build-time choice).
    c.ok("set_cpuid", cpuid_7_ecx=CPUID_PKS)
    assert_ok(c("wrmsr", msr=PKRS, value=4), "ARCH.MSR.CPUID")


def test_arch_cr4_rsvd_gp_without_cpuid_pks() -> None:
    """ARCH.CR4.RSVD: MOV to CR4 setting bit 24 without CPUID.PKS is #GP(0); CR4 unchanged."""
    c = cpu(pks=False, long_mode=False)
    assert_gp(c("mov_cr4", value=CR4_PKS), "ARCH.CR4.RSVD")
    assert c.snap("cr4") == 0


@pytest.mark.parametrize("mode", ["real", "protected-paging-off", "ia32e"])
def test_arch_cr4_rsvd_pks_settable_in_any_mode(mode: str) -> None:
    """ARCH.CR4.RSVD: no other PKS condition: CR4.PKS may be set with paging off (R2, observed in QEMU)."""
    c = cpu(long_mode=mode == "ia32e", cr4_pks=False)
    if mode == "protected-paging-off":
        c.ok("mov_cr0", value=CR0_ET | CR0_PE)
    base = CR4_PAE if mode == "ia32e" else 0
    out = c("mov_cr4", value=base | CR4_PKS)
    assert_ok(out, "ARCH.CR4.RSVD")
    assert c.snap("cr4") == base | CR4_PKS


def test_arch_cr4_effect_no_check_with_paging_off() -> None:
    """ARCH.CR4.EFFECT: CR4.PKS=1 but CR0.PG=0: nothing is translated, so nothing is key-checked."""
    c = cpu(long_mode=False)
    c.ok("mov_cr4", value=CR4_PKS)
    c.ok("wrmsr", msr=PKRS, value=0xFFFF_FFFF)  # every key AD|WD
    c.map(SUP, key=1)
    for access in ("read", "write", "rmw", "implicit"):
        out = c("access", addr=SUP, access=access)
        assert_ok(out, "ARCH.CR4.EFFECT")
        assert has_rule(out, "X86.PAGING.OFF")


def test_arch_cr4_effect_no_check_under_32bit_paging() -> None:
    """ARCH.CR4.EFFECT: 32-bit paging (CR0.PG=1, EFER.LMA=0) ignores CR4.PKS (R2)."""
    c = cpu(long_mode=False)
    c.ok("mov_cr4", value=CR4_PKS)
    c.ok("mov_cr0", value=CR0_ET | CR0_PE | CR0_PG | CR0_WP)
    c.ok("wrmsr", msr=PKRS, value=0xFFFF_FFFF)
    c.map(SUP, key=1)
    out = c("access", addr=SUP, access="write")
    assert_ok(out, "ARCH.CR4.EFFECT")


def test_arch_cr4_effect_no_check_under_pae_paging() -> None:
    """ARCH.CR4.EFFECT: PAE paging without LMA ignores CR4.PKS (key 0 page, every key AD|WD)."""
    c = cpu(long_mode=False)
    c.ok("mov_cr4", value=CR4_PAE | CR4_PKS)
    c.ok("mov_cr0", value=CR0_ET | CR0_PE | CR0_PG | CR0_WP)
    c.ok("wrmsr", msr=PKRS, value=0xFFFF_FFFF)
    c.map(SUP, key=0)
    out = c("access", addr=SUP, access="write")
    assert_ok(out, "ARCH.CR4.EFFECT")
    assert c.snap("efer") & EFER_LMA == 0


def test_arch_cr4_effect_check_applies_under_ia32e() -> None:
    """ARCH.CR4.EFFECT: the same setup with EFER.LMA=1 does fault (0x21, probe 01-style AD read)."""
    c = cpu()
    c.ok("wrmsr", msr=PKRS, value=ad(1))
    assert c.snap("efer") & EFER_LMA
    assert_pf(c("access", addr=SUP, access="read"), P | PK, SUP, "ARCH.RIGHTS")


# ---------------------------------------------------------------------------------------------
# ARCH.MSR.*
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["rdmsr", "wrmsr"])
def test_arch_msr_cpuid_gp_without_pks(kind: str) -> None:
    """ARCH.MSR.CPUID: RDMSR/WRMSR 0x6E1 without CPUID.PKS: #GP(0) (consensus; QEMU differs)."""
    c = cpu(pks=False, long_mode=False)
    assert_gp(c(kind, msr=PKRS, value=4), "ARCH.MSR.CPUID")


@pytest.mark.parametrize("value", [1 << 32, 1 << 63, 0xFFFF_FFFF_FFFF_FFFF, 0x1_0000_0004])
def test_arch_msr_rsvd_high_bits_gp(value: int) -> None:
    """ARCH.MSR.RSVD: WRMSR 0x6E1 with any of bits 63:32 set: #GP(0); PKRS keeps its value (R3)."""
    c = cpu(long_mode=False)
    c.ok("wrmsr", msr=PKRS, value=0x8)
    assert_gp(c("wrmsr", msr=PKRS, value=value), "ARCH.MSR.RSVD")
    assert c.ok("rdmsr", msr=PKRS).value == 0x8


def test_arch_msr_rsvd_any_32bit_value_accepted() -> None:
    """ARCH.MSR.RSVD: every 32-bit value is writable and reads back with EDX=0 (R3, observed 0xFFFFFFFF)."""
    c = cpu(long_mode=False)
    for value in (0, 1, 0xAAAA_AAA8, 0xFFFF_FFFF):
        assert_ok(c("wrmsr", msr=PKRS, value=value), "ARCH.MSR.RSVD")
        out = c("rdmsr", msr=PKRS)
        assert out.value == value
        assert out.value >> 32 == 0


@given(value=st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_arch_msr_rsvd_property(value: int) -> None:
    """ARCH.MSR.RSVD: WRMSR succeeds iff bits 63:32 are clear; RDMSR returns the last accepted value."""
    c = cpu(long_mode=False)
    c.ok("wrmsr", msr=PKRS, value=0x5)
    out = c("wrmsr", msr=PKRS, value=value)
    accepted = value >> 32 == 0
    assert out.result == ("ok" if accepted else "gp")
    assert has_rule(out, "ARCH.MSR.RSVD")
    assert c.ok("rdmsr", msr=PKRS).value == (value if accepted else 0x5)


@pytest.mark.parametrize("cpl", [1, 2, 3])
@pytest.mark.parametrize("kind", ["rdmsr", "wrmsr"])
def test_arch_msr_cpl_gp(kind: str, cpl: int) -> None:
    """ARCH.MSR.CPL: RDMSR/WRMSR at CPL>0: #GP(0), and a WRMSR does not change PKRS."""
    c = cpu()
    c.ok("wrmsr", msr=PKRS, value=0x4)
    assert_gp(c(kind, msr=PKRS, value=0x8, cpl=cpl), "ARCH.MSR.CPL")
    assert c.snap("pkrs") == 0x4


def test_arch_msr_indep_works_with_cr4_pks_clear_in_real_mode() -> None:
    """ARCH.MSR.INDEP: the MSR works with CR4.PKS=0 and paging off (R3: "usable independently of CR4.PKS")."""
    c = cpu(long_mode=False)
    assert c.snap("cr4") == 0 and c.snap("cr0") & CR0_PE == 0
    assert_ok(c("wrmsr", msr=PKRS, value=0xAAAA_AAA8), "ARCH.MSR.INDEP")
    out = c("rdmsr", msr=PKRS)
    assert_ok(out, "ARCH.MSR.INDEP")
    assert out.value == 0xAAAA_AAA8


def test_arch_msr_indep_write_takes_effect_without_flush() -> None:
    """ARCH.MSR.INDEP: a WRMSR takes effect for the next access, with no TLB flush in between."""
    c = cpu()
    assert_ok(c("access", addr=SUP, access="read"), "ARCH.RIGHTS")  # fills the TLB
    c.ok("wrmsr", msr=PKRS, value=ad(1))
    out = c("access", addr=SUP, access="read")
    assert_pf(out, P | PK, SUP, "ARCH.RIGHTS")
    assert out.undefined == ()
    c.ok("wrmsr", msr=PKRS, value=0)
    assert_ok(c("access", addr=SUP, access="read"), "ARCH.RIGHTS")


# ---------------------------------------------------------------------------------------------
# ARCH.RESET, ARCH.INIT
# ---------------------------------------------------------------------------------------------

def test_arch_reset_clears_pkrs() -> None:
    """ARCH.RESET: RESET sets PKRS to 0 (R4: observed after writing 0xAAAAAAA8 and a 0xCF9 reset)."""
    c = cpu()
    c.ok("wrmsr", msr=PKRS, value=0xAAAA_AAA8)
    assert_ok(c("reset"), "ARCH.RESET")
    assert c.snap("pkrs") == 0
    assert c.ok("rdmsr", msr=PKRS).value == 0


def test_arch_init_preserves_pkrs() -> None:
    """ARCH.INIT: INIT preserves PKRS (R4: the AP read back 0xAAAAAAA8 after INIT+SIPI)."""
    c = cpu()
    c.ok("wrmsr", msr=PKRS, value=0xAAAA_AAA8)
    assert_ok(c("init"), "ARCH.INIT")
    assert c.snap("pkrs") == 0xAAAA_AAA8
    assert c.ok("rdmsr", msr=PKRS).value == 0xAAAA_AAA8


# ---------------------------------------------------------------------------------------------
# ARCH.ADDR, ARCH.KEY
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("user", "user_upper", "supervisor"), [
    (True, True, False),  # U/S=1 everywhere: user address
    (True, False, True),  # probe 24: leaf U=1, PDPTE U=0 -> supervisor, PKRS applies
    (False, True, True),  # leaf U=0 only (the case Bochs HEAD gets wrong, R6)
    (False, False, True),
])
def test_arch_addr_user_iff_us_set_at_every_level(user: bool, user_upper: bool, supervisor: bool) -> None:
    """ARCH.ADDR: user address iff U/S=1 in every entry, leaf included; PKRS applies only otherwise."""
    c = cpu()
    c.ok("wrmsr", msr=PKRS, value=ad(1))
    c.map(0x8000_0000, key=1, user=user, user_upper=user_upper)
    out = c("access", addr=0x8000_0000, access="read")
    assert has_rule(out, "ARCH.ADDR")
    if supervisor:
        assert_pf(out, P | PK, 0x8000_0000, "ARCH.RIGHTS")  # 0x21, as observed in probe 24
    else:
        assert_ok(out, "ARCH.ADDR")


@pytest.mark.parametrize("size", ["4k", "2m", "1g"])
def test_arch_key_from_the_leaf_of_any_size(size: str) -> None:
    """ARCH.KEY: the key is the leaf's (PTE, 2 MiB PDE, 1 GiB PDPTE); probe 26: 2 MiB leaf key 1 -> 0x21."""
    base = 0x4000_0000
    addr = base + 0x1234 if size == "4k" else base + 0x20_1234
    c = cpu()
    c.map(addr, key=1, page_size=size)  # the model takes the leaf's base from the address
    c.ok("wrmsr", msr=PKRS, value=ad(1))
    out = c("access", addr=addr, access="read")
    assert_pf(out, P | PK, addr, "ARCH.KEY")
    # The same leaf with key 2: AD(1) no longer applies.
    c.map(addr, key=2, page_size=size)
    c.ok("mov_cr3", value=0)
    assert_ok(c("access", addr=addr, access="read"), "ARCH.KEY")


@given(key=st.integers(0, 15), other=st.integers(0, 15))
def test_arch_key_selects_its_own_bit_pair(key: int, other: int) -> None:
    """ARCH.KEY + ARCH.RIGHTS: AD(other) denies a page with ``key`` iff other == key."""
    c = cpu()
    c.map(SUP, key=key)
    c.ok("wrmsr", msr=PKRS, value=ad(other))
    out = c("access", addr=SUP, access="read")
    assert has_rule(out, "ARCH.KEY")
    assert (out.result == "pf") is (key == other)


# ---------------------------------------------------------------------------------------------
# ARCH.CHK.DATA, ARCH.CHK.REG
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("access", "pfec"), [
    ("read", P | PK),
    ("write", P | W | PK),
    ("rmw", P | W | PK),  # consensus W=1 for RMW (R9; QEMU reports 0x21)
    ("implicit", P | PK),  # R5: LDT read on `mov ds` faulted with 0x21
    ("implicit_write", P | W | PK),
])
def test_arch_chk_data_every_data_access_is_checked(access: str, pfec: int) -> None:
    """ARCH.CHK.DATA: reads, writes, RMW and implicit supervisor accesses are key-checked."""
    c = cpu()
    c.ok("wrmsr", msr=PKRS, value=ad(1))
    assert_pf(c("access", addr=SUP, access=access), pfec, SUP, "ARCH.RIGHTS")


@pytest.mark.parametrize("cpl", [0, 3])
def test_arch_chk_data_implicit_access_is_supervisor_mode_at_any_cpl(cpl: int) -> None:
    """ARCH.CHK.DATA: an implicit access at CPL3 is a supervisor-mode access: checked, and no U bit."""
    c = cpu()
    c.ok("wrmsr", msr=PKRS, value=ad(1))
    out = c("access", addr=SUP, access="implicit", cpl=cpl)
    assert_pf(out, P | PK, SUP, "ARCH.RIGHTS")
    assert not has_rule(out, "ARCH.PFEC.CPL3")


def test_arch_chk_data_fetches_never_checked() -> None:
    """ARCH.CHK.DATA: instruction fetches are never key-checked (probe 27: call into an AD|WD page)."""
    c = cpu(cr4_pke=True)
    c.ok("wrmsr", msr=PKRS, value=0xFFFF_FFFF)
    c.ok("wrpkru", value=0xFFFF_FFFF)
    assert_ok(c("access", addr=SUP, access="fetch"), "ARCH.CHK.DATA")
    assert_ok(c("access", addr=USR, access="fetch", cpl=3), "ARCH.CHK.DATA")


def test_arch_chk_reg_no_check_with_cr4_pks_clear() -> None:
    """ARCH.CHK.REG: supervisor address and CR4.PKS=0: no key check at all."""
    c = cpu(cr4_pks=False)
    c.ok("wrmsr", msr=PKRS, value=0xFFFF_FFFF)
    assert_ok(c("access", addr=SUP, access="write"), "ARCH.CHK.REG")


def test_arch_chk_reg_pkrs_never_applies_to_user_addresses() -> None:
    """ARCH.CHK.REG: PKRS never affects user addresses, at CPL0 or CPL3 (probes 22, 23, 41)."""
    c = cpu(cr4_pke=True)
    c.ok("wrmsr", msr=PKRS, value=0xFFFF_FFFF)
    for cpl in (0, 3):
        for access in ("read", "write"):
            assert_ok(c("access", addr=USR, access=access, cpl=cpl), "ARCH.CHK.REG")


def test_arch_chk_reg_pkru_never_applies_to_supervisor_addresses() -> None:
    """ARCH.CHK.REG: PKRU never affects supervisor addresses (probe 39)."""
    c = cpu(cr4_pke=True)
    c.ok("wrpkru", value=0xFFFF_FFFF)
    assert_ok(c("access", addr=SUP, access="write"), "ARCH.CHK.REG")


def test_arch_chk_reg_cpl_does_not_select_the_register() -> None:
    """ARCH.CHK.REG: a CPL0 access to a user address is checked against PKRU (probe 40: 0x21)."""
    c = cpu(cr4_pke=True)
    c.ok("wrpkru", value=ad(1))
    out = c("access", addr=USR, access="read", cpl=0)
    assert_pf(out, P | PK, USR, "ARCH.CHK.REG")
    # ... and a CPL3 access to it is checked against PKRU too, with U set.
    assert_pf(c("access", addr=USR, access="read", cpl=3), P | U | PK, USR, "ARCH.RIGHTS")


def test_arch_chk_reg_user_address_unchecked_without_cr4_pke() -> None:
    """ARCH.CHK.REG: user address and CR4.PKE=0: no key check (PKRS does not step in)."""
    c = cpu(cr4_pke=False)
    c.ok("wrmsr", msr=PKRS, value=0xFFFF_FFFF)
    assert_ok(c("access", addr=USR, access="write", cpl=3), "ARCH.CHK.REG")


# ---------------------------------------------------------------------------------------------
# ARCH.RIGHTS
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("pkrs", "wp", "access", "pfec"), [
    (ad(1), True, "read", P | PK),  # probe 01-style
    (ad(1), False, "read", P | PK),  # probe 11: AD regardless of WP
    (ad(1), False, "write", P | W | PK),  # probe 12
    (wd(1), True, "write", P | W | PK),  # probe 09
    (wd(1), False, "write", None),  # probe 10: WD ignored for supervisor writes with WP=0
    (wd(1), True, "read", None),  # WD never blocks reads
    (wd(1), True, "rmw", P | W | PK),
    (ad(1) | wd(1), False, "read", P | PK),
    (0, True, "write", None),
])
def test_arch_rights_table(pkrs: int, wp: bool, access: str, pfec: int | None) -> None:
    """ARCH.RIGHTS: deny = AD or (WD and write and (WP or user-mode)) for supervisor accesses (R8, T)."""
    c = cpu(wp=wp)
    c.ok("wrmsr", msr=PKRS, value=pkrs)
    out = c("access", addr=SUP, access=access)
    if pfec is None:
        assert_ok(out, "ARCH.RIGHTS")
    else:
        assert_pf(out, pfec, SUP, "ARCH.RIGHTS")
        assert has_rule(out, "ARCH.PFEC.PK")


def test_arch_rights_wd_with_wp0_on_read_only_page_no_fault() -> None:
    """ARCH.RIGHTS: CR0.WP=0, supervisor write to a read-only page with WD: no fault (probe 21)."""
    c = cpu(wp=False)
    c.map(SUP, key=1, writable=False)
    c.ok("wrmsr", msr=PKRS, value=wd(1))
    assert_ok(c("access", addr=SUP, access="write"), "ARCH.RIGHTS")


# ---------------------------------------------------------------------------------------------
# ARCH.PFEC.TERMINAL, ARCH.PFEC.PK, ARCH.PFEC.CPL3
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("access", "cpl", "pfec"), [("read", 0, 0x00), ("write", 0, W), ("read", 3, U), ("write", 3, W | U)])
def test_arch_pfec_terminal_not_present_no_pk(access: str, cpl: int, pfec: int) -> None:
    """ARCH.PFEC.TERMINAL: a not-present fault comes first and never sets PK (probe 38)."""
    c = cpu()
    c.map(SUP, key=1, present=False)
    c.ok("wrmsr", msr=PKRS, value=0xFFFF_FFFF)
    out = c("access", addr=SUP, access=access, cpl=cpl)
    assert_pf(out, pfec, SUP, "ARCH.PFEC.TERMINAL")
    assert has_rule(out, "X86.PAGE.NP")


@pytest.mark.parametrize(("access", "pfec"), [("read", 0x09), ("write", 0x0B)])
def test_arch_pfec_terminal_reserved_bit_has_p_and_no_pk(access: str, pfec: int) -> None:
    """ARCH.PFEC.TERMINAL: an RSVD fault has P=1 (0x09 for a read) and no PK (probe 37; QEMU's 0x08 is its bug)."""
    c = cpu()
    c.map(SUP, key=1, rsvd=True)
    c.ok("wrmsr", msr=PKRS, value=0xFFFF_FFFF)
    assert_pf(c("access", addr=SUP, access=access), pfec, SUP, "ARCH.PFEC.TERMINAL")


def test_arch_pfec_terminal_unmapped_address() -> None:
    """ARCH.PFEC.TERMINAL / X86.PAGE.NP: an address with no mapping at all faults with P=0."""
    c = cpu()
    assert_pf(c("access", addr=0x7777_0000, access="read"), 0, 0x7777_0000, "X86.PAGE.NP")


def test_arch_pfec_pk_cr2_is_the_exact_linear_address() -> None:
    """ARCH.PFEC.PK: CR2 = the faulting linear address (observed 0x40201234 inside a 2 MiB page)."""
    c = cpu()
    c.map(0x4020_0000, key=1, page_size="2m")
    c.ok("wrmsr", msr=PKRS, value=ad(1))
    assert_pf(c("access", addr=0x4020_1234, access="read"), P | PK, 0x4020_1234, "ARCH.PFEC.PK")


@pytest.mark.parametrize(("pkrs", "pfec", "rule"), [
    (wd(1), P | W | PK, "ARCH.PFEC.PK"),  # probe 19: 0x23
    (ad(1), P | W | PK, "ARCH.PFEC.PK"),  # probe 20: 0x23
    (0, P | W, "X86.PAGE.RW"),  # probe 18: 0x03
])
def test_arch_pfec_pk_set_even_with_rw_violation(pkrs: int, pfec: int, rule: str) -> None:
    """ARCH.PFEC.PK: write to a read-only supervisor page with WP=1: PK set whenever the key condition holds."""
    c = cpu(wp=True)
    c.map(SUP, key=1, writable=False)
    c.ok("wrmsr", msr=PKRS, value=pkrs)
    out = c("access", addr=SUP, access="write")
    assert_pf(out, pfec, SUP, rule)
    assert has_rule(out, "X86.PAGE.RW")


@pytest.mark.parametrize(("access", "pkrs", "wp", "pfec"), [
    ("read", ad(1), True, P | U | PK),  # 0x25
    ("read", ad(1), False, P | U | PK),  # 0x25
    ("write", wd(1), True, P | W | U | PK),  # 0x27
    ("write", wd(1), False, P | W | U | PK),  # 0x27: user-mode access makes WD apply without WP
    ("read", wd(1), True, P | U),  # WD alone does not touch reads: plain U/S fault 0x05
    ("read", 0, True, P | U),  # 0x05
    ("write", 0, False, P | W | U),  # 0x07
])
def test_arch_pfec_cpl3_access_to_supervisor_address(access: str, pkrs: int, wp: bool, pfec: int) -> None:
    """ARCH.PFEC.CPL3: U/S fault, plus PK where the key condition holds (consensus 0x25/0x27; QEMU 0x05/0x07)."""
    c = cpu(wp=wp)
    c.ok("wrmsr", msr=PKRS, value=pkrs)
    out = c("access", addr=SUP, access=access, cpl=3)
    assert_pf(out, pfec, SUP, "ARCH.PFEC.CPL3")
    assert has_rule(out, "X86.PAGE.US")
    assert has_rule(out, "ARCH.PFEC.PK") is bool(pfec & PK)


# ---------------------------------------------------------------------------------------------
# ARCH.TLB
# ---------------------------------------------------------------------------------------------

def test_arch_tlb_cr4_pks_change_without_flush_is_undefined() -> None:
    """ARCH.TLB: after CR4.PKS 0->1, an access to a page cached before is implementation-defined."""
    c = cpu(cr4_pks=False)
    c.ok("wrmsr", msr=PKRS, value=ad(1))
    assert_ok(c("access", addr=SUP, access="read"), "ARCH.CHK.REG")  # fills the TLB, no check yet
    out = c("mov_cr4", value=CR4_PAE | CR4_PKS)
    assert_ok(out, "ARCH.TLB")
    out = c("access", addr=SUP, access="read")
    assert has_rule(out, "ARCH.TLB")
    assert set(out.undefined) >= {"result", "pfec", "cr2"}


@pytest.mark.parametrize("flush", ["mov_cr3", "invlpg"])
def test_arch_tlb_flush_makes_the_new_setting_apply(flush: str) -> None:
    """ARCH.TLB: after a CR3 write or INVLPG the new CR4.PKS applies (R2 recommendation)."""
    c = cpu(cr4_pks=False)
    c.ok("wrmsr", msr=PKRS, value=ad(1))
    c.ok("access", addr=SUP, access="read")
    c.ok("mov_cr4", value=CR4_PAE | CR4_PKS)
    assert_ok(c(flush, value=0, addr=SUP), "ARCH.TLB")
    out = c("access", addr=SUP, access="read")
    assert out.undefined == ()
    assert_pf(out, P | PK, SUP, "ARCH.RIGHTS")


def test_arch_tlb_untouched_page_is_defined() -> None:
    """ARCH.TLB: a page not accessed before the CR4 change has no stale entry: the result is defined."""
    c = cpu(cr4_pks=False)
    c.ok("wrmsr", msr=PKRS, value=ad(1))
    c.ok("mov_cr4", value=CR4_PAE | CR4_PKS)
    out = c("access", addr=SUP, access="read")
    assert out.undefined == ()
    assert_pf(out, P | PK, SUP, "ARCH.RIGHTS")


# ---------------------------------------------------------------------------------------------
# Property tests against an oracle written from sources/pks_semantics.md R11
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    cr4_pks: bool
    cr4_pke: bool
    wp: bool
    pkrs: int
    pkru: int
    key: int
    leaf_user: bool
    upper_user: bool
    writable: bool
    access: str
    cpl: int


def oracle(case: Case) -> tuple[str, int | None]:
    """R11's ``pks_pk_violation`` and ``pfec`` (with the ordinary U/S and R/W checks), as (result, pfec).

    Paging is IA-32e here, with SMEP/SMAP/NXE off, so only U/S and R/W+WP ordinary violations exist.
    Implicit accesses are supervisor-mode accesses (R5), implicit_write being a write.
    """
    kind = {"implicit": "read", "implicit_write": "write"}.get(case.access, case.access)
    user_mode = case.cpl == 3 and case.access not in ("implicit", "implicit_write")
    is_write = kind in ("write", "rmw")
    user_addr = case.leaf_user and case.upper_user
    # pks_pk_violation (cr0_pg = efer_lma = 1)
    pk = False
    if kind != "fetch" and (case.cr4_pke if user_addr else case.cr4_pks):
        pkr = case.pkru if user_addr else case.pkrs
        a, w = (pkr >> 2 * case.key) & 1, (pkr >> (2 * case.key + 1)) & 1
        pk = bool(a or (w and is_write and (case.wp or user_mode)))
    ordinary = (user_mode and not user_addr) or (is_write and not case.writable and (case.wp or user_mode))
    if not (pk or ordinary):
        return "ok", None
    e = 0x01
    e |= 0x02 if is_write else 0
    e |= 0x04 if user_mode else 0
    e |= 0x20 if pk else 0
    return "pf", e


u32 = st.integers(0, 0xFFFF_FFFF)
cases = st.builds(
    Case, cr4_pks=st.booleans(), cr4_pke=st.booleans(), wp=st.booleans(), pkrs=u32, pkru=u32,
    key=st.integers(0, 15), leaf_user=st.booleans(), upper_user=st.booleans(), writable=st.booleans(),
    access=st.sampled_from(["read", "write", "rmw", "fetch", "implicit", "implicit_write"]), cpl=st.integers(0, 3),
)


def run_case(case: Case) -> Outcome:
    c = cpu(wp=case.wp, cr4_pks=case.cr4_pks, cr4_pke=case.cr4_pke)
    c.ok("wrmsr", msr=PKRS, value=case.pkrs)
    if case.cr4_pke:
        c.ok("wrpkru", value=case.pkru)
    addr = 0x6000_0ABC
    c.map(addr & ~0xFFF, key=case.key, user=case.leaf_user, user_upper=case.upper_user, writable=case.writable)
    return c("access", addr=addr, access=case.access, cpl=case.cpl)


FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(case=cases)
def test_rights_match_r11_oracle(case: Case) -> None:
    """ARCH.RIGHTS/ARCH.CHK.REG/ARCH.PFEC.PK/ARCH.PFEC.CPL3 together match R11 for any state and access."""
    out = run_case(case)
    result, pfec = oracle(case)
    assert (out.result, out.pfec) == (result, pfec), (case, out)
    if result == "pf":
        assert out.cr2 == 0x6000_0ABC
    if pfec is not None and pfec & PK:
        assert has_rule(out, "ARCH.PFEC.PK") and has_rule(out, "ARCH.RIGHTS")
    if case.cpl == 3 and case.access not in ("implicit", "implicit_write") and not (case.leaf_user and case.upper_user):
        assert has_rule(out, "ARCH.PFEC.CPL3")


def test_rights_match_r11_oracle_exhaustively_per_key() -> None:
    """ARCH.RIGHTS: every AD/WD pair x WP x access x CPL x R/W x address type, against the R11 oracle.

    The random test above samples the full state; this one walks the small space where the rules
    differ (rare corners such as a CPL3 write with WD and WP=0 are hit every time).
    """
    checked = 0
    for bits in range(4):
        pkr = bits << 2 * 5  # key 5
        for wp in (False, True):
            for access in ("read", "write", "rmw", "fetch", "implicit", "implicit_write"):
                for cpl in (0, 3):
                    for writable in (False, True):
                        for leaf_user, upper_user in ((True, True), (False, True), (True, False)):
                            case = Case(True, True, wp, pkr, pkr, 5, leaf_user, upper_user, writable, access, cpl)
                            out = run_case(case)
                            assert (out.result, out.pfec) == oracle(case), (case, out)
                            checked += 1
    assert checked == 4 * 2 * 6 * 2 * 2 * 3


@FAST
@given(case=cases, other=u32)
def test_pku_and_pks_are_independent(case: Case, other: int) -> None:
    """ARCH.CHK.REG: PKRU never changes the outcome for a supervisor address, PKRS never for a user one (R9)."""
    user_addr = case.leaf_user and case.upper_user
    if user_addr:
        changed = Case(**{**case.__dict__, "pkrs": other})
    else:
        changed = Case(**{**case.__dict__, "pkru": other})
    a, b = run_case(case), run_case(changed)
    assert (a.result, a.pfec, a.cr2) == (b.result, b.pfec, b.cr2)


@FAST
@given(case=cases, fault=st.sampled_from(["not-present", "rsvd"]))
def test_terminal_faults_never_carry_pk(case: Case, fault: str) -> None:
    """ARCH.PFEC.TERMINAL: NP and RSVD faults win over every key setting and never set PK; RSVD has P=1."""
    c = cpu(wp=case.wp, cr4_pks=case.cr4_pks, cr4_pke=case.cr4_pke)
    c.ok("wrmsr", msr=PKRS, value=case.pkrs)
    if case.cr4_pke:
        c.ok("wrpkru", value=case.pkru)
    c.map(SUP, key=case.key, user=case.leaf_user, user_upper=case.upper_user, writable=case.writable,
          present=fault != "not-present", rsvd=fault == "rsvd")
    out = c("access", addr=SUP, access=case.access, cpl=case.cpl)
    assert out.result == "pf"
    assert has_rule(out, "ARCH.PFEC.TERMINAL")
    assert not out.pfec & PK
    if fault == "rsvd":
        assert out.pfec & (P | RSVD) == P | RSVD
    else:
        assert not out.pfec & P


# ---------------------------------------------------------------------------------------------
# X86.* helper rules (base architecture, as stated in reference_model/rules.py)
# ---------------------------------------------------------------------------------------------

def test_x86_paging_off_no_page_fault() -> None:
    """X86.PAGING.OFF: with CR0.PG=0 nothing is translated: even an unmapped address is fine."""
    c = cpu(long_mode=False)
    for access in ("read", "write", "fetch"):
        assert_ok(c("access", addr=0x1234_5000, access=access), "X86.PAGING.OFF")


def test_x86_page_np() -> None:
    """X86.PAGE.NP: a not-present page faults with P=0 (W/U as the access)."""
    c = cpu()
    c.map(SUP, present=False)
    assert_pf(c("access", addr=SUP + 8, access="write"), W, SUP + 8, "X86.PAGE.NP")


@pytest.mark.parametrize(("access", "pfec"), [("read", P | U), ("write", P | W | U), ("fetch", P | U)])
def test_x86_page_us(access: str, pfec: int) -> None:
    """X86.PAGE.US: a user-mode access to a supervisor address is a protection fault (0x05/0x07)."""
    c = cpu(cr4_pks=False)
    assert_pf(c("access", addr=SUP, access=access, cpl=3), pfec, SUP, "X86.PAGE.US")


@pytest.mark.parametrize(("cpl", "wp", "pfec"), [(0, True, P | W), (0, False, None), (3, False, P | W | U), (3, True, P | W | U)])
def test_x86_page_rw(cpl: int, wp: bool, pfec: int | None) -> None:
    """X86.PAGE.RW: a write to a read-only page faults for user-mode accesses, and for supervisor ones if WP=1."""
    c = cpu(wp=wp, cr4_pks=False)
    c.map(USR, user=True, writable=False)
    out = c("access", addr=USR, access="write", cpl=cpl)
    if pfec is None:
        assert out.result == "ok", out
    else:
        assert_pf(out, pfec, USR, "X86.PAGE.RW")


def test_x86_page_nx() -> None:
    """X86.PAGE.NX: a fetch from an XD page with EFER.NXE=1 faults with P|I/D (0x11); data reads are fine."""
    c = cpu(nxe=True)
    c.map(SUP, nx=True)
    assert_pf(c("access", addr=SUP, access="fetch"), P | ID, SUP, "X86.PAGE.NX")
    assert c("access", addr=SUP, access="read").result == "ok"


def test_x86_page_nx_without_nxe_is_a_reserved_bit() -> None:
    """X86.PAGE.NX: with EFER.NXE=0, XD is a reserved bit in IA-32e paging: RSVD fault (P|RSVD), no I/D."""
    c = cpu(nxe=False)
    c.map(SUP, nx=True)
    out = c("access", addr=SUP, access="read")
    assert_pf(out, P | RSVD, SUP, "X86.PAGE.NX")
    assert has_rule(out, "ARCH.PFEC.TERMINAL")


def test_x86_page_smep() -> None:
    """X86.PAGE.SMEP: a supervisor fetch from a user address with CR4.SMEP=1 faults (I/D set by SMEP)."""
    c = cpu(extra_cr4=CR4_SMEP)
    assert_pf(c("access", addr=USR, access="fetch"), P | ID, USR, "X86.PAGE.SMEP")
    assert c("access", addr=USR, access="read").result == "ok"


def test_x86_page_smap() -> None:
    """X86.PAGE.SMAP: a supervisor data access to a user address with CR4.SMAP=1 faults (0x01)."""
    c = cpu(extra_cr4=CR4_SMAP)
    assert_pf(c("access", addr=USR, access="read"), P, USR, "X86.PAGE.SMAP")
    assert c("access", addr=USR, access="read", cpl=3).result == "ok"


def test_x86_page_smap_and_pku_both_report_pk() -> None:
    """X86.PAGE.SMAP with PKU: PK is computed irrespective of SMAP (R9), so the PFEC carries PK (0x21)."""
    c = cpu(extra_cr4=CR4_SMAP, cr4_pke=True)
    c.ok("wrpkru", value=ad(1))
    out = c("access", addr=USR, access="read")
    assert_pf(out, P | PK, USR, "X86.PAGE.SMAP")
    assert has_rule(out, "ARCH.PFEC.PK")


def test_x86_page_pae_key_bits_reserved_outside_ia32e() -> None:
    """X86.PAGE.PAE_KEY: under PAE paging, PTE bits 62:59 are reserved: a key != 0 is an RSVD fault (0x09)."""
    c = cpu(long_mode=False)
    c.ok("mov_cr4", value=CR4_PAE | CR4_PKS)
    c.ok("mov_cr0", value=CR0_ET | CR0_PE | CR0_PG | CR0_WP)
    c.map(SUP, key=3)
    out = c("access", addr=SUP, access="read")
    assert_pf(out, P | RSVD, SUP, "X86.PAGE.PAE_KEY")
    assert not out.pfec & PK


@pytest.mark.parametrize(("kind", "fields"), [
    ("mov_cr0", {"value": CR0_ET | CR0_PE}),
    ("mov_cr3", {"value": 0x1000}),
    ("mov_cr4", {"value": CR4_PKS}),
    ("invlpg", {"addr": SUP}),
])
def test_x86_cr_cpl(kind: str, fields: dict[str, int]) -> None:
    """X86.CR.CPL: MOV to a control register (and INVLPG) at CPL>0: #GP(0)."""
    c = cpu(long_mode=False)
    assert_gp(c(kind, cpl=3, **fields), "X86.CR.CPL")
    assert c.snap("cr4") == 0 and c.snap("cr3") == 0


@pytest.mark.parametrize("value", [CR4_PKE, 1 << 15, 1 << 32])
def test_x86_cr4_rsvd(value: int) -> None:
    """X86.CR4.RSVD: PKE without CPUID.PKU, or a reserved CR4 bit: #GP(0) (not the PKS rule)."""
    c = cpu(pku=False, long_mode=False)
    out = c("mov_cr4", value=value)
    assert_gp(out, "X86.CR4.RSVD")
    assert not has_rule(out, "ARCH.CR4.RSVD")


def test_x86_mode_rules() -> None:
    """X86.MODE: PG needs PE; PG with LME needs PAE; LMA = LME and PG; no clearing PAE under LMA."""
    c = cpu(long_mode=False)
    assert_gp(c("mov_cr0", value=CR0_ET | CR0_PG), "X86.MODE")
    c.ok("wrmsr", msr=EFER, value=EFER_LME)
    assert_gp(c("mov_cr0", value=CR0_ET | CR0_PE | CR0_PG), "X86.MODE")  # no CR4.PAE
    c.ok("mov_cr4", value=CR4_PAE)
    assert_ok(c("mov_cr0", value=CR0_ET | CR0_PE | CR0_PG), "X86.MODE")
    assert c.snap("efer") == EFER_LME | EFER_LMA
    assert c.ok("rdmsr", msr=EFER).value == EFER_LME | EFER_LMA
    assert_gp(c("mov_cr4", value=0), "X86.MODE")  # PAE cannot be cleared in IA-32e mode
    assert_gp(c("wrmsr", msr=EFER, value=0), "X86.MODE")  # LME cannot change while paging
    c.ok("mov_cr0", value=CR0_ET | CR0_PE)
    assert c.snap("efer") == EFER_LME  # LMA follows PG


def test_x86_mode_efer_reserved_bits() -> None:
    """X86.MODE: only SCE/LME/NXE are writable in EFER; another bit is #GP(0)."""
    c = cpu(long_mode=False)
    assert_gp(c("wrmsr", msr=EFER, value=1 << 20), "X86.MODE")


def pae_paging_cpu() -> Cpu:
    """PAE paging (CR0.PG=1, CR4.PAE=1, EFER.LME=0), whose PDPTEs live in registers."""
    c = cpu(long_mode=False)
    c.ok("mov_cr4", value=CR4_PAE)
    c.ok("mov_cr0", value=CR0_ET | CR0_PE | CR0_PG | CR0_WP)
    return c


def test_x86_pae_pdpte_reload_on_cr3_checks_reserved_bits() -> None:
    """X86.PAE.PDPTE: MOV CR3 under PAE paging loads the PDPTEs; a reserved bit in them is #GP(0)."""
    c = pae_paging_cpu()
    assert c("write_pdpte", rsvd=True).result == "ok"  # only memory changes: nothing loaded yet
    assert_gp(c("mov_cr3", value=0x2000), "X86.PAE.PDPTE")
    assert c.snap("cr3") == 0
    c.ok("write_pdpte", rsvd=False)
    assert c("mov_cr3", value=0x2000).result == "ok"
    assert c.snap("cr3") == 0x2000


def test_x86_pae_pdpte_not_reloaded_by_cr4_pks() -> None:
    """X86.PAE.PDPTE: CR4.PKS is not a PDPTE-reload bit (R2, Jim Mattson / SDM 4.4.1); CR4.PGE is."""
    c = pae_paging_cpu()
    c.ok("write_pdpte", rsvd=True)
    assert c("mov_cr4", value=CR4_PAE | CR4_PKS).result == "ok"
    assert_gp(c("mov_cr4", value=CR4_PAE | CR4_PKS | (1 << 7)), "X86.PAE.PDPTE")  # CR4.PGE


def test_x86_pae_pdpte_not_loaded_in_ia32e_mode() -> None:
    """X86.PAE.PDPTE: IA-32e paging has no PDPTE registers: MOV CR3 does not check them."""
    c = cpu()
    c.ok("write_pdpte", rsvd=True)
    assert c("mov_cr3", value=0x3000).result == "ok"


@pytest.mark.parametrize("kind", ["rdmsr", "wrmsr"])
def test_x86_msr_unknown(kind: str) -> None:
    """X86.MSR.UNKNOWN: an MSR the CPU does not implement: #GP(0)."""
    c = cpu(long_mode=False)
    assert_gp(c(kind, msr=0x4000_1234, value=1), "X86.MSR.UNKNOWN")


def test_x86_msr_counter() -> None:
    """X86.MSR.COUNTER: the TSC (MSR 0x10, SDM 17.17) exists at CPL0; its value is the counter's, not a stored one."""
    c = cpu(long_mode=False)
    out = c("rdmsr", msr=0x10)
    assert_ok(out, "X86.MSR.COUNTER")
    assert out.value is None  # the model does not predict a running counter
    assert_ok(c("wrmsr", msr=0x10, value=0x1000), "X86.MSR.COUNTER")
    assert_gp(c("rdmsr", msr=0x10, cpl=3), "ARCH.MSR.CPL")


def test_x86_msr_store() -> None:
    """X86.MSR.STORE: a plain MSR reads back the last value written (full 64 bits)."""
    c = cpu(long_mode=False)
    assert_ok(c("wrmsr", msr=LSTAR, value=0xFFFF_8000_0000_1000), "X86.MSR.STORE")
    out = c("rdmsr", msr=LSTAR)
    assert_ok(out, "X86.MSR.STORE")
    assert out.value == 0xFFFF_8000_0000_1000


@pytest.mark.parametrize("msr", [0xC0000102, 0xC0000082, 0xC0000083, 0x175, 0x176])
@pytest.mark.parametrize(("value", "ok"), [(0x0000_8000_0000_0000, False), (0x7FFF_FFFF_FFFF, True),
                                           (0xFFFF_8000_0000_0000, True), (0xFFFF_0000_0000_0000, False)])
def test_x86_msr_canonical(msr: int, value: int, ok: bool) -> None:
    """X86.MSR.CANONICAL: an address MSR takes only canonical (48-bit sign-extended) values."""
    c = cpu(long_mode=False)
    out = c("wrmsr", msr=msr, value=value)
    if ok:
        assert_ok(out, "X86.MSR.STORE")
    else:
        assert_gp(out, "X86.MSR.CANONICAL")
        assert c("rdmsr", msr=msr).value == 0  # the failed write changed nothing


def test_x86_pkru() -> None:
    """X86.PKRU: WRPKRU/RDPKRU need CR4.PKE=1 (else #UD); ECX=EDX=0 (value bits 63:32) else #GP."""
    c = cpu(long_mode=False)
    assert c("wrpkru", value=4).result == "ud"
    out = c("rdpkru")
    assert out.result == "ud" and has_rule(out, "X86.PKRU")
    c.ok("mov_cr4", value=CR4_PKE)
    assert_ok(c("wrpkru", value=0x5555_5554), "X86.PKRU")
    assert c("rdpkru").value == 0x5555_5554
    assert_gp(c("wrpkru", value=1 << 32), "X86.PKRU")
    assert c.snap("pkru") == 0x5555_5554


@pytest.mark.parametrize("kind", ["init", "reset"])
def test_x86_init_power_up_registers(kind: str) -> None:
    """X86.INIT: INIT and RESET put CR0/CR3/CR4/EFER back to power-up values (CR0 = 0x60000010)."""
    c = cpu()
    c.ok("mov_cr3", value=0x5000)
    out = c(kind)
    assert_ok(out, "X86.INIT")
    assert (c.snap("cr0"), c.snap("cr3"), c.snap("cr4"), c.snap("efer")) == (CR0_POWER_UP, 0, 0, 0)
    assert c("access", addr=0x9999_0000, access="read").result == "ok"  # paging is off again


def test_x86_init_flushes_the_tlb() -> None:
    """X86.INIT: the TLB is flushed, so a page cached before INIT is not stale after re-entering IA-32e."""
    c = cpu(cr4_pks=False)
    c.ok("wrmsr", msr=PKRS, value=ad(1))
    c.ok("access", addr=SUP, access="read")
    c.ok("init")
    c.ok("mov_cr4", value=CR4_PAE | CR4_PKS)
    c.ok("wrmsr", msr=EFER, value=EFER_LME)
    c.ok("mov_cr0", value=CR0_ET | CR0_PE | CR0_PG | CR0_WP)
    out = c("access", addr=SUP, access="read")
    assert out.undefined == ()
    assert_pf(out, P | PK, SUP, "ARCH.RIGHTS")  # ARCH.INIT kept PKRS


def test_x86_sipi_starts_an_ap_after_init_and_pkrs_survives() -> None:
    """X86.SIPI: after INIT an AP runs nothing (hang) until a SIPI; INIT kept its PKRS (ARCH.INIT); the BSP
    runs on after INIT and ignores a SIPI."""
    m = get_policy("hw").build()

    def on(vcpu: int, kind: str, **f: object) -> Outcome:
        return m.step(Event(kind, vcpu=vcpu, level="host" if kind in ("set_cpuid", "init", "sipi") else "l1",
                            **f))  # type: ignore[arg-type]

    for v in (0, 1):
        assert on(v, "set_cpuid", cpuid_7_ecx=CPUID_PKS).result == "ok"
        assert on(v, "wrmsr", msr=PKRS, value=ad(1)).result == "ok"
        assert on(v, "init").result == "ok"
    out = on(1, "rdmsr", msr=PKRS)
    assert out.result == "hang" and has_rule(out, "X86.SIPI")
    assert on(0, "rdmsr", msr=PKRS).value == ad(1)  # the BSP is not waiting
    assert has_rule(on(0, "sipi", value=0x9A), "X86.SIPI")  # ignored
    assert on(0, "rdmsr", msr=PKRS).value == ad(1)
    assert_ok(on(1, "sipi", value=0x9A), "X86.SIPI")
    assert on(1, "rdmsr", msr=PKRS).value == ad(1)  # ARCH.INIT: preserved across INIT-SIPI
    assert on(1, "sipi", value=0x9A).result == "ok"  # the second SIPI of INIT-SIPI-SIPI is ignored
    assert on(1, "rdmsr", msr=PKRS).value == ad(1)


def test_x86_rmw_load_marks_faults_of_the_load_half() -> None:
    """X86.RMW.LOAD: a faulting RMW whose read alone faults (AD) cites it; a WD-only or read-only fault does not."""
    c = cpu()
    c.map(0x4000_2000, key=1, writable=False)
    c.ok("wrmsr", msr=PKRS, value=ad(1))
    out = c("access", addr=SUP, access="rmw")
    assert_pf(out, P | W | PK, SUP, "X86.RMW.LOAD")
    c.ok("wrmsr", msr=PKRS, value=wd(1))
    out = c("access", addr=SUP, access="rmw")
    assert_pf(out, P | W | PK, SUP, "ARCH.RIGHTS")
    assert not has_rule(out, "X86.RMW.LOAD")
    c.ok("wrmsr", msr=PKRS, value=0)
    out = c("access", addr=0x4000_2000, access="rmw")
    assert_pf(out, P | W, 0x4000_2000, "X86.PAGE.RW")
    assert not has_rule(out, "X86.RMW.LOAD")


def test_x86_smm_clears_paging_and_cr4_and_rsm_restores() -> None:
    """X86.SMM: SMM entry clears CR0.PE/PG, CR4 and EFER (SDM Table 34-4), so PKS is off in SMM;
    PKRS is not in the state-save area and keeps its value; RSM restores the registers."""
    c = cpu()
    c.ok("wrmsr", msr=PKRS, value=ad(1))
    assert_pf(c("access", addr=SUP, access="read"), P | PK, SUP, "ARCH.RIGHTS")
    assert_ok(c("smi"), "X86.SMM")
    assert (c.snap("cr0") & (CR0_PE | CR0_PG), c.snap("cr4"), c.snap("efer")) == (0, 0, 0)
    assert c.snap("pkrs") == ad(1)
    assert c("access", addr=SUP, access="read").result == "ok"  # no paging, no key check
    c.ok("wrmsr", msr=PKRS, value=0)  # the SMM handler may write PKRS (ARCH.MSR.INDEP)
    assert_ok(c("rsm"), "X86.SMM")
    assert (c.snap("cr0"), c.snap("cr4"), c.snap("efer")) == (
        CR0_ET | CR0_PE | CR0_PG | CR0_WP, CR4_PAE | CR4_PKS, EFER_LME | EFER_LMA)
    assert c.snap("pkrs") == 0  # what the handler left, not restored
    assert c("access", addr=SUP, access="read").result == "ok"


def test_x86_smm_rsm_outside_smm_is_ud() -> None:
    """X86.SMM: RSM outside SMM is #UD."""
    out = cpu()("rsm")
    assert out.result == "ud" and has_rule(out, "X86.SMM")


def l2_running(exit_load: bool) -> Cpu:
    """L1 in IA-32e paging has launched L2 (vmcs12 host PKRS 0x30, exit control as given)."""
    c = cpu()
    c.ok("wrmsr", msr=PKRS, value=ad(1))
    if exit_load:
        c.ok("vmwrite", field=0x400C, value=1 << 29)  # VM-exit controls: load IA32_PKRS
        c.ok("vmwrite", field=0x2C06, value=0x30)  # host IA32_PKRS
    c.ok("vmlaunch")
    return c


def test_x86_init_vmx_nonroot_init_is_a_vm_exit() -> None:
    """X86.INIT.VMX: INIT in VMX non-root operation is a VM exit with basic reason 3 (SDM 25.2) that
    loads host state; it is not a reset: L1's registers are untouched and PKRS comes from the host field."""
    c = l2_running(exit_load=True)
    out = c.m.step(Event("init", level="host"))
    assert (out.result, out.exit_reason) == ("vmexit", 3) and has_rule(out, "X86.INIT.VMX")
    assert c.snap("nested.guest_mode") == 0
    assert c.snap("cr0") & CR0_PG and c.snap("cr4") & CR4_PKS  # no reset
    assert c.snap("pkrs") == 0x30  # VMX.EXIT.LOAD
    assert c("init").rules[0] == "ARCH.INIT"  # in VMX root it is INIT again


@pytest.mark.parametrize(("kind", "level"), [("get_msrs", "host"), ("set_sregs", "host"), ("pvm_start", "l1"),
                                             ("map", "l2")])
def test_x86_na_policy_hw_has_no_kvm(kind: str, level: str) -> None:
    """X86.NA: a KVM ioctl, a pKVM step, or an L2 event with no L2 running has no meaning on the bare CPU."""
    m = get_policy("hw").build()
    out = m.step(Event(kind, level=level, msrs=(PKRS,), addr=SUP, page_size="4k", present=True))
    assert out.result == "unsupported"
    assert out.rules == ("X86.NA",)


def test_x86_na_other_cpuid_leaves() -> None:
    """X86.NA: CPUID leaves the model does not describe read as 0 and cite X86.NA."""
    c = cpu(long_mode=False)
    out = c("cpuid", cpuid_leaf=0xD, cpuid_subleaf=1)
    assert out.value == 0 and has_rule(out, "X86.NA")


def test_every_arch_and_x86_rule_has_a_test() -> None:
    """Coverage guard: every ARCH.* and X86.* id of the catalogue is named by some test above."""
    from pathlib import Path

    from reference_model.rules import RULES

    text = Path(__file__).read_text(encoding="utf-8")
    missing = [r for r in RULES if r.split(".")[0] in ("ARCH", "X86") and f'"{r}"' not in text]
    assert not missing, f"rules without a test: {missing}"
