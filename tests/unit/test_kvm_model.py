"""Unit tests of the KVM model, rule by rule; every expectation is SPEC §2-§4 or sources text.

Each test drives a fresh machine with events and checks outcomes and named state.  The
per-version bug scenarios are the corpus's job (traces/bugs, the matrix test); these tests pin
the v7 reference rules and the few version knobs whose effect is a single fact.
"""

from __future__ import annotations

import pytest

from reference_model import Event, Machine, get_policy
from reference_model.host import HOST_FEATURES, HostCpu
from reference_model.registers import (
    CPUID7_ECX_PKS,
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    CR4_PKS,
    EFER_LME,
    MSR_EXIT_FILTER,
    MSR_EXIT_INVAL,
    MSR_EXIT_UNKNOWN,
    MSR_STAR,
    VM_ENTRY_LOAD_IA32_PKRS,
    VM_EXIT_LOAD_IA32_PKRS,
    VMCS_GUEST_IA32_PKRS,
    VMCS_HOST_IA32_PKRS,
    VMCS_VM_ENTRY_CONTROLS,
    VMCS_VM_EXIT_CONTROLS,
)

PKRS = 0x6E1
LONG_CR0 = CR0_PE | CR0_PG | CR0_WP


def machine(policy: str = "kvm-v7", without: tuple[str, ...] = ()) -> Machine:
    host = HostCpu(frozenset(f for f in HOST_FEATURES if f not in without))
    return get_policy(policy).build(host)


def host(kind: str, **kw: object) -> Event:
    return Event(kind, level="host", **kw)  # type: ignore[arg-type]


def guest(kind: str, level: str = "l1", **kw: object) -> Event:
    return Event(kind, level=level, **kw)  # type: ignore[arg-type]


def long_mode(m: Machine, pks: bool = True) -> None:
    m.step(host("set_cpuid", cpuid_7_ecx=CPUID7_ECX_PKS if pks else 0))
    m.step(guest("mov_cr4", value=CR4_PAE))
    m.step(guest("wrmsr", msr=0xC0000080, value=EFER_LME))
    assert m.step(guest("mov_cr0", value=LONG_CR0)).result == "ok"


# --- KVM.CAP / KVM.MSR.LIST -----------------------------------------------------------------
@pytest.mark.parametrize(("policy", "without", "listed"), [
    ("kvm-v7", (), 1),
    ("kvm-v7", ("pks",), 0),  # cap needs host PKS
    ("kvm-v7", ("ept",), 0),  # cap needs TDP
    ("upstream", (), 0),
    ("kvm-rfc-v1", ("pks",), 1),  # B2: RFC v1 lists 0x6E1 without the cap
])
def test_msr_index_list_follows_cap(policy: str, without: tuple[str, ...], listed: int) -> None:
    """KVM.MSR.LIST: 0x6E1 is in KVM_GET_MSR_INDEX_LIST iff cap (RFC v1 regardless, B2)."""
    out = machine(policy, without).step(host("get_msr_index_list"))
    assert out.value == listed and "KVM.MSR.LIST" in out.rules


def test_cap_ignores_missing_controls_in_v7_but_not_v5() -> None:
    """KVM.CAP / D2: v6-v7 advertise PKS without the load controls; v1-v5 require both."""
    for policy, expected in (("kvm-v7", 1), ("kvm-v5", 0)):
        m = machine(policy, without=("vmx_exit_load_pkrs",))
        assert m.step(host("get_msr_index_list")).value == expected, policy


# --- KVM.CR4.RSVD ---------------------------------------------------------------------------
def test_cr4_pks_reserved_without_guest_cpuid() -> None:
    """KVM.CR4.RSVD: guest MOV -> #GP, KVM_SET_SREGS -> EINVAL unless gPKS and cap."""
    m = machine()
    long_mode(m, pks=False)
    assert m.step(guest("mov_cr4", value=CR4_PAE | CR4_PKS)).result == "gp"
    out = m.step(host("set_sregs", cr4=CR4_PAE | CR4_PKS))
    assert out.result == "einval" and out.rules[0] == "KVM.CR4.RSVD"
    m2 = machine()
    long_mode(m2, pks=True)
    assert m2.step(guest("mov_cr4", value=CR4_PAE | CR4_PKS)).result == "ok"


