"""Write the rebase scenario corpus ``traces/rebase/`` with the trace builder.

    python traces/build_rebase.py [OUTDIR]      # default: traces/rebase beside this script

Scenarios for the series rebased on KVM v6.18 (issue 16): vCPUs of two VMs time-sharing one
physical CPU, L1 and L2 sharing it with another VM, hosts with and without the entry/exit-load
pair, a host that uses PKS itself and one that never sets CR4.PKS, and the 2026 base's ioctl
rules.  The expectations were written by hand from the rule each row cites: the SDM (VMX.ENTRY.LOAD:
an entry with the control loads the guest field, without it PKRS is unchanged; VMX.EXIT.LOAD;
ARCH.MSR.INDEP; ARCH.RIGHTS), the upstream functions behind the KVM26.* rules (rules.py), and
KVM26.HOST.OWN (a host with CR4.PKS=1 has its supervisor accesses checked against the pCPU's PKRS,
ARCH.CHK.REG).  None was produced by running the model.

Every trace replays clean under ``kvm-rebase``.  The two traces whose host uses PKS (R1, R3)
diverge under ``kvm-rebase-keep`` at KVM26.HOST.OWN: that is where "leave the guest's PKRS" is
unsafe; on the hosts that never set CR4.PKS (R4a, R4b) all three host-value choices agree.

The two "VMs" are two vCPUs of one model machine: nothing VM-wide (MSR filter, userspace exits,
page tables' contents) differs between them in these scenarios, and PKRS is per (v)CPU.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from difftest.trace.builder import TraceBuilder
from reference_model.host import HOST_FEATURES
from reference_model.registers import (
    MSR_IA32_PKRS,
    MSR_IA32_VMX_ENTRY_CTLS,
    MSR_IA32_VMX_TRUE_ENTRY_CTLS,
    VM_ENTRY_LOAD_IA32_PKRS,
    VM_EXIT_LOAD_IA32_PKRS,
    VMCS_GUEST_IA32_PKRS,
    VMCS_HOST_IA32_PKRS,
    VMCS_VM_ENTRY_CONTROLS,
    VMCS_VM_EXIT_CONTROLS,
)

PKRS = MSR_IA32_PKRS
DEFAULT_OUT = Path(__file__).resolve().parent / "rebase"
ISSUE = "issue 16; sources/field_2026.md §1.4"
PAOLO = "Paolo Bonzini CABgObfZc4FQa9sj=FK5Q-tQxr2yQ-9Ez69R5z=5_R0x5MS1d0A@mail.gmail.com"


def features(*without: str) -> str:
    return ",".join(f for f in HOST_FEATURES if f not in without)


HOST_USES_PKS = features()  # the v7-era host: the kernel runs with CR4.PKS=1 and its own PKRS
HOST_2026 = features("host_pks")  # an upstream 2026 kernel on a PKS CPU: CR4.PKS never set
HOST_NO_ENTRY_CTL = features("vmx_entry_load_pkrs")  # the exit-load control alone (uses PKS)

A = 0x55  # the host kernel's own PKRS (pkrs_cache) where the host uses PKS
X = 0x4  # VM A's PKRS: AD for key 1
Y = 0x10  # VM B's PKRS: AD for key 2
G = 0x40  # L2's PKRS: AD for key 3
H1 = 0x100  # vmcs12.host_ia32_pkrs: AD for key 4
SUP = 0x40000000  # a supervisor-mode address
PF_READ_PK = 0x21  # P | PK: a supervisor read denied by its key (ARCH.PFEC.PK)
# IA32_VMX_TRUE_ENTRY_CTLS as KVM reports it, reduced to what every KVM reports: allowed-0 = the
# default1 class minus "load debug controls" (KVM frees it), allowed-1 = default1 (+ load PKRS).
ENTRY_DEFAULT1 = 0x11FF
TRUE_ENTRY_LOW = ENTRY_DEFAULT1 & ~0x4


def new(name: str, description: str, *, host: str, source: str, notes: str = "",
        policy: str = "kvm-rebase") -> TraceBuilder:
    return TraceBuilder(name, description, policy=policy, source=source, notes=notes, host_features=host)


def boot(t: TraceBuilder, vcpu: int, *, vmx: bool = False) -> TraceBuilder:
    """Host sets CPUID with PKS (and VMX), the guest enters IA-32e paging."""
    t.on(vcpu=vcpu, level="l1")
    t.cpuid(pks=True, vmx=vmx)
    return t.long_mode()


def load(t: TraceBuilder, vcpu: int, pcpu: int = 0) -> TraceBuilder:
    """The vCPU's thread is scheduled on ``pcpu`` (KVM26.PCPU)."""
    return t.event("vcpu_load", vcpu=vcpu, level="host", value=pcpu).expect_ok(rule="KVM26.PCPU")


