"""Write the hypervisor corpora ``traces/pkvm/``, ``traces/pvm/`` and ``traces/xen/`` with the trace builder.

    python traces/build_hypervisors.py [OUTDIR]   # default: traces/ beside this script

``pkvm/``: one trace per rule of pKVM as merged (PKVM.MSR.*, PKVM.PV.*, PKVM.GUEST.MSR,
PKVM.CPUID.*, PKVM.NOPKS), each expectation citing the pKVM function it comes from (the trace's
``source``; the rule's function is in ``reference_model.rules.RULE_SOURCES``).  ``pvm/``: PVM's
PKS, expectations from the sentences of ``pvm-spec.rst`` quoted in each trace's notes.
``xen/``: Xen's own page walk against the SDM.  Every expectation was written by hand from the
source named beside it; none was produced by running the model.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from difftest.trace.builder import TraceBuilder
from reference_model.registers import (
    MSR_IA32_PKRS,
    MSR_IA32_XSS,
    MSR_LSTAR,
    MSR_STAR,
    MSR_SYSENTER_CS,
    PF_P,
    PF_PK,
    PF_U,
    PF_W,
)

PKRS = MSR_IA32_PKRS
DEFAULT_OUT = Path(__file__).resolve().parent
PKVM_C = "intel-staging/pKVM-IA pkvm-v6.18 arch/x86/kvm/pkvm/pkvm.c"
X86_C = "intel-staging/pKVM-IA pkvm-v6.18 arch/x86/kvm/x86.c (built with __PKVM_HYP__)"
CPUID_C = "intel-staging/pKVM-IA pkvm-v6.18 arch/x86/kvm/pkvm/cpuid.c"
PVM_SPEC = "virt-pvm/linux Documentation/virt/kvm/x86/pvm-spec.rst"
HOST_NO_PKU = "pks,vmx,ept,unrestricted_guest,vmx_entry_load_pkrs,vmx_exit_load_pkrs"  # host CR4.PKE clear

MTRR_PHYS_BASE0 = 0x200
MTRR_DEF_TYPE = 0x2FF
MISC_ENABLE = 0x1A0
FAST_STRING, BTS_UNAVAIL, PEBS_UNAVAIL, MWAIT = 1 << 0, 1 << 11, 1 << 12, 1 << 18
SUP = 0x40000000  # supervisor-mode page
USR = 0x50000000  # user-mode page


def ad(key: int) -> int:
    return 1 << (2 * key)


def wd(key: int) -> int:
    return 1 << (2 * key + 1)


def pkvm(name: str, description: str, source: str, notes: str = "") -> TraceBuilder:
    return TraceBuilder(f"PKVM-{name}", description, policy="pkvm-pvm", source=source, notes=notes)


# --- pKVM as merged: pkvm_set_msr() -------------------------------------------------------------

def msr_ran() -> TraceBuilder:
    t = pkvm("MSR.RAN-any-write-after-run", "After a pVM's vCPU has run, every host MSR write is refused",
             f"{PKVM_C}: pkvm_set_msr(), `if (WARN_ON(kvm_vcpu_has_run(vcpu))) return -EPERM`")
    t.cpuid()
    t.set_msrs({MTRR_DEF_TYPE: 0x6}).expect("ok", count=1, rule="PKVM.MSR.MTRR")
    t.event("run").end_setup()
    t.set_msrs({MTRR_DEF_TYPE: 0x0}).expect("ok", count=0, rule="PKVM.MSR.RAN")
    return t.set_msrs({MSR_STAR: 0x23001000000000}).expect("ok", count=0, rule="PKVM.MSR.RAN")


def msr_mtrr() -> TraceBuilder:
    t = pkvm("MSR.MTRR-written-before-run", "Before first run the host's MTRR writes are performed",
             f"{PKVM_C}: pkvm_set_msr(), `case MTRRphysBase_MSR(0) ... MSR_MTRRfix4K_F8000: case MSR_MTRRdefType: break` "
             "then kvm_msr_write(); get_msr is allowed before first run (is_guest_vcpu_accessible)")
    t.cpuid()
    t.set_msrs({MTRR_PHYS_BASE0: 0x6, MTRR_DEF_TYPE: 0xC06}).expect("ok", count=2, rule="PKVM.MSR.MTRR")
    return t.get_msrs(MTRR_PHYS_BASE0, MTRR_DEF_TYPE).expect("ok", count=2, values=(0x6, 0xC06), rule="PKVM.MSR.MTRR")


def msr_misc() -> TraceBuilder:
    t = pkvm("MSR.MISC-three-bits-two-forced", "IA32_MISC_ENABLE: only FAST_STRING, PEBS_UNAVAIL and BTS_UNAVAIL; "
             "the last two forced on", f"{PKVM_C}: pkvm_set_msr(), `case MSR_IA32_MISC_ENABLE` (\"vPMU is not "
             "supported by pKVM yet\": data |= PEBS_UNAVAIL | BTS_UNAVAIL)")
    t.cpuid()
    t.set_msrs({MISC_ENABLE: FAST_STRING}).expect("ok", count=1, rule="PKVM.MSR.MISC")
    t.get_msrs(MISC_ENABLE).expect("ok", count=1, values=(FAST_STRING | BTS_UNAVAIL | PEBS_UNAVAIL,), rule="PKVM.MSR.MISC")
    t.set_msrs({MISC_ENABLE: FAST_STRING | MWAIT}).expect("ok", count=0, rule="PKVM.MSR.MISC")
    return t.get_msrs(MISC_ENABLE).expect("ok", count=1, values=(FAST_STRING | BTS_UNAVAIL | PEBS_UNAVAIL,),
                                          rule="PKVM.MSR.MISC")


def msr_ignored() -> TraceBuilder:
    t = pkvm("MSR.IGNORED-syscall-sysenter", "STAR..SYSENTER_EIP: the write succeeds and changes nothing",
             f"{PKVM_C}: pkvm_set_msr(), `case MSR_STAR: ... case MSR_IA32_SYSENTER_EIP: return 0` (\"Ignore "
             "writings to these MSRs and return 0 ... doesn't really modify these MSRs\")")
    t.cpuid()
    t.set_msrs({MSR_STAR: 0x23001000000000, MSR_LSTAR: 0xFFFFFFFF81000000, MSR_SYSENTER_CS: 0x10}).expect(
        "ok", count=3, rule="PKVM.MSR.IGNORED")
    return t.get_msrs(MSR_STAR, MSR_LSTAR, MSR_SYSENTER_CS).expect("ok", count=3, values=(0, 0, 0),
                                                                   rule="PKVM.MSR.IGNORED")


def msr_deny() -> TraceBuilder:
    t = pkvm("MSR.DENY-pkrs-xss-others", "Every other MSR, IA32_PKRS and IA32_XSS included, is refused before first run",
             f"{PKVM_C}: pkvm_set_msr(), `default: return -EPERM`; KVM_SET_MSRS stops at the first refusal")
    t.cpuid(pks=True)
    t.set_msrs({PKRS: 0}).expect("ok", count=0, rule="PKVM.MSR.DENY")
    t.set_msrs({MSR_IA32_XSS: 0}).expect("ok", count=0, rule="PKVM.MSR.DENY")
    return t.set_msrs({MSR_STAR: 0x23001000000000, PKRS: 0x4, MSR_LSTAR: 0}).expect("ok", count=1, rule="PKVM.MSR.DENY")


# --- pKVM as merged: is_guest_vcpu_accessible() ---------------------------------------------------

def pv_always() -> TraceBuilder:
    t = pkvm("PV.ALWAYS-run-and-inject", "Running the vCPU and injecting interrupts stay allowed after first run",
             f"{PKVM_C}: is_guest_vcpu_accessible(), `case __pkvm__vcpu_run: case __pkvm__inject_irq: ... return true` "
             "(\"The host is responsible for running vCPU, injecting interrupts, emulating lapic etc.\")")
    t.cpuid()
    t.event("run").end_setup()
    for call in ("inject_irq", "vcpu_run", "write_tsc_offset", "hwapic_isr_update", "protected_apic_has_interrupt"):
        t.event("pv_call", pv_call=call).expect("ok", rule="PKVM.PV.ALWAYS")
    return t


def pv_prerun() -> TraceBuilder:
    t = pkvm("PV.PRERUN-state-until-first-run", "vCPU-state PV calls are allowed until the first run, then refused",
             f"{PKVM_C}: is_guest_vcpu_accessible(), `case __pkvm__set_efer: ... case __pkvm__load_mmu_pgd: return "
             "!kvm_vcpu_has_run(vcpu)`")
    t.cpuid()
    for call in ("set_efer", "get_rflags", "flush_tlb_gva", "set_gdt"):
        t.event("pv_call", pv_call=call).expect("ok", rule="PKVM.PV.PRERUN")
    t.event("run")
    for call in ("set_efer", "get_rflags", "flush_tlb_gva", "set_gdt"):
        t.event("pv_call", pv_call=call).expect("eperm", rule="PKVM.PV.PRERUN")
    t.get_msrs(MSR_STAR).expect("ok", count=0, rule="PKVM.PV.PRERUN").note("get_msr after first run: refused")
    return t.cpuid().expect("eperm", rule="PKVM.PV.PRERUN").note("vcpu_after_set_cpuid after first run: refused")


def pv_deny() -> TraceBuilder:
    t = pkvm("PV.DENY-unlisted-calls", "PV calls is_guest_vcpu_accessible does not list are refused even before first run",
             f"{PKVM_C}: is_guest_vcpu_accessible(), `default: return false` (\"Deny these PV interfaces by default\"); "
             "pkvm_update_exception_bitmap()/pkvm_inject_exception(): \"always denied for the pVM\"")
    t.cpuid()
    for call in ("update_exception_bitmap", "inject_exception", "set_nmi_mask", "cache_reg"):
        t.event("pv_call", pv_call=call).expect("eperm", rule="PKVM.PV.DENY")
    return t


# --- pKVM as merged: the guest side ----------------------------------------------------------------

def guest_msr() -> TraceBuilder:
    t = pkvm("GUEST.MSR-hidden-gp", "A pVM's access to an MSR pKVM neither handles nor forwards: #GP the host never sees",
             f"{X86_C}: kvm_set_msr_common() default case, `if (!pkvm_host_can_emulate_msr(vcpu, msr_info, true)) "
             "return 1;` (1 = #GP injected by pKVM, no exit to the host); TSC_DEADLINE is forwarded",
             notes="The #GP rows are host-invisible: a host-side capture (tracefs, pKVM vmexit trace) shows no event "
                   "for them; the model marks their outcomes host_visible=False.")
    t.cpuid(pks=True)
    t.long_mode().end_setup()
    t.wrmsr(PKRS, 0x4).expect_gp(rule="PKVM.GUEST.MSR").note("host-invisible")
    t.rdmsr(PKRS).expect_gp(rule="PKVM.GUEST.MSR").note("host-invisible")
    t.wrmsr(0x123, 1).expect_gp(rule="PKVM.GUEST.MSR").note("host-invisible")
    return t.wrmsr(0x6E0, 0).expect_ok(rule="PKVM.GUEST.MSR").note("MSR_IA32_TSC_DEADLINE: forwarded to the host")


def cpuid_vmx() -> TraceBuilder:
    t = pkvm("CPUID.VMX-cleared", "A pVM's CPUID has VMX cleared whatever the host set",
             f"{CPUID_C}: kvm_vcpu_after_set_cpuid(), `guest_cpuid_clear(vcpu, X86_FEATURE_VMX)` (\"no nested "
             "support in the pkvm hypervisor\")")
    t.cpuid(vmx=True)
    t.long_mode().end_setup()
    return t.guest_cpuid(leaf=1).expect_value(0, rule="PKVM.CPUID.VMX")


def cpuid_pks() -> TraceBuilder:
    t = pkvm("CPUID.PKS-unsettled", "What pkvm_enforce_cpuid does with a pVM's PKS bit is not settled: not compared",
             f"{PKVM_C}: pkvm_vcpu_after_set_cpuid() -> pkvm_enforce_cpuid() (its body is not in the stored corpus)",
             notes="The knob pkvm_cpuid_pks (keep | clear | native) chooses; the CPUID read is left uncompared.")
    t.cpuid(pks=True).expect_ok(rule="PKVM.PV.PRERUN")
    t.long_mode().end_setup()
    return t.guest_cpuid(leaf=7).note("PKVM.CPUID.PKS: unsettled, not compared")


def nopks() -> TraceBuilder:
    t = pkvm("NOPKS-cr4-pks-reserved", "pKVM as merged has no PKS code: a pVM's CR4.PKS is reserved",
             "intel-staging/pKVM-IA pkvm-v6.18: no PKRS/PKS handling under arch/x86/kvm/pkvm (field_2026.md §3, "
             "searched); the hypervisor's CR4 check is KVM's kvm_is_valid_cr4() without the PKS series",
             notes="Derived from the absence of PKS code, not from a line that says so.")
    t.cpuid(pks=True)
    t.long_mode().end_setup()
    return t.cr4(pks=True).expect_gp(rule="PKVM.NOPKS")


# --- PVM ---------------------------------------------------------------------------------------------

def pvm(name: str, description: str, section: str, notes: str, host: str | None = None) -> TraceBuilder:
    return TraceBuilder(f"PVM-{name}", description, policy="pvm", source=f"{PVM_SPEC}, \"{section}\"", notes=notes,
                        host_features=host)


def pvm_cpuid_host_pke() -> TraceBuilder:
    t = pvm("CPUID-host-pke", "With the host's CR4.PKE, CPUID may offer PKS (and PKU)", "CPUID leaf",
            "\"PKS can be enabled if the host CR4.PKE is set because guest PKS is handled via hardware PKE.\"")
    t.cpuid(pks=True, pku=True)
    t.long_mode().end_setup()
    return t.guest_cpuid(leaf=7).expect_value((1 << 31) | (1 << 3), rule="PVM.CPUID")


def pvm_cpuid_no_host_pke() -> TraceBuilder:
    t = pvm("CPUID-no-host-pke", "Without the host's CR4.PKE, CPUID never offers PKS or PKU", "CPUID leaf",
            "\"Features disabled in the host are also disabled in the guest except for ... PKS\"; \"PKS can be "
            "enabled if the host CR4.PKE is set\". The upstream-pvm recordings of this host (no PKU) show the same.",
            host=HOST_NO_PKU)
    t.cpuid(pks=True, pku=True)
    t.long_mode().end_setup()
    return t.guest_cpuid(leaf=7).expect_value(0, rule="PVM.CPUID")


def pvm_cr4() -> TraceBuilder:
    t = pvm("CR4.PKS-needs-pke", "CR4.PKS can be set only together with CR4.PKE", "Protection Keys",
            "\"CR4.PKS can only be enabled when CR4.PKE is enabled\"")
    t.cpuid(pks=True, pku=True)
    t.long_mode().end_setup()
    t.cr4(pks=True).expect_gp(rule="PVM.CR4.PKS")
    return t.cr4(pke=True, pks=True).expect_ok(rule="PVM.CR4.PKS")


def pvm_cr4_pke() -> TraceBuilder:
    t = pvm("CR4.PKE-needs-host-pke", "CR4.PKE can be set only if the underlying CR4.PKE is set", "Protection Keys",
            "\"CR4.PKE can only be enabled when the underlying CR4.PKE is enabled.\" This host's PVM accepts it "
            "(traces/real kvm-pvm-pks-baseline, HOST.PVM.PKE): the implementation departs from its spec.",
            host=HOST_NO_PKU)
    t.cpuid()
    t.long_mode().end_setup()
    return t.cr4(pke=True).expect_gp(rule="PVM.CR4.PKE")


def pkeys_on(t: TraceBuilder, pkrs: int) -> TraceBuilder:
    t.cpuid(pks=True, pku=True)
    t.long_mode()
    t.cr4(pke=True, pks=True)
    t.wrmsr(PKRS, pkrs)
    return t.end_setup()


def pvm_key() -> TraceBuilder:
    t = pvm("KEY-ignores-us", "A supervisor access to a user page is checked against IA32_PKRS's keys, not PKRU's",
            "Protection Keys", "\"Protection Keys protection protects all data accesses if enabled\"; \"The PKS "
            "feature is changed. Protection Key protection doesn't consider the U/S bit\"; on the switch back to "
            "supervisor mode the underlying PKRU is loaded with MSR_IA32_PKRS (CR4.PKS). The SDM would check PKRU "
            "(0 here) for a user page.")
    pkeys_on(t, ad(1))
    t.access(USR, cpl=3, key=2, user=True).expect_ok(rule="PVM.SWITCH").note("to user mode: underlying PKRU = PVCS::pkru = 0")
    return t.access(USR, key=1, user=True).expect_pf(PF_P | PF_PK, USR, rule="PVM.KEY").note("back to supervisor: PKRS")


def pvm_switch() -> TraceBuilder:
    t = pvm("SWITCH-pkru-swapped", "The switcher swaps the underlying PKRU on each user/supervisor switch",
            "Protection Keys", "\"supervisor -> user switching: load the underlying PKRU with PVCS::pkru\"; \"user "
            "-> supervisor switching: save the underlying PKRU to PVCS::pkru, and load the underlying PKRU with a "
            "default value (0 or MSR_IA32_PKRS if CR4.PKS)\"; \"The underlying PKRU is the effective protection key "
            "register in both supervisor mode and user mode.\"")
    pkeys_on(t, 0)
    t.access(USR, cpl=3, key=3, user=True).expect_ok(rule="PVM.SWITCH")
    t.wrpkru(ad(3)).expect_ok(rule="PVM.PKRU").note("user mode: writes the underlying PKRU")
    t.access(USR, cpl=3, key=3, user=True).expect_pf(PF_P | PF_U | PF_PK, USR, rule="PVM.PKRU")
    t.access(USR, key=3, user=True).expect_ok(rule="PVM.SWITCH").note("supervisor: underlying = IA32_PKRS = 0")
    return t.access(USR, cpl=3, key=3, write=True, user=True).expect_pf(PF_P | PF_U | PF_W | PF_PK, USR,
                                                                         rule="PVM.SWITCH")


def pvm_pkrs() -> TraceBuilder:
    t = pvm("PKRS-view-of-pkru", "In supervisor mode RDPKRU/WRPKRU reach the underlying PKRU, IA32_PKRS's supervisor view",
            "RDPKRU/WRPKRU", "\"When the guest is in supervisor mode, RDPKRU/WRPKRU would access the underlying PKRU "
            "register which is effectively PVM's MSR_IA32_PKRS\"; \"The MSR_IA32_PKRS (in guest supervisor view) is "
            "the underlying PKRU masked with SUPERVISOR_KEYS_MASK\" (keys 8-15 here, the knob pvm_supervisor_keys).")
    pkeys_on(t, ad(9))
    t.access(USR, cpl=3, user=True).expect_ok(rule="PVM.SWITCH")
    t.access(SUP, key=0).expect_ok(rule="PVM.SWITCH").note("back to supervisor: underlying PKRU = IA32_PKRS")
    t.rdpkru().expect_value(ad(9), rule="PVM.PKRS")
    t.rdmsr(PKRS).expect_value(ad(9), rule="PVM.PKRS")
    t.wrpkru(ad(9) | wd(10) | ad(2)).expect_ok(rule="PVM.PKRS")
    t.snapshot("vcpu0.pvm.pkrs_view", ad(9) | wd(10), rule="PVM.PKRS")
    return t.access(SUP, key=10, write=True).expect_pf(PF_P | PF_W | PF_PK, SUP, rule="PVM.PKRU")


# --- Xen ---------------------------------------------------------------------------------------------

def xen_walk() -> TraceBuilder:
    t = TraceBuilder("XEN-WALK-pk-beside-us-fault", "An emulated CPL3 access to a supervisor page whose key denies: "
                     "the SDM sets PK beside U/S; Xen's walk does not", policy="hw",
                     source="SDM (ARCH.PFEC.CPL3); xen-project/xen xen/arch/x86/mm/guest_walk.c guest_walk_tables()",
                     notes="Expectations are the architecture's. Under xen-hvm the emulated access lacks PFEC.PK "
                           "(XEN.WALK: the key is checked only 'if all access checks are thus far ok').")
    t.cpuid(pks=True)
    t.long_mode()
    t.cr4(pks=True)
    t.wrmsr(PKRS, ad(1)).end_setup()
    t.access(SUP, cpl=3, key=1, emulated=True).expect_pf(PF_P | PF_U | PF_PK, SUP, rule="ARCH.PFEC.CPL3")
    t.access(SUP, cpl=3, key=1).expect_pf(PF_P | PF_U | PF_PK, SUP, rule="ARCH.PFEC.CPL3").note(
        "the same access by the hardware (HAP): Xen agrees")
    return t


PKVM_SCENARIOS: tuple[Callable[[], TraceBuilder], ...] = (
    msr_ran, msr_mtrr, msr_misc, msr_ignored, msr_deny, pv_always, pv_prerun, pv_deny, guest_msr, cpuid_vmx,
    cpuid_pks, nopks,
)
PVM_SCENARIOS: tuple[Callable[[], TraceBuilder], ...] = (
    pvm_cpuid_host_pke, pvm_cpuid_no_host_pke, pvm_cr4, pvm_cr4_pke, pvm_key, pvm_switch, pvm_pkrs,
)
XEN_SCENARIOS: tuple[Callable[[], TraceBuilder], ...] = (xen_walk,)
CORPORA = {"pkvm": PKVM_SCENARIOS, "pvm": PVM_SCENARIOS, "xen": XEN_SCENARIOS}


def write_corpora(out_dir: Path) -> list[Path]:
    written: list[Path] = []
    for sub, scenarios in CORPORA.items():
        folder = out_dir / sub
        folder.mkdir(parents=True, exist_ok=True)
        for make in scenarios:
            t = make()
            written.append(t.write(folder / f"{t.meta['name']}.parquet"))
    return written


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print("usage: python traces/build_hypervisors.py [OUTDIR]", file=sys.stderr)
        return 2
    out_dir = Path(argv[0]) if argv else DEFAULT_OUT
    written = write_corpora(out_dir)
    print(f"wrote {len(written)} traces under {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