def test_cr4_pks_settable_with_paging_off() -> None:
    """ARCH.CR4.RSVD as KVM implements it: no paging or long-mode condition (§3.2)."""
    m = machine()
    m.step(host("set_cpuid", cpuid_7_ecx=CPUID7_ECX_PKS))
    assert m.step(guest("mov_cr4", value=CR4_PKS)).result == "ok"


# --- KVM.MSR.WR / KVM.MSR.RD ----------------------------------------------------------------
def test_set_msrs_count_stops_at_failing_pkrs() -> None:
    """KVM.MSR.WR: KVM_SET_MSRS stops at a failing 0x6E1 and returns the count before it."""
    m = machine()
    out = m.step(host("set_msrs", msrs=(MSR_STAR, PKRS, MSR_STAR), values=(1, 1 << 32, 2)))
    assert out.count == 1
    out = m.step(host("set_msrs", msrs=(MSR_STAR, PKRS), values=(1, 0x4)))
    assert out.count == 2  # host-initiated: no guest CPUID needed


def test_host_write_then_get_reads_back() -> None:
    """KVM.MSR.WR then KVM.MSR.RD: the software copy is what KVM_GET_MSRS returns."""
    m = machine()
    m.step(host("set_msrs", msrs=(PKRS,), values=(0x55,)))
    out = m.step(host("get_msrs", msrs=(PKRS,)))
    assert out.values == (0x55,) and out.count == 1


def test_guest_wrmsr_without_gpks_is_gp_or_inval_exit() -> None:
    """KVM.MSR.WR failure: #GP, or a userspace exit with reason INVAL when enabled (KVM.MSR.FILTER)."""
    m = machine()
    long_mode(m, pks=False)
    assert m.step(guest("wrmsr", msr=PKRS, value=4)).result == "gp"
    m.step(host("enable_user_msr", value=MSR_EXIT_INVAL))
    out = m.step(guest("wrmsr", msr=PKRS, value=4))
    assert out.result == "user_exit" and out.exit_reason == MSR_EXIT_INVAL


def test_upstream_unknown_msr_exit_reason() -> None:
    """SPEC KVM.MSR.FILTER: unknown-MSR exits use reason UNKNOWN = 2 (upstream: 0x6E1 unknown)."""
    m = machine("upstream")
    long_mode(m, pks=False)
    m.step(host("enable_user_msr", value=MSR_EXIT_UNKNOWN | MSR_EXIT_INVAL))
    out = m.step(guest("rdmsr", msr=PKRS))
    assert out.result == "user_exit" and out.exit_reason == MSR_EXIT_UNKNOWN
    assert m.step(host("set_msrs", msrs=(PKRS,), values=(0,))).count == 0


# --- KVM.MSR.INTERCEPT / KVM.MSR.FILTER -----------------------------------------------------
def test_intercept_follows_cpuid_updates() -> None:
    """KVM.MSR.INTERCEPT: gPKS -> pass-through, else intercept, on every CPUID update."""
    m = machine()
    assert m.snapshot("vcpu0.msr_bitmap.0x6e1.write") == 1
    m.step(host("set_cpuid", cpuid_7_ecx=CPUID7_ECX_PKS))
    assert m.snapshot("vcpu0.msr_bitmap.0x6e1.write") == 0
    m.step(host("set_cpuid", cpuid_7_ecx=0))
    assert m.snapshot("vcpu0.msr_bitmap.0x6e1.write") == 1


