"""Unit tests of the 2026 base and the rebase's choices (rules KVM26.*, reference_model/kvm2026.py).

Every expectation comes from the upstream function the rule cites (torvalds/linux: cpuid.c
kvm_set_cpuid/kvm_cpuid_check_equal, vmx.c setup_vmcs_config/vmx_set_cpu_caps, nested.c
vmx_set_vmx_msr/vmx_restore_control_msr/vmx_get_vmx_msr, x86.c kvm_probe_msr_to_save), from the
SDM (ARCH.*, VMX.*: a pCPU's PKRS only changes by a write, an entry load or an exit load) or from
Paolo Bonzini's Nov 2025 message, never from running the model.
"""

from __future__ import annotations

import pytest

from reference_model import Event, Machine, get_policy
from reference_model.host import HOST_FEATURES, HostCpu
from reference_model.registers import (
    CPUID1_ECX_VMX,
    CPUID7_ECX_PKS,
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    CR4_PKS,
    EFER_LME,
    MSR_IA32_VMX_ENTRY_CTLS,
    MSR_IA32_VMX_EXIT_CTLS,
    MSR_IA32_VMX_TRUE_ENTRY_CTLS,
    MSR_IA32_VMX_TRUE_EXIT_CTLS,
    VM_ENTRY_LOAD_IA32_PKRS,
    VM_EXIT_LOAD_IA32_PKRS,
    VMCS_GUEST_IA32_PKRS,
    VMCS_HOST_IA32_PKRS,
    VMCS_VM_ENTRY_CONTROLS,
    VMCS_VM_EXIT_CONTROLS,
)

PKRS = 0x6E1
LONG_CR0 = CR0_PE | CR0_PG | CR0_WP
# A host kernel that never sets CR4.PKS (every upstream kernel of 2026), and one that uses PKS.
NO_HOST_PKS: tuple[str, ...] = ("host_pks",)
POLICIES_2026 = ("upstream-2026", "kvm-rebase", "kvm-rebase-ones", "kvm-rebase-keep", "kvm-rebase-gated")


def machine(policy: str = "kvm-rebase", without: tuple[str, ...] = ()) -> Machine:
    return get_policy(policy).build(HostCpu(frozenset(f for f in HOST_FEATURES if f not in without)))


def host(kind: str, vcpu: int = 0, **kw: object) -> Event:
    return Event(kind, vcpu=vcpu, level="host", **kw)  # type: ignore[arg-type]


def guest(kind: str, vcpu: int = 0, level: str = "l1", **kw: object) -> Event:
    return Event(kind, vcpu=vcpu, level=level, **kw)  # type: ignore[arg-type]


def boot(m: Machine, vcpu: int = 0, pks: bool = True, vmx: bool = True, run: bool = True) -> None:
    """KVM_SET_CPUID2, long mode through KVM_SET_SREGS, then KVM_RUN."""
    assert m.step(host("set_cpuid", vcpu, cpuid_7_ecx=CPUID7_ECX_PKS if pks else 0,
                       cpuid_1_ecx=CPUID1_ECX_VMX if vmx else 0)).result == "ok"
    assert m.step(host("set_sregs", vcpu, cr0=LONG_CR0, cr4=CR4_PAE, efer=EFER_LME)).result == "ok"
    if run:
        assert m.step(host("run", vcpu)).result == "ok"


def enter_l2(m: Machine, vcpu: int = 0, guest_pkrs: int = 0x10, host_pkrs: int = 0x30) -> None:
    for f, v in ((VMCS_VM_ENTRY_CONTROLS, VM_ENTRY_LOAD_IA32_PKRS), (VMCS_VM_EXIT_CONTROLS, VM_EXIT_LOAD_IA32_PKRS),
                 (VMCS_GUEST_IA32_PKRS, guest_pkrs), (VMCS_HOST_IA32_PKRS, host_pkrs)):
        assert m.step(guest("vmwrite", vcpu, field=f, value=v)).result == "ok"
    assert m.step(guest("vmlaunch", vcpu)).result == "ok"


# ---------------------------------------------------------------------- KVM26.CPUID.FROZEN
@pytest.mark.parametrize("policy", POLICIES_2026)
def test_set_cpuid_after_run_needs_the_identical_table(policy: str) -> None:
    """cpuid.c kvm_set_cpuid: kvm_vcpu_has_run() -> kvm_cpuid_check_equal() -> -EINVAL on any change."""
    m = machine(policy)
    boot(m, pks=True)
    changed = m.step(host("set_cpuid", cpuid_7_ecx=0, cpuid_1_ecx=CPUID1_ECX_VMX))
    assert changed.result == "einval" and "KVM26.CPUID.FROZEN" in changed.rules
    assert m.step(host("get_cpuid")).value == CPUID7_ECX_PKS  # the old table is kept (swap back on error)
    same = m.step(host("set_cpuid", cpuid_7_ecx=CPUID7_ECX_PKS, cpuid_1_ecx=CPUID1_ECX_VMX))
    assert same.result == "ok"


