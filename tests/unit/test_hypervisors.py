"""pKVM as merged, PVM's PKS and Xen's HVM PKS: each rule against the sentence of its source.

Expectations come from the upstream code and spec text cited beside each test (intel-staging/
pKVM-IA ``pkvm-v6.18``, virt-pvm/linux ``pvm-spec.rst``, xen-project/xen), never from the model.
"""

from __future__ import annotations

import pytest

from reference_model.events import Event, Outcome
from reference_model.host import DEFAULT_HOST, parse_features
from reference_model.machine import Machine
from reference_model.pkvm import merged_set_msr
from reference_model.pkvm_pv import access_class
from reference_model.policies import POLICIES, get_policy
from reference_model.registers import (
    CR0_ET,
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    CR4_PKE,
    CR4_PKS,
    EFER_LME,
    MSR_EFER,
    MSR_IA32_PKRS,
    MSR_IA32_XSS,
    MSR_STAR,
    MSR_SYSENTER_EIP,
)
from reference_model.rules import HYPERVISOR_FAMILIES, RULE_SOURCES, RULES

MISC_ENABLE = 0x1A0
FAST_STRING, BTS_UNAVAIL, PEBS_UNAVAIL = 1 << 0, 1 << 11, 1 << 12
SUP, USR = 0x40000000, 0x50000000
NO_PKU_HOST = parse_features("pks,vmx,ept,unrestricted_guest,vmx_entry_load_pkrs,vmx_exit_load_pkrs")


def ad(key: int) -> int:
    return 1 << (2 * key)


def step(m: Machine, kind: str, **kw: object) -> Outcome:
    level = kw.pop("level", "host" if kind in ("set_cpuid", "set_msrs", "get_msrs", "run", "pv_call", "get_sregs")
                   else "l1")
    return m.step(Event(kind, level=str(level), **kw))  # type: ignore[arg-type]


def long_mode(m: Machine, ecx7: int = 0, ecx1: int = 0) -> None:
    assert step(m, "set_cpuid", cpuid_7_ecx=ecx7, cpuid_1_ecx=ecx1).result == "ok"
    assert step(m, "mov_cr4", value=CR4_PAE).result == "ok"
    assert step(m, "wrmsr", msr=MSR_EFER, value=EFER_LME).result == "ok"
    assert step(m, "mov_cr0", value=CR0_ET | CR0_PE | CR0_PG | CR0_WP).result == "ok"


def mapped(m: Machine, addr: int, key: int, user: bool) -> None:
    step(m, "map", addr=addr, page_size="4k", present=True, user=user, key=key)


# --- pKVM as merged: pkvm_set_msr() ---------------------------------------------------------------

@pytest.mark.parametrize(("msr", "value", "has_run", "want"), [
    (MSR_STAR, 1, True, ("PKVM.MSR.RAN", None)),  # WARN_ON(kvm_vcpu_has_run) -> -EPERM
    (0x200, 6, False, ("PKVM.MSR.MTRR", 6)),  # MTRRphysBase_MSR(0): written
    (0x26F, 6, False, ("PKVM.MSR.MTRR", 6)),  # MSR_MTRRfix4K_F8000: the range's end
    (0x2FF, 0xC06, False, ("PKVM.MSR.MTRR", 0xC06)),  # MSR_MTRRdefType
    (MISC_ENABLE, FAST_STRING, False, ("PKVM.MSR.MISC", FAST_STRING | BTS_UNAVAIL | PEBS_UNAVAIL)),  # forced on
    (MISC_ENABLE, 0, False, ("PKVM.MSR.MISC", BTS_UNAVAIL | PEBS_UNAVAIL)),
    (MISC_ENABLE, 1 << 18, False, ("PKVM.MSR.MISC", None)),  # data & ~(3 bits) -> -EPERM
    (MSR_STAR, 5, False, ("PKVM.MSR.IGNORED", -1)),  # return 0 without writing
    (MSR_SYSENTER_EIP, 5, False, ("PKVM.MSR.IGNORED", -1)),
    (MSR_IA32_PKRS, 0, False, ("PKVM.MSR.DENY", None)),  # default: -EPERM
    (MSR_IA32_XSS, 0, False, ("PKVM.MSR.DENY", None)),
    (0x10B, 1, False, ("PKVM.MSR.DENY", None)),  # IA32_FLUSH_CMD: not in the switch
])
def test_pkvm_set_msr_cases(msr: int, value: int, has_run: bool, want: tuple[str, int | None]) -> None:
    assert merged_set_msr(msr, value, has_run) == want