def test_filter_beats_passthrough_and_exits_with_reason_filter() -> None:
    """KVM.MSR.FILTER / INTERCEPT: a filter change re-intercepts 0x6E1; denied access exits with FILTER=4."""
    m = machine()
    long_mode(m)
    m.step(host("enable_user_msr", value=MSR_EXIT_FILTER))
    m.step(host("set_msr_filter", filter_default="allow", msrs=(PKRS,), filter_allow=0))
    assert m.snapshot("vcpu0.msr_bitmap.0x6e1.read") == 1
    out = m.step(guest("wrmsr", msr=PKRS, value=4))
    assert out.result == "user_exit" and out.exit_reason == MSR_EXIT_FILTER
    # host-initiated accesses ignore the filter
    assert m.step(host("set_msrs", msrs=(PKRS,), values=(8,))).count == 1


def test_v4_filter_change_does_not_reintercept() -> None:
    """B8 (v4): PKRS is special-cased outside the possible-pass-through list."""
    m = machine("kvm-v4")
    long_mode(m)
    m.step(guest("mov_cr4", value=CR4_PAE | CR4_PKS))
    m.step(host("set_msr_filter", filter_default="allow", msrs=(PKRS,), filter_allow=0))
    assert m.snapshot("vcpu0.msr_bitmap.0x6e1.write") == 0


# --- KVM.CTL / VMX.EXIT.SAVE ----------------------------------------------------------------
def test_controls_off_by_default_and_set_by_cpuid() -> None:
    """KVM.CTL: off by default (v6/v7); a CPUID update with cap sets both for gPKS."""
    m = machine()
    assert m.snapshot("vcpu0.vmcs01.entry_ctls.load_pkrs") == 0
    m.step(host("set_cpuid", cpuid_7_ecx=CPUID7_ECX_PKS))
    assert m.snapshot("vcpu0.vmcs01.entry_ctls.load_pkrs") == 1
    assert m.snapshot("vcpu0.vmcs01.exit_ctls.load_pkrs") == 1
    assert machine("kvm-v5").snapshot("vcpu0.vmcs01.entry_ctls.load_pkrs") == 1  # P2


def test_exit_pollutes_guest_field_with_host_value() -> None:
    """VMX.EXIT.SAVE with the controls clear: the guest field gets the host's PKRS (D1)."""
    m = machine()
    m.step(host("host_pkrs", value=0x30))
    long_mode(m, pks=False)  # controls stay clear, the guest runs with the host's PKRS
    m.step(host("get_sregs", reg="cr4"))
    assert m.snapshot("vcpu0.vmcs01.guest_ia32_pkrs") == 0x30
    # D1: a host-initiated read returns the host's value rather than the last write (0 after RESET)
    assert m.step(host("get_msrs", msrs=(PKRS,))).values == (0x30,)


# --- KVM.CACHE ------------------------------------------------------------------------------
def test_lazy_copy_vmreads_once_per_exit() -> None:
    """KVM.CACHE / P3: invalidated on every exit, filled by one VMREAD on demand."""
    m = machine()
    long_mode(m)
    m.step(guest("wrmsr", msr=PKRS, value=0x4))  # passed through: no exit
    m.step(host("get_msrs", msrs=(PKRS,)))
    m.step(host("get_msrs", msrs=(PKRS,)))
    assert m.counters["vmread.GUEST_IA32_PKRS"] == 1
    assert m.step(host("get_msrs", msrs=(PKRS,))).values == (0x4,)


# --- KVM.RESET ------------------------------------------------------------------------------
@pytest.mark.parametrize(("policy", "after_init"), [("kvm-v7", 0x4), ("kvm-v5", 0), ("kvm-rfc-v3", 0x4)])
def test_init_preserves_reset_clears(policy: str, after_init: int) -> None:
    """KVM.RESET / B12: INIT preserves PKRS (v5 clears it); RESET writes 0 (RFC v1-v3 do not)."""
    m = machine(policy)
    m.step(host("set_msrs", msrs=(PKRS,), values=(0x4,)))
    m.step(guest("init"))
    assert m.step(host("get_msrs", msrs=(PKRS,))).values == (after_init,)
    m.step(guest("reset"))
    expect_reset = 0x4 if policy == "kvm-rfc-v3" else 0
    assert m.step(host("get_msrs", msrs=(PKRS,))).values == (expect_reset,)