def test_set_cpuid_before_run_may_change_the_table() -> None:
    m = machine()
    boot(m, pks=True, run=False)
    assert m.step(host("set_cpuid", cpuid_7_ecx=0, cpuid_1_ecx=CPUID1_ECX_VMX)).result == "ok"
    assert m.step(host("get_cpuid")).value == 0


def test_set_cpuid_while_l2_is_active() -> None:
    """kvm_set_cpuid has no guest-mode check: a change is EINVAL, an identical table is accepted and
    re-runs vmx_vcpu_after_set_cpuid, which under kvm-rebase leaves the (always-on) controls alone."""
    m = machine()
    boot(m, pks=True)
    enter_l2(m)
    assert m.snapshot("vcpu0.nested.guest_mode") == 1
    assert m.step(host("set_cpuid", cpuid_7_ecx=0, cpuid_1_ecx=CPUID1_ECX_VMX)).result == "einval"
    assert m.step(host("set_cpuid", cpuid_7_ecx=CPUID7_ECX_PKS, cpuid_1_ecx=CPUID1_ECX_VMX)).result == "ok"
    assert m.snapshot("vcpu0.nested.guest_mode") == 1
    assert m.snapshot("vcpu0.vmcs02.entry_ctls.load_pkrs") == 1
    assert m.snapshot("vcpu0.vmcs02.exit_ctls.load_pkrs") == 1


# ---------------------------------------------------------------------- KVM26.CAP.SOURCE / MSR.LIST
@pytest.mark.parametrize(("policy", "without", "cap"), [
    ("upstream-2026", (), 0),  # cpuid.c kvm_set_cpu_caps: no PKS in CPUID_7_ECX
    ("kvm-rebase-gated", (), 1),  # F(PKS): the host kernel uses PKS
    ("kvm-rebase-gated", NO_HOST_PKS, 0),  # F(PKS) masks with boot_cpu_data
    ("kvm-rebase", NO_HOST_PKS, 1),  # PASSTHROUGH_F(PKS): raw CPUID is enough
    ("kvm-rebase", ("pks", "host_pks"), 0),  # ... but raw CPUID must have it
    ("kvm-rebase", ("vmx_exit_load_pkrs",), 0),  # KVM26.CTL.PAIR
    ("kvm-rebase", ("vmx_entry_load_pkrs", "host_pks"), 0),
    ("kvm-rebase", ("ept",), 0),  # no PKS with shadow paging (KVM.CAP)
])
def test_capability_and_msr_list_agree(policy: str, without: tuple[str, ...], cap: int) -> None:
    """KVM_GET_SUPPORTED_CPUID's PKS bit and 0x6E1 in KVM_GET_MSR_INDEX_LIST (x86.c kvm_probe_msr_to_save)."""
    m = machine(policy, without)
    assert m.snapshot("host.supported_cpuid.7.ecx.pks") == cap
    listed = m.step(host("get_msr_index_list"))
    assert listed.value == cap and listed.rules == ("KVM26.MSR.LIST",)
    boot(m, pks=True)
    want = "ok" if cap else "gp"
    assert m.step(guest("mov_cr4", value=CR4_PAE | CR4_PKS)).result == want
    assert m.step(guest("wrmsr", msr=PKRS, value=4)).result == want


# ---------------------------------------------------------------------- KVM26.CTL.PAIR (D2 fixed)
@pytest.mark.parametrize("missing", ["vmx_entry_load_pkrs", "vmx_exit_load_pkrs"])
def test_one_control_alone_neither_advertises_nor_leaks(missing: str) -> None:
    """vmx.c vmx_check_entry_exit_pairs clears an unpaired control; without the pair PKS is hidden, so
    no guest value can reach the host's PKRS (v7R still advertises it: D2)."""
    m = machine("kvm-rebase", (missing,))
    m.step(host("host_pkrs", value=0x55))
    boot(m, pks=True)
    assert m.step(guest("wrmsr", msr=PKRS, value=0x4)).result == "gp"
    m.step(guest("vm_exit"))
    assert m.snapshot("vcpu0.exit_pkrs") == 0x55
    assert m.snapshot("vcpu0.vmcs01.entry_ctls.load_pkrs") == 0
    assert m.snapshot("vcpu0.vmcs01.exit_ctls.load_pkrs") == 0
    assert m.snapshot("vcpu0.vmx.entry_ctls_high.load_pkrs") == 0
    assert m.snapshot("vcpu0.vmx.exit_ctls_high.load_pkrs") == 0
    v7r = machine("kvm-v7r", (missing,))
    boot(v7r, pks=True)
    assert v7r.step(guest("wrmsr", msr=PKRS, value=0x4)).result == "ok"  # D2: still advertised