@pytest.mark.parametrize(("call", "klass"), [
    ("vcpu_run", "always"), ("inject_irq", "always"), ("write_tsc_multiplier", "always"),
    ("complete_emulated_msr", "always"), ("protected_apic_has_interrupt", "always"),
    ("set_msr", "before_first_run"), ("get_segment_base", "before_first_run"), ("load_mmu_pgd", "before_first_run"),
    ("vcpu_add_fpstate", "before_first_run"), ("flush_tlb_guest", "before_first_run"),
    ("update_exception_bitmap", "never"), ("inject_exception", "never"), ("set_nmi_mask", "never"),
])
def test_is_guest_vcpu_accessible_classes(call: str, klass: str) -> None:
    assert access_class(call) == klass


def test_pv_call_refused_after_first_run_only_for_state_calls() -> None:
    m = get_policy("pkvm-pvm").build()
    step(m, "set_cpuid", cpuid_7_ecx=0)
    assert step(m, "pv_call", pv_call="set_efer").result == "ok"
    assert step(m, "pv_call", pv_call="inject_exception").result == "eperm"  # denied even before the run
    step(m, "run")
    assert step(m, "pv_call", pv_call="set_efer").result == "eperm"
    assert step(m, "pv_call", pv_call="inject_nmi").result == "ok"
    assert m.counters["pkvm.pv.set_efer"] == 2  # counted as the npVM counters are


def test_npvm_pv_calls_all_allowed() -> None:
    m = get_policy("pkvm-npvm").build()
    step(m, "run")
    assert step(m, "pv_call", pv_call="update_exception_bitmap").result == "ok"  # "all ... allowed for an npVM"


def test_host_msr_writes_end_to_end() -> None:
    m = get_policy("pkvm-pvm").build()
    step(m, "set_cpuid", cpuid_7_ecx=1 << 31)
    out = step(m, "set_msrs", msrs=(MSR_STAR, MSR_IA32_PKRS, 0x2FF), values=(7, 0, 6))
    assert out.count == 1 and "PKVM.MSR.DENY" in out.rules  # stops at PKRS
    got = step(m, "get_msrs", msrs=(MSR_STAR, MISC_ENABLE))
    assert got.values == (0, BTS_UNAVAIL | PEBS_UNAVAIL)  # STAR ignored; MISC_ENABLE's KVM reset value
    step(m, "run")
    assert step(m, "set_msrs", msrs=(0x2FF,), values=(6,)).count == 0


def test_guest_msr_gp_is_host_invisible() -> None:
    m = get_policy("pkvm-pvm").build()
    long_mode(m, ecx7=1 << 31)
    out = step(m, "wrmsr", msr=MSR_IA32_PKRS, value=4)
    assert out.result == "gp" and not out.host_visible and "PKVM.GUEST.MSR" in out.rules
    unknown = step(m, "rdmsr", msr=0x123)
    assert unknown.result == "gp" and not unknown.host_visible
    deadline = step(m, "wrmsr", msr=0x6E0, value=0)  # MSR_IA32_TSC_DEADLINE: pkvm_host_can_emulate_msr() true
    assert deadline.host_visible
    npvm = get_policy("pkvm-npvm").build()
    long_mode(npvm, ecx7=1 << 31)
    assert step(npvm, "wrmsr", msr=0x123, value=1).host_visible  # an npVM's MSRs go to the host


def test_pvm_cpuid_loses_vmx() -> None:
    m = get_policy("pkvm-pvm").build()
    long_mode(m, ecx1=1 << 5)
    out = step(m, "cpuid", cpuid_leaf=1)
    assert out.value == 0 and "PKVM.CPUID.VMX" in out.rules
    assert step(m, "vmwrite", field=0x2818, value=0).result == "unsupported"