def to_userspace(t: TraceBuilder, vcpu: int) -> TraceBuilder:
    """An exit to userspace of ``vcpu`` (KVM_GET_SREGS): the host runs on the pCPU afterwards."""
    return t.on(vcpu=vcpu).get_sregs("cr4")


# --- two VMs on one pCPU -------------------------------------------------------------------

def two_vms(name: str, description: str, host: str, host_uses_pks: bool, notes: str) -> TraceBuilder:
    """VM A (vCPU 0) and VM B (vCPU 1) alternate on pCPU 0; each only ever sees its own PKRS."""
    t = new(name, description, host=host, source=f"{ISSUE}; {PAOLO}; SDM VMX.ENTRY.LOAD", notes=notes)
    if host_uses_pks:
        t.host_pkrs(A)
    boot(t, 0)
    boot(t, 1)
    load(t, 0)
    load(t, 1)
    t.end_setup()
    t.snapshot("host.supported_cpuid.7.ecx.pks", 1, rule="KVM26.CAP.SOURCE")
    t.event("get_msr_index_list", level="host").expect_value(1, rule="KVM26.MSR.LIST")
    t.on(vcpu=0).wrmsr(PKRS, X).expect_ok(rule="ARCH.MSR.INDEP")
    t.on(vcpu=1).wrmsr(PKRS, Y).expect_ok(rule="ARCH.MSR.INDEP").note("VM A is put, VM B runs on the same pCPU")
    t.snapshot("host.pcpu0.loaded", 1, rule="KVM26.PCPU")
    if host_uses_pks:
        t.snapshot("vcpu0.exit_pkrs", A, rule="KVM26.HOST.OWN", note="VM A's exit gave the host its own PKRS back")
    t.on(vcpu=0).rdmsr(PKRS).expect_value(X, rule="VMX.ENTRY.LOAD").note("A starts from its own value, not B's")
    t.on(vcpu=1).rdmsr(PKRS).expect_value(Y, rule="VMX.ENTRY.LOAD")
    for vcpu in (0, 1):
        t.on(vcpu=vcpu).cr4(pks=True).expect_ok(rule="KVM.CR4.RSVD")
    t.on(vcpu=0).access(SUP, key=1).expect_pf(PF_READ_PK, rule="ARCH.RIGHTS").note("X denies key 1")
    t.on(vcpu=1).access(SUP, key=1).expect_ok(rule="ARCH.RIGHTS").note("Y does not: B never sees A's X")
    t.on(vcpu=0).vm_exit().expect_ok(rule="VMX.EXIT.SAVE")
    t.on(vcpu=1).access(SUP, key=2).expect_pf(PF_READ_PK, rule="ARCH.RIGHTS")
    t.on(vcpu=0).access(SUP, key=2).expect_ok(rule="ARCH.RIGHTS")
    to_userspace(t, 0)
    if host_uses_pks:
        t.snapshot("vcpu0.exit_pkrs", A, rule="KVM26.HOST.OWN")
        t.snapshot("host.pcpu0.host_effective_pkrs", A, rule="KVM26.HOST.OWN")
    to_userspace(t, 1)
    if host_uses_pks:
        t.snapshot("vcpu1.exit_pkrs", A, rule="KVM26.HOST.OWN")
    return t


def r1() -> TraceBuilder:
    return two_vms(
        "R1-two-vms-one-pcpu-host-uses-pks", "Two VMs alternate on one pCPU of a host that uses PKS itself",
        HOST_USES_PKS, True,
        "Both load controls are on for every vCPU (v7R: always), so each entry loads the vCPU's own PKRS.  The "
        "host runs with CR4.PKS=1: after every VM exit it must have its own PKRS (A) back.  kvm-rebase and "
        "kvm-rebase-ones load it through the exit-load control; kvm-rebase-keep has no exit-load control and leaves "
        "the guest's value in the host (KVM26.HOST.OWN): the case where Paolo's premise (host CR4.PKS=0) is false.")