# ---------------------------------------------------------------------- KVM26.NESTED.CAPS / CAPMSR
def vmx_msr(m: Machine, msr: int) -> int:
    out = m.step(host("get_msrs", msrs=(msr,)))
    assert out.count == 1 and out.values is not None
    return out.values[0]


def test_vmx_capability_msrs_report_the_pkrs_controls() -> None:
    """nested.c vmx_get_vmx_msr: allowed-1 settings in bits 63:32 (entry bit 22, exit bit 29)."""
    m = machine()
    boot(m, pks=True)
    for msr, bit in ((MSR_IA32_VMX_ENTRY_CTLS, VM_ENTRY_LOAD_IA32_PKRS), (MSR_IA32_VMX_TRUE_ENTRY_CTLS,
                     VM_ENTRY_LOAD_IA32_PKRS), (MSR_IA32_VMX_EXIT_CTLS, VM_EXIT_LOAD_IA32_PKRS),
                     (MSR_IA32_VMX_TRUE_EXIT_CTLS, VM_EXIT_LOAD_IA32_PKRS)):
        assert vmx_msr(m, msr) >> 32 & bit
    # the non-true MSR ORs in the default1 class, which includes bit 2 (save/load debug controls)
    assert vmx_msr(m, MSR_IA32_VMX_ENTRY_CTLS) & 0x4 and not vmx_msr(m, MSR_IA32_VMX_TRUE_ENTRY_CTLS) & 0x4
    up = machine("upstream-2026")
    boot(up, pks=False)
    assert not vmx_msr(up, MSR_IA32_VMX_TRUE_ENTRY_CTLS) >> 32 & VM_ENTRY_LOAD_IA32_PKRS


def test_userspace_hides_the_pkrs_controls_from_l1() -> None:
    """vmx_restore_control_msr accepts a subset of vmcs_config.nested; L1 then gets VMfail 7 (VMX.CTL)."""
    m = machine()
    boot(m, pks=True, run=False)
    true_entry = vmx_msr(m, MSR_IA32_VMX_TRUE_ENTRY_CTLS)
    hidden = true_entry & ~(VM_ENTRY_LOAD_IA32_PKRS << 32)
    out = m.step(host("set_msrs", msrs=(MSR_IA32_VMX_TRUE_ENTRY_CTLS,), values=(hidden,)))
    assert out.count == 1 and "KVM26.NESTED.CAPMSR" in out.rules
    assert m.snapshot("vcpu0.vmx.entry_ctls_high.load_pkrs") == 0
    assert vmx_msr(m, MSR_IA32_VMX_ENTRY_CTLS) >> 32 & VM_ENTRY_LOAD_IA32_PKRS == 0
    # a later KVM_SET_CPUID2 (before the first run) does not bring it back
    assert m.step(host("set_cpuid", cpuid_7_ecx=CPUID7_ECX_PKS, cpuid_1_ecx=CPUID1_ECX_VMX)).result == "ok"
    assert m.snapshot("vcpu0.vmx.entry_ctls_high.load_pkrs") == 0
    m.step(host("run"))
    m.step(guest("vmwrite", field=VMCS_VM_ENTRY_CONTROLS, value=VM_ENTRY_LOAD_IA32_PKRS))
    failed = m.step(guest("vmlaunch"))
    assert failed.result == "vmfail" and failed.vm_error == 7


@pytest.mark.parametrize(("msr", "value_of", "why"), [
    (MSR_IA32_VMX_ENTRY_CTLS, lambda v: v, "0x484 is generated from the true MSR: EINVAL"),
    (MSR_IA32_VMX_EXIT_CTLS, lambda v: v, "0x483 likewise"),
    (MSR_IA32_VMX_TRUE_ENTRY_CTLS, lambda v: v | (1 << 63), "an allowed-1 bit KVM does not support"),
    (MSR_IA32_VMX_TRUE_EXIT_CTLS, lambda v: v & ~0x1, "a must-be-1 (default1) bit cleared"),
])
def test_vmx_capability_msr_writes_that_fail(msr: int, value_of: object, why: str) -> None:
    m = machine()
    boot(m, pks=True, run=False)
    value = value_of(vmx_msr(m, msr))  # type: ignore[operator]
    assert m.step(host("set_msrs", msrs=(msr,), values=(value,))).count == 0, why