@pytest.mark.parametrize(("knob", "host_pks", "want_pks"), [
    ("keep", True, True), ("clear", True, False), ("native", True, True), ("native", False, False),
])
def test_cpuid_pks_knob(knob: str, host_pks: bool, want_pks: bool) -> None:
    policy = get_policy("pkvm-pvm").derive("t", "t", "t", pkvm_cpuid_pks=knob)
    host = DEFAULT_HOST if host_pks else parse_features("pku,vmx,ept,unrestricted_guest")
    m = policy.build(host)
    step(m, "set_cpuid", cpuid_7_ecx=1 << 31)
    assert bool(m.snapshot("vcpu0.cpuid.7.ecx") & (1 << 31)) is want_pks


def test_proposals_say_they_were_proposals() -> None:
    for name in ("pkvm-pvm-compare", "pkvm-pvm-allow5", "pkvm-pvm-allow8"):
        p = POLICIES[name]
        assert "proposal" in p.description and "not merged" in p.source
        module = __import__(f"reference_model.policies.{name.replace('-', '_')}", fromlist=["x"])
        assert "PROPOSAL" in (module.__doc__ or "")


def test_new_policies_name_repo_file_function() -> None:
    for name, repo in (("pkvm-pvm", "pKVM-IA"), ("pkvm-npvm", "pKVM-IA"), ("pvm", "virt-pvm/linux"),
                       ("xen-hvm", "xen-project/xen")):
        src = POLICIES[name].source
        assert repo in src and "/" in src.split(repo, 1)[1]
    for rid in RULES:
        if rid.split(".", 1)[0] in HYPERVISOR_FAMILIES and rid.split(".", 1)[0] != "KVM" and rid not in (
                "PKVM.KINDS", "PKVM.PROTECT", "PKVM.MSR.PRE", "PKVM.CPUID", "PKVM.COST"):
            assert rid in RULE_SOURCES, rid


# --- PVM (pvm-spec.rst) ----------------------------------------------------------------------------

def pvm_with_keys(pkrs: int, host: object = DEFAULT_HOST) -> Machine:
    m = get_policy("pvm").build(host)  # type: ignore[arg-type]
    long_mode(m, ecx7=(1 << 31) | (1 << 3))
    assert step(m, "mov_cr4", value=CR4_PAE | CR4_PKE | CR4_PKS).result == "ok"
    assert step(m, "wrmsr", msr=MSR_IA32_PKRS, value=pkrs).result == "ok"
    return m


def test_pvm_cr4_pks_needs_pke() -> None:
    # "CR4.PKS can only be enabled when CR4.PKE is enabled"
    m = get_policy("pvm").build()
    long_mode(m, ecx7=(1 << 31) | (1 << 3))
    out = step(m, "mov_cr4", value=CR4_PAE | CR4_PKS)
    assert out.result == "gp" and out.rules == ("PVM.CR4.PKS",)


def test_pvm_cr4_pke_needs_underlying_pke() -> None:
    # "CR4.PKE can only be enabled when the underlying CR4.PKE is enabled"
    m = get_policy("pvm").build(NO_PKU_HOST)
    long_mode(m, ecx7=(1 << 31) | (1 << 3))
    assert step(m, "mov_cr4", value=CR4_PAE | CR4_PKE).result == "gp"


def test_pvm_cpuid_needs_host_pke() -> None:
    # "PKS can be enabled if the host CR4.PKE is set because guest PKS is handled via hardware PKE."
    for host, want in ((DEFAULT_HOST, (1 << 31) | (1 << 3)), (NO_PKU_HOST, 0)):
        m = get_policy("pvm").build(host)
        long_mode(m, ecx7=(1 << 31) | (1 << 3))
        assert step(m, "cpuid", cpuid_leaf=7).value == want


def test_pvm_keys_ignore_us_and_switch_loads_pkrs() -> None:
    # "Protection Key protection doesn't consider the U/S bit"; user -> supervisor loads MSR_IA32_PKRS (CR4.PKS)
    m = pvm_with_keys(ad(1))
    mapped(m, USR, key=1, user=True)
    assert step(m, "access", addr=USR, access="read", cpl=3).result == "ok"  # user mode: PVCS::pkru = 0
    out = step(m, "access", addr=USR, access="read", cpl=0)  # supervisor, a *user* page, key 1 of PKRS
    assert out.result == "pf" and out.pfec == 0x21 and "PVM.KEY" in out.rules