def r2() -> TraceBuilder:
    t = new("R2-two-vms-one-pcpu-no-entry-ctl",
            "Two VMs on one pCPU of a CPU with the exit-load control but not the entry-load one: PKS is not offered",
            host=HOST_NO_ENTRY_CTL, source=f"{ISSUE}; torvalds/linux vmx.c setup_vmcs_config, vmx_set_cpu_caps; "
            "sources/kvm_pks_series.md D2",
            notes=("vmcs_entry_exit_pairs clears an unpaired control and vmx_set_cpu_caps then clears PKS (as for "
                   "CET), so neither guest can set or read PKRS and none can see the other's.  v7 and v7R still "
                   "advertise PKS (D2): with no usable load control a guest's WRMSR goes straight to the CPU and "
                   "stays there, so the host runs with it and, on a shared pCPU, the next guest starts with it "
                   "(SDM: without the controls entries and exits leave PKRS unchanged)."))
    t.host_pkrs(A)
    boot(t, 0)
    boot(t, 1)
    load(t, 0)
    load(t, 1)
    t.end_setup()
    t.snapshot("host.supported_cpuid.7.ecx.pks", 0, rule="KVM26.CTL.PAIR")
    t.event("get_msr_index_list", level="host").expect_value(0, rule="KVM26.MSR.LIST")
    t.snapshot("vcpu0.vmx.entry_ctls_high.load_pkrs", 0, rule="KVM26.NESTED.CAPS")
    t.snapshot("vcpu0.vmx.exit_ctls_high.load_pkrs", 0, rule="KVM26.NESTED.CAPS")
    t.on(vcpu=0).wrmsr(PKRS, X).expect_gp(rule="KVM26.CTL.PAIR")
    t.on(vcpu=1).rdmsr(PKRS).expect_gp(rule="KVM26.CTL.PAIR")
    t.on(vcpu=0).cr4(pks=True).expect_gp(rule="KVM26.CTL.PAIR")
    t.on(vcpu=1).wrmsr(PKRS, Y).expect_gp(rule="KVM26.CTL.PAIR")
    to_userspace(t, 1)
    t.snapshot("vcpu1.exit_pkrs", A, rule="KVM26.HOST.OWN")
    return t.snapshot("host.pcpu0.host_effective_pkrs", A, rule="KVM26.HOST.OWN")


# --- L1 and L2 sharing a pCPU with another VM -----------------------------------------------

def l1_l2(name: str, description: str, host: str, host_uses_pks: bool, notes: str) -> TraceBuilder:
    """vCPU 0 runs L1 and L2, vCPU 1 (another VM) runs on the same pCPU in between."""
    t = new(name, description, host=host, notes=notes,
            source=f"{ISSUE}; SDM VMX.ENTRY.LOAD/VMX.EXIT.LOAD; SPEC KVM.NESTED.ENTRY/EXIT")
    if host_uses_pks:
        t.host_pkrs(A)
    boot(t, 0, vmx=True)
    t.cr4(pks=True, vmxe=True).expect_ok(rule="KVM.CR4.RSVD")
    boot(t, 1)
    load(t, 0)
    load(t, 1)
    t.end_setup()
    t.on(vcpu=0).wrmsr(PKRS, X).expect_ok(rule="ARCH.MSR.INDEP")
    t.event("set_msr_bitmap", msr=PKRS, value=0)
    t.vmwrite(VMCS_VM_EXIT_CONTROLS, VM_EXIT_LOAD_IA32_PKRS).expect_ok(rule="VMX.FIELD")
    t.vmwrite(VMCS_HOST_IA32_PKRS, H1).expect_ok(rule="VMX.FIELD")
    t.vmlaunch().expect_ok(rule="KVM.NESTED.ENTRY").note("no entry-load control in vmcs12: L2 starts with L1's PKRS")
    t.on(vcpu=1).wrmsr(PKRS, Y).expect_ok(rule="ARCH.MSR.INDEP").note("the other VM runs on the pCPU")
    t.on(vcpu=0, level="l2").rdmsr(PKRS).expect_value(X, rule="VMX.ENTRY.LOAD")
    t.wrmsr(PKRS, G).expect_ok(rule="KVM.NESTED.BITMAP")
    t.on(vcpu=1, level="l1").rdmsr(PKRS).expect_value(Y, rule="VMX.ENTRY.LOAD")
    t.on(vcpu=0, level="l2").rdmsr(PKRS).expect_value(G, rule="VMX.ENTRY.LOAD").note("L2 gets its own value back")
    t.nested_exit().expect_ok(rule="KVM.NESTED.EXIT")
    t.on(level="l1").rdmsr(PKRS).expect_value(H1, rule="VMX.EXIT.LOAD").note("vmcs12's exit load: host_ia32_pkrs")
    t.vmwrite(VMCS_VM_ENTRY_CONTROLS, VM_ENTRY_LOAD_IA32_PKRS).expect_ok(rule="VMX.FIELD")
    t.vmwrite(VMCS_GUEST_IA32_PKRS, G).expect_ok(rule="VMX.FIELD")
    t.vmresume().expect_ok(rule="KVM.NESTED.ENTRY").note("now with vmcs12's entry load")
    t.on(vcpu=1, level="l1").rdmsr(PKRS).expect_value(Y, rule="VMX.ENTRY.LOAD")
    t.on(vcpu=0, level="l2").rdmsr(PKRS).expect_value(G, rule="VMX.ENTRY.LOAD")
    t.nested_exit().expect_ok(rule="KVM.NESTED.EXIT")
    t.on(level="l1").rdmsr(PKRS).expect_value(H1, rule="VMX.EXIT.LOAD")
    to_userspace(t, 0)
    if host_uses_pks:
        t.snapshot("vcpu0.exit_pkrs", A, rule="KVM26.HOST.OWN")
    to_userspace(t, 1)
    if host_uses_pks:
        t.snapshot("vcpu1.exit_pkrs", A, rule="KVM26.HOST.OWN")
    return t