def test_vmx_capability_msrs_are_read_only_in_vmx_operation() -> None:
    """vmx_set_vmx_msr: -EBUSY once vmx->nested.vmxon (any VMX instruction implies VMXON)."""
    m = machine()
    boot(m, pks=True)
    value = vmx_msr(m, MSR_IA32_VMX_TRUE_ENTRY_CTLS)
    assert m.step(host("set_msrs", msrs=(MSR_IA32_VMX_TRUE_ENTRY_CTLS,), values=(value,))).count == 1
    m.step(guest("vmwrite", field=VMCS_GUEST_IA32_PKRS, value=0))
    assert m.step(host("set_msrs", msrs=(MSR_IA32_VMX_TRUE_ENTRY_CTLS,), values=(value,))).count == 0


def test_vmx_capability_msrs_need_vmx_in_guest_cpuid() -> None:
    """vmx_get_msr/vmx_set_msr: nested_vmx_allowed() needs X86_FEATURE_VMX in the guest CPUID."""
    m = machine()
    boot(m, pks=True, vmx=False, run=False)
    assert m.step(host("get_msrs", msrs=(MSR_IA32_VMX_TRUE_ENTRY_CTLS,))).count == 0


# ---------------------------------------------------------------------- KVM26.PCPU
def test_two_vcpus_time_share_one_pcpu_and_each_sees_its_own() -> None:
    m = machine()
    boot(m, 0)
    boot(m, 1)
    m.step(host("vcpu_load", 0, value=0))
    m.step(host("vcpu_load", 1, value=0))
    assert m.snapshot("host.pcpu0.loaded") == 1
    m.step(guest("wrmsr", 0, msr=PKRS, value=0x4))
    assert m.snapshot("host.pcpu0.loaded") == 0  # vCPU 1 was put, vCPU 0 loaded
    m.step(guest("wrmsr", 1, msr=PKRS, value=0x10))
    assert m.step(guest("rdmsr", 0, msr=PKRS)).value == 0x4
    assert m.step(guest("rdmsr", 1, msr=PKRS)).value == 0x10


def test_vcpu_put_leaves_the_pcpu_pkrs_alone() -> None:
    """vmx_vcpu_put/vcpu_load never write IA32_PKRS: only the exit-load control decides it."""
    m2 = get_policy("kvm-rebase-keep").build(HostCpu(frozenset(HOST_FEATURES) - {"host_pks"}))
    boot(m2)
    m2.step(guest("wrmsr", msr=PKRS, value=0x4))
    m2.step(host("vcpu_put"))
    assert m2.snapshot("host.pcpu0.pkrs") == 0x4
    assert m2.snapshot("host.pcpu0.loaded") == -1


# ---------------------------------------------------------------------- KVM26.EXIT.HOSTVAL / HOST.OWN
@pytest.mark.parametrize(("choice", "after_exit"), [("zero", 0), ("ones", 0xFFFF_FFFF), ("keep", 0x4)])
def test_host_pkrs_after_exit_without_host_pks(choice: str, after_exit: int) -> None:
    """Paolo Bonzini (Nov 2025): without host PKS the host PKRS may be 0, all-ones or the guest's."""
    p = get_policy("kvm-rebase").derive("v", "", "", exit_host_pkrs=choice)
    m = p.build(HostCpu(frozenset(HOST_FEATURES) - {"host_pks"}))
    boot(m)
    m.step(guest("wrmsr", msr=PKRS, value=0x4))
    out = m.step(guest("vm_exit"))
    assert m.snapshot("vcpu0.exit_pkrs") == after_exit
    assert "KVM26.HOST.OWN" not in out.rules
    assert m.observe(0)[1] is None  # host CR4.PKS=0: nothing the host does reads it
    with pytest.raises(KeyError):
        m.snapshot("host.pcpu0.host_effective_pkrs")


@pytest.mark.parametrize(("policy", "own"), [("kvm-rebase", True), ("kvm-rebase-ones", True),
                                             ("kvm-rebase-keep", False)])
def test_a_host_that_uses_pks_gets_its_own_pkrs_back(policy: str, own: bool) -> None:
    """KVM26.HOST.OWN (ARCH.CHK.REG): with host CR4.PKS=1 the host's accesses use the pCPU's PKRS."""
    m = machine(policy)
    m.step(host("host_pkrs", value=0x55))
    boot(m)
    m.step(guest("wrmsr", msr=PKRS, value=0x4))
    out = m.step(guest("vm_exit"))
    assert m.snapshot("vcpu0.exit_pkrs") == (0x55 if own else 0x4)
    assert ("KVM26.HOST.OWN" in out.rules) is not own
    assert m.observe(0)[1] == (0x55 if own else 0x4)