# --- KVM.HOST -------------------------------------------------------------------------------
def test_host_field_sampled_on_first_entry_only() -> None:
    """KVM.HOST (§1.2): sampled when guest state is loaded, not on every entry."""
    m = machine()
    m.step(host("set_cpuid", cpuid_7_ecx=CPUID7_ECX_PKS))
    m.step(host("host_pkrs", value=0x10))
    m.step(host("run"))
    assert m.snapshot("vcpu0.vmcs01.host_ia32_pkrs") == 0x10
    m.step(Event("vm_exit", level="host", reason=1))  # in-kernel exit: state stays loaded
    assert m.counters["vmwrite.HOST_IA32_PKRS"] == 1


# --- nested: KVM.NESTED.CAPS, VMX.CTL, VMX.ENTRY.CHK.*, KVM.VMCS12.LAYOUT, VMX.CR4FIXED1 -----
def test_nested_caps_and_cr4_fixed1() -> None:
    """KVM.NESTED.CAPS (hw only in v5+) and VMX.CR4FIXED1 (bit 24 iff L1 CPUID has PKS)."""
    m = machine()
    assert m.snapshot("vcpu0.vmx.entry_ctls_high.load_pkrs") == 1
    assert m.snapshot("vcpu0.vmx.cr4_fixed1.pks") == 0
    m.step(host("set_cpuid", cpuid_7_ecx=CPUID7_ECX_PKS))
    assert m.snapshot("vcpu0.vmx.cr4_fixed1.pks") == 1
    m4 = machine("kvm-v4")  # RFC v2-v4: hardware and guest CPUID
    assert m4.snapshot("vcpu0.vmx.entry_ctls_high.load_pkrs") == 0


@pytest.mark.parametrize(("policy", "offsets"), [("kvm-v7", (1006, 998)), ("kvm-v4", (320, 328))])
def test_vmcs12_layout(policy: str, offsets: tuple[int, int]) -> None:
    """KVM.VMCS12.LAYOUT: RFC v1-v4 guest 320 / host 328; v5-v7 host 998 / guest 1006."""
    m = machine(policy)
    assert (m.snapshot("vcpu0.vmcs12.offset.guest_ia32_pkrs"), m.snapshot("vcpu0.vmcs12.offset.host_ia32_pkrs")) == offsets


@pytest.mark.parametrize("policy", ["kvm-v7", "hw"])
def test_nested_entry_checks(policy: str) -> None:
    """VMX.ENTRY.CHK.HOST -> VMfail 8; VMX.ENTRY.CHK.GUEST -> entry failure 0x80000021, qual 0."""
    m = machine(policy)
    long_mode(m)
    m.step(guest("vmwrite", field=VMCS_VM_EXIT_CONTROLS, value=VM_EXIT_LOAD_IA32_PKRS))
    m.step(guest("vmwrite", field=VMCS_HOST_IA32_PKRS, value=1 << 32))
    out = m.step(guest("vmlaunch"))
    assert (out.result, out.vm_error) == ("vmfail", 8)
    m.step(guest("vmwrite", field=VMCS_HOST_IA32_PKRS, value=0))
    m.step(guest("vmwrite", field=VMCS_VM_ENTRY_CONTROLS, value=VM_ENTRY_LOAD_IA32_PKRS))
    m.step(guest("vmwrite", field=VMCS_GUEST_IA32_PKRS, value=1 << 33))
    out = m.step(guest("vmlaunch"))
    assert (out.result, out.exit_reason, out.exit_qual) == ("entry_fail", 0x80000021, 0)


