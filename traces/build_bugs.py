"""Write the known-bug corpus ``traces/bugs/`` with the trace builder.

    python traces/build_bugs.py [OUTDIR]      # default: traces/bugs beside this script

One trace per reviewer-found bug and derived observation of the KVM PKS series
(sources/kvm_pks_series.md §11 B1-B18, §12 D1/D3/D5 and P1-P3) and per pKVM MSR-policy case
(seed 004, SPEC §4).  Each file is named after its scenario id.  The expectations are the
*correct* behaviour, the source's "Expected", written by hand from the source text and citing the
SPEC rule they come from; none was produced by running the model.  Where the reference policy
itself has the bug (v7 in B16, B18, D1, D5; every KVM version in B18 and D5), the trace still
expects the correct behaviour, its ``policy`` metadata names the policy that passes, and its
``notes`` say which versions fail and why.  ``traces/bugs/matrix.toml`` states, scenario by
policy, what the sources predict a replay gives; tests/test_bug_matrix.py checks it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from difftest.trace.builder import TraceBuilder
from reference_model.registers import (
    CR0_ET,
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    CR4_PKS,
    MSR_IA32_PKRS,
    MSR_IA32_XSS,
    MSR_STAR,
    MSR_SYSENTER_CS,
    VM_ENTRY_LOAD_IA32_PKRS,
    VM_EXIT_LOAD_IA32_PKRS,
    VMCS_GUEST_IA32_PKRS,
    VMCS_HOST_IA32_PKRS,
    VMCS_VM_ENTRY_CONTROLS,
    VMCS_VM_EXIT_CONTROLS,
)

PKRS = MSR_IA32_PKRS
DEFAULT_OUT = Path(__file__).resolve().parent / "bugs"
SERIES = "sources/kvm_pks_series.md"
SEED4 = "seeds/004 (pKVM-IA pvvmcs part 2 review)"

# MSRs of the pKVM cases that the model's register file does not name (seed 004).
MSR_IA32_FLUSH_CMD = 0x10B  # write-only command MSR (L1D flush), seed 004's example
MSR_IA32_TSC_DEADLINE = 0x6E0  # read/write; every write (re)arms or disarms the timer

# Host CPUs (metadata cpu.features).  Default (None): a PKS host with both load controls.
HOST_NO_PKS = "pku,vmx,ept,unrestricted_guest"
HOST_NO_UG = "pks,pku,vmx,vmx_entry_load_pkrs,vmx_exit_load_pkrs,ept"
HOST_ENTRY_CTL_ONLY = "pks,pku,vmx,vmx_entry_load_pkrs,ept,unrestricted_guest"

A = 0x55  # the host kernel's own PKRS (pkrs_cache) in scenarios that need a visible one
B = 0xAA  # a second host PKRS value
X = 0x4  # AD for key 1: the guest's value in most scenarios
Y = 0x4  # L2's value in nested scenarios
H1 = 0x30  # vmcs12.host_ia32_pkrs (AD|WD for key 2)
G0 = 0x10  # vmcs12.guest_ia32_pkrs (AD for key 2)
SUP = 0x40000000  # a supervisor-mode address
USR = 0x50000000  # a user-mode address


def ad(key: int) -> int:
    """AD bit of ``key`` (bit 2k)."""
    return 1 << (2 * key)


def new(name: str, description: str, *, policy: str = "kvm-v7", source: str, notes: str = "",
        host: str | None = None) -> TraceBuilder:
    return TraceBuilder(name, description, policy=policy, source=source, notes=notes, host_features=host)


def long_mode_l1(t: TraceBuilder, *, pks: bool = False, pku: bool = False, vmx: bool = False,
                 cpuid: bool = True) -> TraceBuilder:
    """Host sets CPUID (unless ``cpuid`` is False), then the guest enters IA-32e paging (4 rows, 3 without CPUID)."""
    if cpuid:
        t.cpuid(pks=pks, pku=pku, vmx=vmx)
    t.long_mode()
    return t.end_setup()


def set_pks(t: TraceBuilder, **cr4: bool) -> TraceBuilder:
    """Guest MOV CR4 |= PKS (plus ``cr4`` bits); KVM.CR4.RSVD allows it with gPKS and cap."""
    return t.cr4(pks=True, **cr4).expect_ok(rule="KVM.CR4.RSVD")


# --- §11 bug scenarios ---------------------------------------------------------------------

def b1() -> TraceBuilder:
    t = new("B1-pdpte-reload", "MOV CR4|=PKS under PAE paging must not reload the PDPTEs", source=(
        f"{SERIES} §11 B1, §3.3; Jim Mattson R1 CALMp9eQ=QUZ04_26eXBGHqvQYnsN6JEgiV=ZSSrE395KLX-atA"),
        notes="RFC v1 has PKS in pdptr_bits: the MOV reloads the corrupted PDPTEs and the guest gets #GP.")
    t.cpuid(pks=True)
    t.cr4(pae=True).cr0(CR0_ET | CR0_PE | CR0_PG | CR0_WP).end_setup()  # PAE paging, EFER.LME=0
    t.event("write_pdpte", rsvd=True)
    # no CR3 reload after the MOV: in PAE paging that would itself load the corrupted PDPTEs
    t.cr4(pks=True, flush=False).expect_ok(rule="ARCH.CR4.RSVD").note("SDM 4.4.1: CR4.PKS does not load PDPTEs")
    return t.snapshot("vcpu0.cr4", CR4_PAE | CR4_PKS, rule="ARCH.CR4.RSVD")


def b2() -> TraceBuilder:
    t = new("B2-msr-index-list", "Without KVM PKS support 0x6E1 must not be in KVM_GET_MSR_INDEX_LIST",
            source=f"{SERIES} §11 B2, §2.4; Jim Mattson R2 CALMp9eQ=QUZ04_26eXBGHqvQYnsN6JEgiV=ZSSrE395KLX-atA",
            notes="RFC v1 lists 0x6E1 even with cap=0 and KVM_GET_MSRS then fails on it.", host=HOST_NO_PKS)
    t.event("get_msr_index_list").expect_value(0, rule="KVM.MSR.LIST")
    return t.get_msrs(PKRS).expect("ok", count=0, rule="KVM.MSR.RD")


def b3() -> TraceBuilder:
    t = new("B3-mmu-role-pks", "Setting CR4.PKS must rebuild pkr_mask (CR4.PKS belongs in the MMU role)",
            source=f"{SERIES} §11 B3, §3.3; Sean 20200930043634.GA29319@linux.intel.com, YBB0AT6xfObR7A5l@google.com",
            notes="RFC v1-v3 have no PKS role bit: the role is unchanged, pkr_mask stays 0, no fault.")
    long_mode_l1(t, pks=True)
    t.wrmsr(PKRS, ad(1)).expect_ok(rule="KVM.MSR.WR")
    set_pks(t)
    return t.access(SUP, write=True, emulated=True, key=1).expect_pf(0x23, rule="KVM.CR4.ROLE")


def b4a() -> TraceBuilder:
    t = new("B4a-pke-not-pks-sup-addr", "With CR4.PKE=1, CR4.PKS=0 PKRS must not govern emulated supervisor accesses",
            source=f"{SERIES} §11 B4a, §5.2; Paolo f4e5dd40-f721-049f-de0f-3af59d48a003@redhat.com",
            notes="RFC v1-v3 build pkr_mask without the address U bit: #PF 0x21 (CPL3: 0x25 instead of 0x05).")
    long_mode_l1(t, pks=True, pku=True)
    t.cr4(pke=True)
    t.wrmsr(PKRS, ad(1)).expect_ok(rule="KVM.MSR.WR")
    t.access(SUP, emulated=True, key=1).expect_ok(rule="KVM.MMU.PKR")
    return t.access(SUP, emulated=True, cpl=3).expect_pf(0x05, rule="KVM.MMU.PKR")


def b4b() -> TraceBuilder:
    t = new("B4b-stale-pkru-user-addr", "With CR4.PKE=0, CR4.PKS=1 a stale PKRU must not govern emulated user-address accesses",
            source=f"{SERIES} §11 B4b, §5.2; Paolo f4e5dd40-f721-049f-de0f-3af59d48a003@redhat.com",
            notes=("RFC v1-v3 do not distinguish PKE from PKS: the user address is checked against PKRU (AD) and "
                   "faults.  The CR0.WP toggle after setting PKS changes the MMU role (role.cr0_wp, KVM background) "
                   "so that pkr_mask is rebuilt with PKS=1 in every version; without it B3 (no PKS role bit in "
                   "RFC v1-v3) would keep the PKE=0 mask and hide B4b."))
    long_mode_l1(t, pks=True, pku=True)
    t.cr4(pke=True)
    t.wrpkru(ad(1))
    t.cr4(pke=False)
    set_pks(t)
    t.cr0(wp=False)
    return t.access(USR, emulated=True, key=1, user=True).expect_ok(rule="KVM.MMU.PKR")


def b5() -> TraceBuilder:
    t = new("B5-host-pkrs-nested-exit", "After an exit from L2 the host must run with its own PKRS",
            source=f"{SERIES} §11 B5, §1.2; Sean R12 YQLa4UErfNbdjv3l@google.com; seed 001",
            notes=("RFC v1-v4 vmx_sync_vmcs_host_state copies only the host-PKRS cache to vmcs02, so "
                   "vmcs02.HOST_IA32_PKRS stays 0 and the exit from L2 loads 0 into the host's PKRS."))
    long_mode_l1(t, pks=True, vmx=True)
    set_pks(t, vmxe=True)
    t.host_pkrs(A)
    t.vmlaunch()
    t.on(level="l2").nested_exit().note("the hardware exit from vmcs02 loads vmcs02's host field")
    return t.snapshot("vcpu0.exit_pkrs", A, rule="KVM.HOST")


def b5_host_change() -> TraceBuilder:
    t = new("B5-host-pkrs-change-nested-exit", "A host PKRS change while vmcs02 is loaded must reach vmcs01 at the nested exit",
            source=f"{SERIES} §11 B5 (variant), §1.2; Sean R12 YQLa4UErfNbdjv3l@google.com",
            notes=("RFC v1-v4: at the nested exit the vmcs01 cache becomes B while its field stays A, so the next "
                   "exit from L1 restores A instead of B."))
    long_mode_l1(t, pks=True, vmx=True)
    set_pks(t, vmxe=True)
    t.host_pkrs(A)
    t.vmlaunch()
    t.host_pkrs(B).note("preempted while L2 runs; the host's PKRS changes")
    t.on(level="l2").nested_exit()
    t.snapshot("vcpu0.vmcs01.host_ia32_pkrs", B, rule="KVM.HOST")
    t.on(level="l1").get_msrs(PKRS).note("exit from L1 to userspace")
    return t.snapshot("vcpu0.hw_pkrs", B, rule="KVM.HOST")


def b6() -> TraceBuilder:
    t = new("B6-cr0-pg-toggle", "A CR0.PG toggle without unrestricted guest must not leave PKRS unswitched",
            source=f"{SERIES} §11 B6, §3.4; Sean R14 YQLa4UErfNbdjv3l@google.com; seed 001",
            notes=("v4 compares the masked hw_cr4 with the old guest CR4: after PG 1->0->1 the load controls stay "
                   "off, the guest runs with the host's PKRS and RDMSR returns the host value copied back at exits."),
            host=HOST_NO_UG)
    t.host_pkrs(A)
    t.cpuid(pks=True)
    t.cr0(CR0_ET | CR0_PE | CR0_PG | CR0_WP).end_setup()  # 32-bit paging
    set_pks(t)
    t.cr0(pg=False)
    t.cr0(pg=True)
    t.wrmsr(PKRS, X).expect_ok(rule="KVM.MSR.WR")
    t.rdmsr(PKRS).expect_value(X, rule="KVM.CTL")
    t.snapshot("vcpu0.pkrs", X, rule="KVM.CTL")
    return t.snapshot("vcpu0.vmcs01.entry_ctls.load_pkrs", 1, rule="KVM.CTL")


def b7() -> TraceBuilder:
    t = new("B7-l2-sets-cr4-pks", "L2 setting CR4.PKS must not open PKRS to L1 with CR4.PKS=0",
            source=f"{SERIES} §11 B7; Sean R15 YQLa4UErfNbdjv3l@google.com; seed 001",
            notes=("v4 runs its CR4 enable path in L2 context: vmcs01's bitmap passes PKRS through while vmcs01's "
                   "controls stay off, so L1's WRMSR reaches the physical MSR, survives the exit, and KVM's copy is "
                   "stale."))
    long_mode_l1(t, pks=True, vmx=True)
    set_pks(t, vmxe=True)
    t.cr4(pks=False).note("v4: disable path (intercept on, controls off)")
    t.host_pkrs(A)
    t.vmlaunch()
    t.on(level="l2").cr4(CR4_PKS, flush=False).expect_ok(rule="KVM.CR4.RSVD")
    t.nested_exit()
    t.on(level="l1").wrmsr(PKRS, X).expect_ok(rule="KVM.MSR.WR")
    t.get_msrs(PKRS).expect("ok", values=(X,), count=1, rule="KVM.MSR.RD")
    return t.snapshot("vcpu0.hw_pkrs", A, rule="KVM.CTL")


def b8() -> TraceBuilder:
    t = new("B8-filter-reintercept", "A userspace MSR filter installed after pass-through must re-intercept 0x6E1",
            source=f"{SERIES} §11 B8, §2.3; Sean R13 YQLa4UErfNbdjv3l@google.com; seed 001",
            notes="v4 special-cases PKRS outside the possible-pass-through list: the access runs natively.")
    long_mode_l1(t, pks=True)
    set_pks(t)
    t.wrmsr(PKRS, X).expect_ok(rule="KVM.MSR.WR")
    t.user_msr_exits(4)
    t.msr_filter("allow", (PKRS,), 0)
    t.rdmsr(PKRS).expect_user_exit(4, rule="KVM.MSR.INTERCEPT")
    return t.wrmsr(PKRS, 0x8).expect_user_exit(4, rule="KVM.MSR.INTERCEPT")


def b9() -> TraceBuilder:
    t = new("B9-reset-vmcs-stale", "RESET must clear PKRS in the VMCS too, not only in KVM's copy",
            source=f"{SERIES} §11 B9, §6; Sean R17 YQLa4UErfNbdjv3l@google.com; seed 001",
            notes=("v4 resets only vcpu->arch.pkrs; RFC v1-v3 do not handle RESET, so vmcs01's guest field keeps X "
                   "(their guest RDMSR reads it).  v5-v7 write 0 through the VMCS."))
    long_mode_l1(t, pks=True)
    set_pks(t)
    t.wrmsr(PKRS, X).expect_ok(rule="KVM.MSR.WR")
    t.reset()
    t.snapshot("vcpu0.vmcs01.guest_ia32_pkrs", 0, rule="KVM.RESET")
    return t.rdmsr(PKRS).expect_value(0, rule="KVM.RESET")


def b10() -> TraceBuilder:
    t = new("B10-merged-role-set-pks", "Setting CR4.PKS while CR4.PKE=1 must rebuild the supervisor half of pkr_mask",
            source=f"{SERIES} §11 B10, §3.3; Sean R18 YQLkczVfCsFp4IxW@google.com, Paolo fd1b39b1-ce99-3626-b502-eb1324001163",
            notes=("v4 merges PKE and PKS into role.cr4_pkr: the role stays 1, the mask is not rebuilt, no fault.  "
                   "RFC v1-v3 pass by accident: their mask does not distinguish PKE from PKS (B4)."))
    long_mode_l1(t, pks=True, pku=True)
    t.cr4(pke=True)
    t.wrmsr(PKRS, ad(1)).expect_ok(rule="KVM.MSR.WR")
    set_pks(t)
    return t.access(SUP, write=True, emulated=True, key=1).expect_pf(0x23, rule="KVM.CR4.ROLE")


def b10_mirror() -> TraceBuilder:
    t = new("B10-mirror-merged-role-clear-pke", "Clearing CR4.PKE while CR4.PKS=1 must rebuild the user half of pkr_mask",
            source=f"{SERIES} §11 B10 (mirror case); Sean R18 YQLkczVfCsFp4IxW@google.com",
            notes=("v4: the merged role bit stays 1, the user half survives and PKRU (AD) wrongly faults an "
                   "emulated user-address read.  RFC v1-v3 fault too (B4: no PKE/PKS distinction)."))
    long_mode_l1(t, pks=True, pku=True)
    set_pks(t, pke=True)
    t.wrpkru(ad(1))
    t.cr4(pke=False)
    return t.access(USR, emulated=True, key=1, user=True).expect_ok(rule="KVM.CR4.ROLE")


def b11a() -> TraceBuilder:
    t = new("B11a-cpuid-removes-pks", "Removing PKS from CPUID must re-intercept 0x6E1",
            source=f"{SERIES} §11 B11a, §2.3; Sean R20 YYmGBhIbzgz+dyqp@google.com",
            notes="v5 never re-enables the intercept: the guest's WRMSR reaches the physical MSR instead of #GP.")
    t.cpuid(pks=True)
    long_mode_l1(t)
    return t.wrmsr(PKRS, X).expect_gp(rule="KVM.MSR.INTERCEPT")


def b11b() -> TraceBuilder:
    t = new("B11b-cpuid-adds-pks", "Adding PKS to CPUID after a CPUID without it must turn the load controls on",
            source=f"{SERIES} §11 B11b, §1.1; Sean R20 YYmGBhIbzgz+dyqp@google.com",
            notes=("v5 clears the controls at the first CPUID without PKS and never sets them again: the guest "
                   "starts with the host's PKRS and its writes leak into the host after the exit."))
    t.cpuid()
    t.cpuid(pks=True)
    t.host_pkrs(A)
    long_mode_l1(t, cpuid=False)
    t.rdmsr(PKRS).expect_value(0, rule="KVM.CTL").note("nothing written since RESET")
    t.wrmsr(PKRS, X).expect_ok(rule="KVM.MSR.WR")
    t.get_msrs(PKRS).note("exit to userspace")
    return t.snapshot("vcpu0.hw_pkrs", A, rule="KVM.CTL")


def b11c() -> TraceBuilder:
    t = new("B11c-no-cpuid-controls-off", "With CPUID never set the load controls are off (v6+)",
            source=f"{SERIES} §11 B11c, §1.1; Sean R20 YYmGBhIbzgz+dyqp@google.com",
            notes=("RFC v1-v5 keep the controls on from vmcs_config (functionally harmless: extra loads).  "
                   "v7R keeps them always on by design (Yo1YKoUOPOLpZnqn), so it differs here too."))
    long_mode_l1(t, cpuid=False)
    t.get_sregs("cr4").note("exit to userspace")
    t.snapshot("vcpu0.vmcs01.entry_ctls.load_pkrs", 0, rule="KVM.CTL")
    return t.snapshot("vcpu0.vmcs01.exit_ctls.load_pkrs", 0, rule="KVM.CTL")


def b12_init() -> TraceBuilder:
    t = new("B12-init-preserves", "INIT preserves PKRS",
            source=(f"{SERIES} §11 B12, §6, §0.3; Chenyi 90935936-4e5a-ad28-84b7-a38f6e642543@intel.com; "
                    "Sean R21 YYqT/cOm3Psf1gj1"),
            notes="v4 zeroes its copy (guest RDMSR is intercepted after INIT and returns 0); v5 clears copy and VMCS.")
    long_mode_l1(t, pks=True)
    set_pks(t)
    t.wrmsr(PKRS, X).expect_ok(rule="KVM.MSR.WR")
    t.init()
    return t.rdmsr(PKRS).expect_value(X, rule="KVM.RESET")


def b12_reset() -> TraceBuilder:
    t = new("B12-reset-clears", "RESET clears PKRS (host KVM_GET_MSRS reads 0)",
            source=f"{SERIES} §11 B12, §6; Sean R21 YYliC1kdT9ssX/f7@google.com",
            notes="RFC v1-v3 do not handle RESET: the VMREAD of vmcs01's guest field still returns X.")
    long_mode_l1(t, pks=True)
    set_pks(t)
    t.wrmsr(PKRS, X).expect_ok(rule="KVM.MSR.WR")
    t.reset()
    return t.get_msrs(PKRS).expect("ok", values=(0,), count=1, rule="KVM.RESET")


def b13() -> TraceBuilder:
    t = new("B13-blind-pkrs-read", "With cap=0 an emulated access must not VMREAD the guest PKRS field",
            source=f"{SERIES} §11 B13, §5.2; Sean R25 YkTLXGdu2I9i44ti@google.com",
            notes=("Functionally no version faults.  v6 VMREADs GUEST_IA32_PKRS on a CPU without it: the kernel "
                   "WARNs (snapshot host.warnings)."),
            host=HOST_NO_PKS)
    long_mode_l1(t, pku=True)
    t.cr4(pke=True)
    t.access(SUP, emulated=True, key=1).expect_ok(rule="KVM.MMU.PKR")
    return t.snapshot("host.warnings", 0, rule="KVM.MMU.PKR")


def b14() -> TraceBuilder:
    t = new("B14-nested-restore-stale-l1-pkrs", "A nested-state restore with L2 active must give L2 its PKRS",
            source=(f"{SERIES} §11 B14, §7.4; Jim R8 CALMp9eSXGjVLXBFmvyVn5RLKOMkVxvVLiR5Sy4abyMiHkeNmdA; "
                    "Sean R26 YkTP7uztERLwynAN"),
            notes=("RFC v1-v6 do not capture vmcs01's PKRS when vmcs12 has LOAD_PKRS, so the restore without a "
                   "pending run writes the stale vmcs01_guest_pkrs (0) into vmcs02.  v7 VMREADs it (!from_vmentry)."))
    long_mode_l1(t, pks=True, vmx=True)
    set_pks(t, vmxe=True)
    t.event("set_msr_bitmap", msr=PKRS, value=0)
    t.vmwrite(VMCS_VM_ENTRY_CONTROLS, VM_ENTRY_LOAD_IA32_PKRS)
    t.vmwrite(VMCS_GUEST_IA32_PKRS, G0)
    t.vmlaunch().expect_ok(rule="KVM.NESTED.ENTRY")
    t.on(level="l2").wrmsr(PKRS, Y).expect_ok(rule="KVM.NESTED.BITMAP")
    t.get_nested_state()
    t.on(vcpu=1).cpuid(pks=True, vmx=True)
    t.set_msrs({PKRS: Y}).expect("ok", count=1, rule="KVM.MSR.WR")
    t.set_nested_state(src_vcpu=0, run_pending=False)
    t.event("run")
    return t.snapshot("vcpu1.pkrs", Y, rule="KVM.NESTED.ENTRY")


def b15() -> TraceBuilder:
    t = new("B15-save-gated-on-cpuid", "Without the entry control in the CPU, a nested exit must not save PKRS to vmcs12",
            source=f"{SERIES} §11 B15, §7.5; Sean R26 YkTP7uztERLwynAN@google.com",
            notes=("v4-v6 gate the save on guest CPUID (userspace-controlled): on a host without PKS they VMREAD a "
                   "field the CPU lacks (WARN: host.warnings) and overwrite vmcs12 with 0."),
            host=HOST_NO_PKS)
    long_mode_l1(t, pks=True, vmx=True)
    t.cr4(vmxe=True)
    t.vmwrite(VMCS_GUEST_IA32_PKRS, G0)
    t.vmlaunch()
    t.on(level="l2").nested_exit()
    t.on(level="l1").vmread(VMCS_GUEST_IA32_PKRS).expect_value(G0, rule="KVM.NESTED.EXIT")
    return t.snapshot("host.warnings", 0, rule="KVM.NESTED.EXIT").note("GUEST_IA32_PKRS is an ext field: synced at the VMREAD")


def b16() -> TraceBuilder:
    t = new("B16-cpuid-while-l2-active", "A CPUID change while vmcs02 is loaded must set vmcs01's load controls",
            policy="kvm-v7r",
            source=(f"{SERIES} §11 B16, §1.1; Jim R7 CALMp9eQiyRxJ0jkvVi+fWMZcDQbvyCcuTwH1wrYV-u_E004Bhg; "
                    "Sean R29 Yo1YKoUOPOLpZnqn"),
            notes=("v7 (and v6, RFC v1-v3) toggle the controls on the loaded VMCS, vmcs02, so after the nested exit "
                   "vmcs01 passes PKRS through with its controls off: L1's PKRS is not context-switched.  v5 fails at "
                   "the same point through B11b; v4 has its controls but fails later through B5.  Only v7R passes."))
    t.host_pkrs(A)
    long_mode_l1(t, vmx=True)
    t.cr4(vmxe=True)
    t.vmlaunch()
    t.get_nested_state()
    t.on(vcpu=1).cpuid(vmx=True)
    t.set_nested_state(src_vcpu=0, run_pending=False)
    t.cpuid(pks=True, vmx=True).note("PKS 0 -> 1 while vmcs02 is loaded")
    t.on(level="l2").nested_exit()
    t.snapshot("vcpu1.vmcs01.exit_ctls.load_pkrs", 1, rule="KVM.CTL")
    t.on(level="l1").wrmsr(PKRS, X).expect_ok(rule="KVM.MSR.WR")
    t.get_msrs(PKRS).note("exit from L1 to userspace")
    return t.snapshot("vcpu1.hw_pkrs", A, rule="KVM.CTL")


def b17() -> TraceBuilder:
    t = new("B17-unpaired-entry-control", "With only the entry control in the CPU, neither control may be used",
            source=f"{SERIES} §11 B17, §1.1; Sean R29 Yo1YKoUOPOLpZnqn@google.com",
            notes=("RFC v1-v5 keep the entry control on from vmcs_config: each entry loads the guest field (0) and "
                   "the exit leaves it, so the host runs with 0 instead of its own PKRS."),
            host=HOST_ENTRY_CTL_ONLY)
    t.host_pkrs(A)
    long_mode_l1(t, cpuid=False)
    t.get_sregs("cr4").note("exit to userspace")
    t.snapshot("vcpu0.hw_pkrs", A, rule="KVM.CTL")
    return t.snapshot("vcpu0.vmcs01.entry_ctls.load_pkrs", 0, rule="KVM.CTL")


def b18() -> TraceBuilder:
    t = new("B18-smi-while-l2", "An SMI while L2 runs must not change PKRS (the SMM handler sees L2's value)",
            policy="hw",
            source=f"{SERIES} §11 B18, §7.4; Sean R30 Yobt1XwOfb5M6Dfa@google.com",
            notes=("Every KVM version (v7R too: Sean asked to leave it) forces an emulated nested exit that loads "
                   "vmcs12.host_ia32_pkrs, so the SMM handler sees H1.  After RSM L2 resumes with Y [D]."))
    long_mode_l1(t, pks=True, vmx=True)
    set_pks(t, vmxe=True)
    t.event("set_msr_bitmap", msr=PKRS, value=0)
    t.vmwrite(VMCS_VM_EXIT_CONTROLS, VM_EXIT_LOAD_IA32_PKRS)
    t.vmwrite(VMCS_HOST_IA32_PKRS, H1)
    t.vmlaunch().expect_ok(rule="KVM.NESTED.ENTRY")
    t.on(level="l2").wrmsr(PKRS, Y).expect_ok(rule="KVM.NESTED.BITMAP")
    t.event("smi")
    t.snapshot("vcpu0.pkrs", Y, rule="KVM.NESTED.EXIT", note="SDM: entering SMM changes no state not saved in SMRAM")
    t.event("rsm")
    return t.snapshot("vcpu0.pkrs", Y, rule="KVM.NESTED.ENTRY")


# --- §12 derived observations and policy-only differences -------------------------------------

def d1() -> TraceBuilder:
    t = new("D1-host-rdmsr-no-gpks", "Host KVM_GET_MSRS of 0x6E1 for a guest without gPKS returns the last value written",
            policy="kvm-v7r", source=f"{SERIES} §12 D1 [D]; Sean Yo1GW/7OuRooi3nT@google.com (exit save)",
            notes=("RFC v1-v3, v5, v6 and v7 run a non-gPKS guest with the controls off: every exit saves the host's "
                   "PKRS into the guest field and the host-initiated read returns it.  v4 (copy) and v7R (controls "
                   "always on) return 0."))
    t.host_pkrs(A)
    long_mode_l1(t)
    return t.get_msrs(PKRS).expect("ok", values=(0,), count=1, rule="KVM.MSR.RD")


def d3() -> TraceBuilder:
    t = new("D3-copy-stale-after-nested-exit", "After a nested exit that loads host_ia32_pkrs, L1 reads that value",
            source=f"{SERIES} §12 D3 [D], §7.5; Sean YQLa4UErfNbdjv3l@google.com (\"unless of course it's running L2\")",
            notes="v4: the emulated exit VMWRITEs vmcs01 but not vcpu->arch.pkrs; with L1 CR4.PKS=0 RDMSR returns L2's value.")
    long_mode_l1(t, pks=True, vmx=True)
    t.cr4(vmxe=True)
    t.event("set_msr_bitmap", msr=PKRS, value=0)
    t.vmwrite(VMCS_VM_EXIT_CONTROLS, VM_EXIT_LOAD_IA32_PKRS)
    t.vmwrite(VMCS_HOST_IA32_PKRS, H1)
    t.vmlaunch().expect_ok(rule="KVM.NESTED.ENTRY")
    t.on(level="l2").wrmsr(PKRS, Y).expect_ok(rule="KVM.NESTED.BITMAP")
    t.nested_exit()
    return t.on(level="l1").rdmsr(PKRS).expect_value(H1, rule="KVM.NESTED.EXIT")


def d5() -> TraceBuilder:
    t = new("D5-nested-exit-without-load", "A nested exit without the exit-load control leaves L2's PKRS (architecture)",
            policy="hw", source=f"{SERIES} §12 D5 [D], §7.5; SPEC VMX.EXIT.LOAD, KVM.NESTED.EXIT",
            notes=("Every KVM version, v7 and v7R included, resumes L1 with its pre-entry PKRS (vmcs01's guest field): "
                   "a general nested-KVM simplification (BNDCFGS and PAT alike, SPEC KVM.NESTED.EXIT); only hw passes."))
    long_mode_l1(t, pks=True, vmx=True)
    set_pks(t, vmxe=True)
    t.wrmsr(PKRS, 0x8).expect_ok(rule="KVM.MSR.WR")
    t.event("set_msr_bitmap", msr=PKRS, value=0)
    t.vmlaunch().expect_ok(rule="KVM.NESTED.ENTRY")
    t.on(level="l2").wrmsr(PKRS, Y).expect_ok(rule="KVM.NESTED.BITMAP")
    t.nested_exit()
    return t.on(level="l1").rdmsr(PKRS).expect_value(Y, rule="VMX.EXIT.LOAD")


def p1() -> TraceBuilder:
    t = new("P1-intercept-with-cr4-pks-0", "With gPKS, 0x6E1 is passed through even while CR4.PKS=0",
            source=f"{SERIES} §12 P1, §2.3; Paolo R6 62f5f5ba-cbe9-231d-365a-80a656208e37; Sean YQLa4UErfNbdjv3l",
            notes="v4 intercepts while CR4.PKS=0 (Paolo's RFC v1 request); policy-only, not a bug.")
    long_mode_l1(t, pks=True)
    t.wrmsr(PKRS, X).expect_ok(rule="KVM.MSR.WR")
    t.snapshot("vcpu0.msr_bitmap.0x6e1.write", 0, rule="KVM.MSR.INTERCEPT")
    return t.snapshot("vcpu0.msr_bitmap.0x6e1.read", 0, rule="KVM.MSR.INTERCEPT")


def p2() -> TraceBuilder:
    t = new("P2-initial-controls", "Before any CPUID the load controls are off (v6/v7)",
            source=f"{SERIES} §12 P2, §1.1; Sean R20 YYmGBhIbzgz+dyqp@google.com",
            notes="RFC v1-v5 start with the controls on; v7R keeps them always on.  Policy-only.")
    t.event("create_vcpu")
    t.snapshot("vcpu0.vmcs01.entry_ctls.load_pkrs", 0, rule="KVM.CTL")
    return t.snapshot("vcpu0.vmcs01.exit_ctls.load_pkrs", 0, rule="KVM.CTL")


def p3() -> TraceBuilder:
    t = new("P3-vmread-pattern", "Three host reads of 0x6E1 with no guest entry between need at most one VMREAD",
            source=f"{SERIES} §12 P3, §1.3, §4; Sean YQLa4UErfNbdjv3l@google.com",
            notes=("Functionally every version returns X.  The VMREAD count over the three reads (counter "
                   "vmread.GUEST_IA32_PKRS) is RFC v1-v3: 3, v4: 1 (at the exit), v5-v7: 1 (lazy); "
                   "tests/test_bug_matrix.py checks it."))
    long_mode_l1(t, pks=True)
    set_pks(t)
    t.wrmsr(PKRS, X).expect_ok(rule="KVM.MSR.WR")
    for _ in range(3):
        t.get_msrs(PKRS).expect("ok", values=(X,), count=1, rule="KVM.CACHE")
    return t


# --- pKVM MSR-policy cases (seed 004, SPEC §4) -------------------------------------------------
#
# A host MSR write or read that pKVM refuses (its PV call returns -EPERM) surfaces through the
# ioctl as KVM_SET_MSRS / KVM_GET_MSRS stopping at that MSR: result ok, count 0 (KVM.MSR.WR).
# KVM_SET_CPUID2, a single PV call, fails with EPERM.

def pk1() -> TraceBuilder:
    t = new("PKVM1-write-only-msr", "Before a pVM runs, a host write of a write-only MSR is refused",
            policy="pkvm-pvm-allow8", source=f"{SEED4}; SPEC PKVM.MSR.PRE",
            notes=("compare refuses it because the read-back cannot equal the command written (seed 004: it "
                   "'breaks' such MSRs); allow5/allow8 refuse it because it is not listed."))
    return t.set_msrs({MSR_IA32_FLUSH_CMD: 1}).expect("ok", count=0, rule="PKVM.MSR.PRE")


def pk2() -> TraceBuilder:
    t = new("PKVM2-side-effect-msr", "Before a pVM runs, a same-value write of a side-effecting MSR is refused, not skipped",
            policy="pkvm-pvm-allow8", source=f"{SEED4}; SPEC PKVM.MSR.PRE",
            notes=("compare returns success for a value equal to the current one without performing the write, so "
                   "the write's side effect (disarming the TSC deadline timer) is lost; the allowlists refuse it."))
    return t.set_msrs({MSR_IA32_TSC_DEADLINE: 0}).expect("ok", count=0, rule="PKVM.MSR.PRE")


def pk3() -> TraceBuilder:
    t = new("PKVM3-pkrs-before-start", "Before a pVM runs, host writes of 0x6E1 are refused (in no allowlist)",
            policy="pkvm-pvm-allow8", source=f"{SEED4}; SPEC PKVM.MSR.PRE",
            notes="compare accepts the same-value write (0 = current) and refuses the changed one.")
    t.cpuid(pks=True)
    t.set_msrs({PKRS: 0}).expect("ok", count=0, rule="PKVM.MSR.PRE")
    return t.set_msrs({PKRS: X}).expect("ok", count=0, rule="PKVM.MSR.PRE")


def pk4() -> TraceBuilder:
    t = new("PKVM4-pkrs-after-start", "After a pVM runs, host reads and writes of 0x6E1 are refused; the guest's own work",
            policy="pkvm-pvm-allow8", source=f"{SEED4}; SPEC PKVM.PROTECT")
    t.cpuid(pks=True)
    t.event("pvm_start")
    t.wrmsr(PKRS, X).expect_ok(rule="KVM.MSR.WR")
    t.get_msrs(PKRS).expect("ok", count=0, rule="PKVM.PROTECT")
    return t.set_msrs({PKRS: X}).expect("ok", count=0, rule="PKVM.PROTECT")


def pk5() -> TraceBuilder:
    t = new("PKVM5-cpuid-after-start", "After a pVM runs its CPUID is immutable",
            policy="pkvm-pvm-allow8", source=f"{SEED4} (\"immutable once pVM runs\"); SPEC PKVM.CPUID")
    t.cpuid(pks=True).expect_ok(rule="PKVM.CPUID")
    t.event("pvm_start")
    t.cpuid().expect("eperm", rule="PKVM.CPUID")
    return t.snapshot("vcpu0.cpuid.7.ecx", 1 << 31, rule="PKVM.CPUID")


def pk6() -> TraceBuilder:
    t = new("PKVM6-xss-reset-write", "KVM's reset write of IA32_XSS is refused harmlessly; XSS is in no allowlist",
            policy="pkvm-pvm-allow8", source=f"{SEED4} (\"Probably no need to allow MSR_IA32_XSS\"); SPEC PKVM.MSR.PRE",
            notes="compare accepts a host XSS write equal to the current value (0).")
    t.cpuid()
    t.reset().expect_ok(rule="PKVM.MSR.PRE")
    return t.set_msrs({MSR_IA32_XSS: 0}).expect("ok", count=0, rule="PKVM.MSR.PRE")


def pk7() -> TraceBuilder:
    t = new("PKVM7-allowlisted-msrs", "Before a pVM runs, the host may write the SYSCALL and SYSENTER MSRs crosvm sets",
            policy="pkvm-pvm-allow8", source=f"{SEED4} (crosvm set_long_mode_msrs); SPEC PKVM.MSR.PRE",
            notes="compare refuses the changed STAR value; allow5 refuses SYSENTER_CS.")
    t.set_msrs({MSR_STAR: 0x0023001000000000}).expect("ok", count=1, rule="PKVM.MSR.PRE")
    return t.set_msrs({MSR_SYSENTER_CS: 0x10}).expect("ok", count=1, rule="PKVM.MSR.PRE")


SCENARIOS: tuple[Callable[[], TraceBuilder], ...] = (
    b1, b2, b3, b4a, b4b, b5, b5_host_change, b6, b7, b8, b9, b10, b10_mirror, b11a, b11b, b11c,
    b12_init, b12_reset, b13, b14, b15, b16, b17, b18, d1, d3, d5, p1, p2, p3,
    pk1, pk2, pk3, pk4, pk5, pk6, pk7,
)


def build_corpus() -> list[TraceBuilder]:
    """Every bug trace, built fresh."""
    out = [make() for make in SCENARIOS]
    names = [t.meta["name"] for t in out]
    if len(set(names)) != len(names):
        raise ValueError("duplicate trace names")
    return out


def scenario_id(name: str) -> str:
    """The scenario id a trace name starts with (``B5-host-pkrs-nested-exit`` -> ``B5``)."""
    return name.split("-", 1)[0]


def write_corpus(out_dir: Path) -> list[Path]:
    """Write every trace into ``out_dir`` (atomically, one file each)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [t.write(out_dir / f"{t.meta['name']}.parquet") for t in build_corpus()]


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print("usage: python traces/build_bugs.py [OUTDIR]", file=sys.stderr)
        return 2
    out_dir = Path(argv[0]) if argv else DEFAULT_OUT
    written = write_corpus(out_dir)
    print(f"wrote {len(written)} traces to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