def test_pvm_switch_restores_user_pkru() -> None:
    # supervisor -> user: "load the underlying PKRU with PVCS::pkru"; user -> supervisor: "save ... to PVCS::pkru"
    m = pvm_with_keys(0)
    mapped(m, USR, key=3, user=True)
    step(m, "access", addr=USR, access="read", cpl=3)
    assert step(m, "wrpkru", value=ad(3)).result == "ok"
    assert step(m, "access", addr=USR, access="read", cpl=0).result == "ok"  # supervisor: PKRS = 0
    out = step(m, "access", addr=USR, access="read", cpl=3)  # back in user mode: AD(3) again
    assert out.result == "pf" and out.pfec == 0x25
    assert m.snapshot("vcpu0.pkru") == ad(3)


def test_pvm_rdpkru_in_supervisor_is_pkrs_view() -> None:
    # "RDPKRU/WRPKRU would access the underlying PKRU register which is effectively PVM's MSR_IA32_PKRS"
    m = pvm_with_keys(ad(9))
    mapped(m, SUP, key=0, user=False)
    step(m, "access", addr=SUP, access="read", cpl=3)
    step(m, "access", addr=SUP, access="read", cpl=0)
    assert step(m, "rdpkru").value == ad(9)
    step(m, "wrpkru", value=ad(9) | ad(2))
    assert m.snapshot("vcpu0.pvm.pkrs_view") == ad(9)  # masked to SUPERVISOR_KEYS_MASK (keys 8-15)


def test_pvm_has_no_kvm_series_state() -> None:
    m = get_policy("pvm").build()
    with pytest.raises(KeyError):
        m.snapshot("vcpu0.vmcs01.entry_ctls.load_pkrs")


# --- Xen (xen-project/xen) -------------------------------------------------------------------------

def test_xen_pks_needs_hap() -> None:
    # calculate_hvm_max_policy(): PKS is 'H' (HAP only)
    no_hap = parse_features("pks,pku,vmx,unrestricted_guest,vmx_entry_load_pkrs,vmx_exit_load_pkrs")
    m = get_policy("xen-hvm").build(no_hap)
    step(m, "set_cpuid", cpuid_7_ecx=1 << 31)
    assert step(m, "cpuid", cpuid_leaf=7).value == 0


def test_xen_pkrs_msr() -> None:
    # guest_wrmsr(): `if ( !cp->feat.pks || val != (uint32_t)val ) goto gp_fault;`
    m = get_policy("xen-hvm").build()
    long_mode(m, ecx7=1 << 31)
    assert step(m, "wrmsr", msr=MSR_IA32_PKRS, value=1 << 32).result == "gp"
    ok = step(m, "wrmsr", msr=MSR_IA32_PKRS, value=ad(1))
    assert ok.result == "ok" and "XEN.MSR" in ok.rules
    assert step(m, "rdmsr", msr=MSR_IA32_PKRS).value == ad(1)


def test_xen_walk_drops_pk_beside_us_fault() -> None:
    # guest_walk_tables(): "If all access checks are thus far ok, check Protection Key"
    m = get_policy("xen-hvm").build()
    long_mode(m, ecx7=1 << 31)
    step(m, "mov_cr4", value=CR4_PAE | CR4_PKS)
    step(m, "wrmsr", msr=MSR_IA32_PKRS, value=ad(1))
    mapped(m, SUP, key=1, user=False)
    emulated = step(m, "emu_access", addr=SUP, access="read", cpl=3)
    assert emulated.pfec == 0x5 and "XEN.WALK" in emulated.rules
    hardware = step(m, "access", addr=SUP, access="read", cpl=3)
    assert hardware.pfec == 0x25  # HAP: the CPU's own walk (SDM)
    assert step(m, "emu_access", addr=SUP, access="read", cpl=0).pfec == 0x21  # no other fault: PK kept