def test_disallowed_control_is_vmfail_7() -> None:
    """VMX.CTL: a load-PKRS control the capability MSR does not allow is VMfail 7."""
    m = machine(without=("vmx_entry_load_pkrs",))
    long_mode(m, pks=False)  # with gPKS, v7 would set the unsupported control itself (D2)
    m.step(guest("vmwrite", field=VMCS_VM_ENTRY_CONTROLS, value=VM_ENTRY_LOAD_IA32_PKRS))
    out = m.step(guest("vmlaunch"))
    assert (out.result, out.vm_error) == ("vmfail", 7)


@pytest.mark.parametrize(("policy", "l1_after"), [("hw", 0x14), ("kvm-v7", 0x4)])
def test_nested_exit_without_load_control(policy: str, l1_after: int) -> None:
    """D5: without the exit control the architecture leaves L2's PKRS; KVM resumes L1 with its own."""
    m = machine(policy)
    long_mode(m)
    m.step(guest("wrmsr", msr=PKRS, value=0x4))
    m.step(guest("set_msr_bitmap", msr=PKRS, value=0))
    m.step(guest("vmwrite", field=VMCS_VM_ENTRY_CONTROLS, value=VM_ENTRY_LOAD_IA32_PKRS))
    m.step(guest("vmwrite", field=VMCS_GUEST_IA32_PKRS, value=0x14))
    assert m.step(guest("vmlaunch")).result == "ok"
    assert m.step(guest("rdmsr", level="l2", msr=PKRS)).value == 0x14
    m.step(guest("nested_exit", level="l2", reason=1))
    assert m.step(guest("rdmsr", msr=PKRS)).value == l1_after


def test_v7_sets_unsupported_control_and_entry_fails() -> None:
    """D2: v6/v7 keep the cap without the controls, set both for a gPKS guest, and the entry fails."""
    m = machine(without=("vmx_exit_load_pkrs",))
    m.step(host("set_cpuid", cpuid_7_ecx=CPUID7_ECX_PKS))
    assert m.step(host("run")).result == "internal_error"
    m5 = machine("kvm-v5", without=("vmx_exit_load_pkrs",))  # v5 has no cap then: never sets them
    m5.step(host("set_cpuid", cpuid_7_ecx=CPUID7_ECX_PKS))
    assert m5.step(host("run")).result == "ok"


# --- PKVM.* ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("policy", "star", "pkrs"), [
    ("pkvm-pvm-compare", 0, 1),  # equal value only: STAR 0 -> 5 refused, PKRS 0 -> 0 allowed
    ("pkvm-pvm-allow5", 1, 0),  # STAR allowed, 0x6E1 in no allowlist
    ("pkvm-pvm-allow8", 1, 0),
    ("pkvm-npvm", 1, 1),  # PKVM.KINDS: as KVM
])
def test_pkvm_msr_policy_before_first_run(policy: str, star: int, pkrs: int) -> None:
    """PKVM.MSR.PRE: compare / allow5 / allow8 before the pVM runs."""
    m = machine(policy)
    assert m.step(host("set_msrs", msrs=(MSR_STAR,), values=(5,))).count == star
    assert m.step(host("set_msrs", msrs=(PKRS,), values=(0,))).count == pkrs


def test_pvm_state_protected_after_run() -> None:
    """PKVM.PROTECT / PKVM.CPUID: after the pVM ran, state calls and CPUID changes are refused."""
    m = machine("pkvm-pvm-allow8")
    m.step(host("set_cpuid", cpuid_7_ecx=CPUID7_ECX_PKS))
    m.step(host("pvm_start"))
    assert m.step(host("set_cpuid", cpuid_7_ecx=0)).result == "eperm"
    assert m.step(host("get_sregs", reg="cr4")).result == "eperm"
    assert m.step(host("get_msrs", msrs=(PKRS,))).count == 0
    assert m.counters["pkvm.pv.vcpu_after_set_cpuid"] == 2