def r3() -> TraceBuilder:
    return l1_l2(
        "R3-l1-l2-share-pcpu-host-uses-pks", "L1, L2 and another VM share one pCPU of a host that uses PKS",
        HOST_USES_PKS, True,
        "vmcs02 inherits vmcs01's always-on controls, so every hardware entry of L1, L2 or the other VM loads "
        "that context's own PKRS.  Under kvm-rebase-keep the host is left with whichever guest ran last "
        "(KVM26.HOST.OWN).  The nested exits use vmcs12's exit-load control: without it every KVM version resumes "
        "L1 with its pre-entry PKRS (D5), which this corpus does not re-test.")


def r4a() -> TraceBuilder:
    return two_vms(
        "R4a-two-vms-one-pcpu-host-cr4-pks-off", "Two VMs on one pCPU of a host that never sets CR4.PKS",
        HOST_2026, False,
        f"Paolo's case ({PAOLO}): the host kernel clears CR4.PKS, so no host access reads PKRS and the host value "
        "after an exit (0, all-ones or the guest's) cannot be observed; the entry-load control still gives each "
        "guest its own value.  kvm-rebase, -ones and -keep agree on every row (difftest compare).")


def r4b() -> TraceBuilder:
    return l1_l2(
        "R4b-l1-l2-share-pcpu-host-cr4-pks-off", "L1, L2 and another VM share one pCPU of a host that never sets CR4.PKS",
        HOST_2026, False,
        f"Paolo's case ({PAOLO}) with nesting: vmcs02's entry-load control (vmcs01's, always on) makes L2 start "
        "from its own value whatever the last exit left in the pCPU.  The three host-value choices agree.")


# --- the 2026 base's ioctl rules ---------------------------------------------------------------

def r5() -> TraceBuilder:
    t = new("R5-set-cpuid-after-run-l2-active", "KVM_SET_CPUID2 after KVM_RUN while L2 runs: only the same table",
            host=HOST_2026, source="torvalds/linux arch/x86/kvm/cpuid.c kvm_set_cpuid, kvm_cpuid_check_equal",
            notes=("kvm_set_cpuid has no guest-mode check: a changed table is EINVAL; an identical one succeeds and "
                   "re-runs kvm_vcpu_after_set_cpuid, which under v7 would act on vmcs02 (B16) and under the "
                   "rebase leaves the always-on controls alone."))
    boot(t, 0, vmx=True)
    t.cr4(pks=True, vmxe=True).expect_ok(rule="KVM.CR4.RSVD")
    t.end_setup()
    t.event("set_msr_bitmap", msr=PKRS, value=0)
    t.vmwrite(VMCS_VM_ENTRY_CONTROLS, VM_ENTRY_LOAD_IA32_PKRS).expect_ok(rule="VMX.FIELD")
    t.vmwrite(VMCS_GUEST_IA32_PKRS, G).expect_ok(rule="VMX.FIELD")
    t.vmlaunch().expect_ok(rule="KVM.NESTED.ENTRY")
    t.cpuid(pks=False, vmx=True).expect("einval", rule="KVM26.CPUID.FROZEN").note("PKS 1 -> 0 after KVM_RUN")
    t.event("get_cpuid", level="host").expect_value(1 << 31, rule="KVM26.CPUID.FROZEN")
    t.cpuid(pks=True, vmx=True).expect_ok(rule="KVM26.CPUID.FROZEN").note("the identical table")
    t.snapshot("vcpu0.nested.guest_mode", 1, rule="KVM26.CPUID.FROZEN")
    t.snapshot("vcpu0.vmcs02.entry_ctls.load_pkrs", 1, rule="KVM.CTL")
    t.snapshot("vcpu0.vmcs01.entry_ctls.load_pkrs", 1, rule="KVM.CTL")
    t.on(level="l2").rdmsr(PKRS).expect_value(G, rule="VMX.ENTRY.LOAD")
    t.on(level="l1").cpuid(pks=False, vmx=True).expect("einval", rule="KVM26.CPUID.FROZEN")
    return t


def r6() -> TraceBuilder:
    t = new("R6-vmx-cap-msrs-hide-pkrs", "Userspace hides the load-PKRS controls from L1 through the VMX MSRs",
            host=HOST_2026,
            source=("torvalds/linux arch/x86/kvm/vmx/nested.c vmx_set_vmx_msr, vmx_restore_control_msr, "
                    "vmx_get_vmx_msr; SDM A.5"),
            notes=("A migration target without the controls: the VMM writes IA32_VMX_TRUE_ENTRY_CTLS without bit 54 "
                   "(allowed-1 of bit 22) before the vCPU runs.  0x484 is generated from the true MSR and cannot be "
                   "written (EINVAL); once L1 is in VMX operation the MSRs are read-only (EBUSY).  L1 asking for the "
                   "hidden control gets VMfail 7."))
    t.on(vcpu=0).cpuid(pks=True, vmx=True)
    t.end_setup()
    full = ((ENTRY_DEFAULT1 | VM_ENTRY_LOAD_IA32_PKRS) << 32) | TRUE_ENTRY_LOW
    hidden = (ENTRY_DEFAULT1 << 32) | TRUE_ENTRY_LOW
    t.snapshot("vcpu0.vmx.entry_ctls_high.load_pkrs", 1, rule="KVM26.NESTED.CAPS")
    t.set_msrs({MSR_IA32_VMX_TRUE_ENTRY_CTLS: hidden}).expect("ok", count=1, rule="KVM26.NESTED.CAPMSR")
    t.snapshot("vcpu0.vmx.entry_ctls_high.load_pkrs", 0, rule="KVM26.NESTED.CAPMSR")
    t.set_msrs({MSR_IA32_VMX_ENTRY_CTLS: full}).expect("ok", count=0, rule="KVM26.NESTED.CAPMSR")
    t.set_msrs({MSR_IA32_VMX_TRUE_ENTRY_CTLS: full | (1 << 63)}).expect("ok", count=0, rule="KVM26.NESTED.CAPMSR")
    t.snapshot("vcpu0.vmx.entry_ctls_high.load_pkrs", 0, rule="KVM26.NESTED.CAPMSR")
    t.cpuid(pks=True, vmx=True).note("a CPUID update does not bring the control back")
    t.snapshot("vcpu0.vmx.entry_ctls_high.load_pkrs", 0, rule="KVM26.NESTED.CAPS")
    t.long_mode()
    t.cr4(pks=True, vmxe=True).expect_ok(rule="KVM.CR4.RSVD")
    t.vmwrite(VMCS_VM_ENTRY_CONTROLS, VM_ENTRY_LOAD_IA32_PKRS).expect_ok(rule="VMX.FIELD")
    t.vmlaunch().expect("vmfail", vm_error=7, rule="VMX.CTL")
    t.set_msrs({MSR_IA32_VMX_TRUE_ENTRY_CTLS: full}).expect("ok", count=0, rule="KVM26.NESTED.CAPMSR")
    return t.note("L1 is in VMX operation: EBUSY")


SCENARIOS: tuple[Callable[[], TraceBuilder], ...] = (r1, r2, r3, r4a, r4b, r5, r6)


def build_corpus() -> list[TraceBuilder]:
    out = [make() for make in SCENARIOS]
    names = [t.meta["name"] for t in out]
    if len(set(names)) != len(names):
        raise ValueError("duplicate trace names")
    return out


def write_corpus(out_dir: Path) -> list[Path]:
    """Write every trace into ``out_dir`` (atomically, one file each)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [t.write(out_dir / f"{t.meta['name']}.parquet") for t in build_corpus()]


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print("usage: python traces/build_rebase.py [OUTDIR]", file=sys.stderr)
        return 2
    out_dir = Path(argv[0]) if argv else DEFAULT_OUT
    written = write_corpus(out_dir)
    print(f"wrote {len(written)} traces to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
