"""The rule catalogue: every stable rule id the model can cite, with a one-line summary.

Ids in the ``ARCH``, ``VMX``, ``KVM`` and ``PKVM`` families are SPEC.md's (§1-§4) and keep
its wording in short.  The ``X86`` family is ours: base-architecture behaviour that SPEC.md
takes for granted (ordinary paging faults, mode switches, unknown MSRs) but that an outcome
still has to cite so that no decision is anonymous.  ``HOST`` ids name behaviour of a specific
real host that differs from upstream KVM.  ``source_of`` says where each rule comes from, citing
documents a user can open (SDM sections, lore Message-IDs, upstream files).
"""

from __future__ import annotations

RULES: dict[str, str] = {
    # --- SPEC §1: architecture -------------------------------------------------------------
    "ARCH.CPUID": "CPUID.(EAX=7,ECX=0):ECX[31] enumerates PKS.",
    "ARCH.CR4.RSVD": "MOV to CR4 setting CR4.PKS (bit 24) without CPUID.PKS: #GP(0); no other PKS condition.",
    "ARCH.CR4.EFFECT": "PKS checks apply only when CR0.PG=1 and EFER.LMA=1 (4/5-level paging).",
    "ARCH.MSR.CPUID": "RDMSR/WRMSR of IA32_PKRS (0x6E1) without CPUID.PKS: #GP(0).",
    "ARCH.MSR.RSVD": "WRMSR 0x6E1 with any of bits 63:32 set: #GP(0); RDMSR returns EDX=0.",
    "ARCH.MSR.CPL": "RDMSR/WRMSR at CPL>0: #GP(0).",
    "ARCH.MSR.INDEP": "IA32_PKRS works with CR4.PKS=0 and in any mode; a write takes effect at once.",
    "ARCH.RESET": "RESET (power-up): PKRS = 0.",
    "ARCH.INIT": "INIT: PKRS preserved.",
    "ARCH.ADDR": "A linear address is user-mode iff U/S=1 in every paging-structure entry, leaf included.",
    "ARCH.KEY": "The key is bits 62:59 of the leaf entry (PTE, 2 MiB PDE or 1 GiB PDPTE).",
    "ARCH.CHK.DATA": "Data accesses (incl. implicit supervisor accesses) are key-checked; fetches never.",
    "ARCH.CHK.REG": "Supervisor address -> PKRS if CR4.PKS; user address -> PKRU if CR4.PKE; CPL does not select.",
    "ARCH.RIGHTS": "deny = AD(k) or (WD(k) and write and (CR0.WP=1 or user-mode access)).",
    "ARCH.PFEC.TERMINAL": "Not-present and reserved-bit faults come first, never set PK; RSVD faults have P=1.",
    "ARCH.PFEC.PK": "Key violation: #PF, PFEC = P|W|U|PK, CR2 = linear address; PK set even with an R/W violation.",
    "ARCH.PFEC.CPL3": "CPL3 access to a supervisor address: U/S fault, plus PK where the key condition holds.",
    "ARCH.TLB": "After CR4.PKS/PKE changes, only a flush (CR3 write, INVLPG) makes the result defined.",
    # --- SPEC §2: VMX architecture ---------------------------------------------------------
    "VMX.CTL": "Entry ctl bit 22 / exit ctl bit 29 load IA32_PKRS; a disallowed control: VMfail error 7.",
    "VMX.FIELD": "Guest IA32_PKRS = 0x2818 (high 0x2819); host IA32_PKRS = 0x2C06 (high 0x2C07).",
    "VMX.ENTRY.LOAD": "Entry with the entry control set loads PKRS from the guest field.",
    "VMX.ENTRY.CHK.GUEST": "Entry control set and guest field 63:32 != 0: entry failure, reason 33|bit31, qual 0.",
    "VMX.ENTRY.CHK.HOST": "Exit control set and host field 63:32 != 0: VMfail, VM-instruction error 8.",
    "VMX.EXIT.SAVE": "Every VM exit saves PKRS into the guest field if the CPU supports the entry control.",
    "VMX.EXIT.LOAD": "Exit with the exit control loads PKRS from the host field; otherwise PKRS unchanged.",
    "VMX.CR4FIXED1": "IA32_VMX_CR4_FIXED1 bit 24 is 1 only if L1's CPUID has PKS.",
    # --- SPEC §3: the KVM series (v7 reference) --------------------------------------------
    "KVM.CAP": "cap = TDP and host PKS (and, as intended, both VMX load controls).",
    "KVM.MSR.LIST": "0x6E1 is in KVM_GET_MSR_INDEX_LIST iff cap.",
    "KVM.CR4.RSVD": "CR4.PKS reserved (MOV -> #GP, SET_SREGS -> EINVAL) unless gPKS and cap.",
    "KVM.CR4.PG0": "Without unrestricted guest, CR0.PG=0 clears PKS/PKE/SMEP/SMAP from the hardware CR4.",
    "KVM.CR4.ROLE": "MMU role bit cr4_pks = EFER.LMA and CR4.PKS; a change rebuilds pkr_mask.",
    "KVM.MSR.WR": "WRMSR 0x6E1: valid, cap, host-initiated or gPKS; fail -> #GP / SET_MSRS stops there.",
    "KVM.MSR.RD": "RDMSR 0x6E1 needs cap and (host-initiated or gPKS); value from the lazy copy.",
    "KVM.MSR.INTERCEPT": "CPUID update: gPKS -> pass 0x6E1 through, else intercept; never overrides the filter.",
    "KVM.MSR.FILTER": "Filter-denied guest access: #GP or userspace exit (FILTER=4); host accesses ignore it.",
    "KVM.CTL": "Controls off by default; CPUID update with cap sets/clears both on the loaded VMCS.",
    "KVM.HOST": "Before entry, refresh the loaded VMCS's host field if the exit control is set and it is stale.",
    "KVM.CACHE": "The guest PKRS copy is lazy: invalidated on every VM exit, filled by VMREAD on demand.",
    "KVM.RESET": "RESET with cap: host-initiated write of 0; INIT: preserved.",
    "KVM.MMU.PKR": "Emulated accesses use the cached pkr_mask; PK fault if PKR bits & mask != 0.",
    "KVM.NESTED.CAPS": "L1's VMX capability MSRs allow load-PKRS iff the hardware supports them.",
    "KVM.NESTED.ENTRY": "Nested entry: capture L1 PKRS, pick vmcs02's guest field, check vmcs12.",
    "KVM.NESTED.EXIT": "Nested exit: save L2 PKRS to vmcs12 if allowed; load host field if the exit ctl is set.",
    "KVM.NESTED.BITMAP": "For L2, 0x6E1 is intercepted unless both L0 and L1 pass it through.",
    "KVM.VMCS12.LAYOUT": "vmcs12 offsets: RFC v1-v4 guest 320/host 328; v5-v7 host 998/guest 1006.",
    # --- SPEC §4: pKVM ---------------------------------------------------------------------
    "PKVM.KINDS": "A VM is protected (pVM) or non-protected (npVM); an npVM behaves as KVM.",
    "PKVM.PROTECT": "After a pVM's vCPU has run, host PV calls on its state are refused (EPERM).",
    "PKVM.MSR.PRE": "Before a pVM runs, host MSR writes follow the compare / allow5 / allow8 policy.",
    # pKVM as merged (pkvm-v6.18, pvVMCS parts 2-3); RULE_SOURCES names the function of each.
    "PKVM.MSR.RAN": "Host MSR write to a pVM's vCPU after it has run: EPERM (the MSR is not written).",
    "PKVM.MSR.MTRR": "Before a pVM's first run, host writes of the MTRRs (variable, fixed, MTRRdefType) are performed.",
    "PKVM.MSR.MISC": (
        "Before first run, IA32_MISC_ENABLE takes only FAST_STRING|PEBS_UNAVAIL|BTS_UNAVAIL (else EPERM); the last two are "
        "forced on."
    ),
    "PKVM.MSR.IGNORED": (
        "Before first run, STAR/LSTAR/CSTAR/SYSCALL_MASK/KERNEL_GS_BASE/SYSENTER_CS/ESP/EIP: success, value unchanged."
    ),
    "PKVM.MSR.DENY": "Before first run, any other host MSR write to a pVM (IA32_PKRS and IA32_XSS included): EPERM.",
    "PKVM.PV.ALWAYS": "PV calls that run the vCPU, inject interrupts or emulate the LAPIC/TSC are allowed for a pVM at any time.",
    "PKVM.PV.PRERUN": "PV calls that read or write a pVM's vCPU state are allowed only until its first run, then EPERM.",
    "PKVM.PV.DENY": "PV calls is_guest_vcpu_accessible does not list are refused for a pVM (EPERM), even before it runs.",
    "PKVM.GUEST.MSR": (
        "A pVM's RDMSR/WRMSR of an MSR pKVM neither handles nor forwards: #GP inside pKVM, no exit reaches the host."
    ),
    "PKVM.CPUID.VMX": "A pVM's CPUID has VMX cleared: pKVM offers no nested virtualization.",
    "PKVM.NOPKS": "pKVM as merged carries no PKS code: for a pVM CR4.PKS is reserved and IA32_PKRS is not an MSR it handles.",
    "PKVM.CPUID.PKS": "pkvm_enforce_cpuid's treatment of a pVM's CPUID PKS bit (unsettled: knob pkvm_cpuid_pks).",
    "PKVM.CPUID": "The host sets CPUID before a pVM runs; afterwards it is immutable (EPERM).",
    "PKVM.COST": "Each host operation on pKVM state is a PV call, counted per kind.",
    # --- ours: base x86 that the PKS rules stand on ---------------------------------------
    "X86.PAGING.OFF": "With CR0.PG=0 nothing is translated, so no page fault can occur.",
    "X86.PAGE.NP": "A page with no present mapping faults with P=0.",
    "X86.PAGE.US": "A user-mode access to a supervisor-mode address is a protection fault.",
    "X86.PAGE.RW": "A write to a read-only address faults for user-mode accesses, and for supervisor-mode ones if CR0.WP=1.",
    "X86.PAGE.NX": "A fetch from an XD page faults with I/D when EFER.NXE=1.",
    "X86.PAGE.SMEP": "A supervisor fetch from a user-mode address faults when CR4.SMEP=1.",
    "X86.PAGE.SMAP": "A supervisor data access to a user-mode address faults when CR4.SMAP=1 (EFLAGS.AC=0).",
    "X86.PAGE.PAE_KEY": "Outside IA-32e paging, PTE bits 62:59 are reserved (PAE) or absent (32-bit).",
    "X86.CR.CPL": "MOV to a control register at CPL>0: #GP(0).",
    "X86.CR4.RSVD": "MOV to CR4 setting an unsupported bit other than PKS (e.g. PKE without PKU): #GP(0).",
    "X86.MODE": "Paging-mode consistency: PG needs PE; PG with EFER.LME needs CR4.PAE; LMA = LME and PG.",
    "X86.PAE.PDPTE": "PAE paging loads the PDPTEs on MOV CR3 and on changes of CR4.PAE/PGE/PSE/SMEP; a reserved bit: #GP(0).",
    "X86.MSR.UNKNOWN": "RDMSR/WRMSR of an MSR the CPU does not implement: #GP(0).",
    "X86.MSR.CANONICAL": "WRMSR of a non-canonical address to KERNEL_GS_BASE, LSTAR, CSTAR, SYSENTER_ESP/EIP: #GP(0).",
    "X86.MSR.COUNTER": "RDMSR/WRMSR of a counting MSR (TSC) succeeds at CPL0; the value read depends on when it runs.",
    "X86.MSR.STORE": "A plain MSR read returns the last value written.",
    "X86.RMW.LOAD": "A faulting read-modify-write whose read alone faults (AD, P=0, RSVD, U/S, SMAP): the load half faults.",
    "X86.PKRU": "WRPKRU/RDPKRU need CR4.PKE=1 (else #UD); WRPKRU needs ECX=EDX=0.",
    "X86.INIT": "INIT/RESET put CR0/CR3/CR4/EFER back to their power-up values and flush the TLB.",
    "X86.SIPI": "After INIT an AP (vCPU other than 0) waits for SIPI: it runs no instruction (hang) until a SIPI; "
                "a SIPI to a CPU not waiting is ignored.",
    "X86.INIT.VMX": "INIT in VMX non-root operation is a VM exit (basic reason 3, host state loaded), not a reset.",
    "X86.SMM": "SMM entry saves CR0/CR3/CR4/EFER, clears CR0.PE/EM/TS/PG, CR4, EFER (PKS off); RSM restores "
               "them at the level that took the SMI; PKRS is not saved.",
    # --- ours: KVM as of v6.18 (2026) and the rebased series (issue 16; reference_model/kvm2026.py) --
    "KVM26.CAP.SOURCE": "PKS in KVM_GET_SUPPORTED_CPUID: F(PKS) needs raw CPUID and the host kernel's X86_FEATURE_PKS; "
                        "PASSTHROUGH_F(PKS) raw CPUID only (cpuid.c kvm_set_cpu_caps; upstream 2026 lists no PKS).",
    "KVM26.CPUID.FROZEN": "After the first KVM_RUN, KVM_SET_CPUID2 is EINVAL unless the table is identical, L2 active "
                          "or not; an identical table re-runs the after-set-CPUID hooks (cpuid.c kvm_set_cpuid).",
    "KVM26.CTL.PAIR": "Entry/exit controls are kept only in pairs (vmx.c setup_vmcs_config, vmcs_entry_exit_pairs); "
                      "without both load-PKRS controls PKS is not advertised (vmx_set_cpu_caps, as for CET).",
    "KVM26.NESTED.CAPS": "L1's load-PKRS controls come from the sanitized vmcs_config and kvm_cpu_cap_has(PKS) "
                         "(nested.c nested_vmx_setup_entry_ctls/exit_ctls, as for CET); CPUID updates leave them.",
    "KVM26.NESTED.CAPMSR": "Host KVM_GET_MSRS reads 0x483/0x484/0x48F/0x490; KVM_SET_MSRS: 0x483/0x484 EINVAL, "
                           "0x48F/0x490 only a subset of vmcs_config.nested, EBUSY in VMX operation (vmx_set_vmx_msr).",
    "KVM26.MSR.LIST": "0x6E1 is in KVM_GET_MSR_INDEX_LIST iff the host RDMSR works and kvm_cpu_cap_has(PKS), i.e. "
                      "iff KVM_GET_SUPPORTED_CPUID has PKS (x86.c kvm_probe_msr_to_save).",
    "KVM26.PCPU": "vCPUs time-share pCPUs; vcpu_load/vcpu_put never touch IA32_PKRS, so a pCPU keeps what the last "
                  "VM exit or host write left (vmx.c vmx_vcpu_load_vmcs).",
    "KVM26.EXIT.HOSTVAL": "The rebase's host PKRS after a VM exit: the host's own if it uses PKS, else 0 (v7's stub), "
                          "all-ones, or the guest's (no exit-load control) (Paolo Bonzini, Nov 2025).",
    "KVM26.HOST.OWN": "A host running with CR4.PKS=1 must get its own PKRS back at every VM exit; any other value "
                      "lets the guest set the host's supervisor access rights (ARCH.CHK.REG).",
    # --- hosts that differ from upstream KVM (sources/kvm_recorder.md §0) -----------------
    # --- hosts that differ from upstream KVM (recorded with `difftest record kvm`) ----------
    "HOST.PVM.CPUID": "The PVM backend rewrites CPUID leaves 1 and 7 on KVM_SET_CPUID2 (PKS/PKU bits dropped).",
    "HOST.PVM.PKE": "The PVM backend accepts CR4.PKE although the guest CPUID has no PKU.",
    "HOST.PVM.RDPKRU": "The PVM backend fails to emulate RDPKRU: KVM_EXIT_INTERNAL_ERROR, not #UD.",
    "X86.NA": "The event has no meaning for this policy (e.g. a KVM ioctl replayed on bare hardware).",
    # --- PVM's own PKS (virt-pvm/linux Documentation/virt/kvm/x86/pvm-spec.rst) ----------
    "PVM.CPUID": "CPUID offers PKS (and PKU) only if the host's CR4.PKE is set: guest PKS is done with hardware PKE.",
    "PVM.CR4.PKS": "CR4.PKS can be set only while CR4.PKE is set (MOV to CR4 otherwise: #GP).",
    "PVM.CR4.PKE": "CR4.PKE can be set only if the underlying (host) CR4.PKE is set.",
    "PVM.KEY": "Keys ignore the U/S bit: with the underlying CR4.PKE every data access is checked against its key.",
    "PVM.PKRU": "The underlying PKRU is the effective key register in both modes; deny = AD or (WD and write).",
    "PVM.PKRS": (
        "The guest's IA32_PKRS is the underlying PKRU masked to the supervisor keys; RDPKRU/WRPKRU in supervisor mode reach it."
    ),
    "PVM.SWITCH": "user->supervisor: save PKRU to PVCS, load 0 or IA32_PKRS (if CR4.PKS); supervisor->user: load PVCS::pkru.",
    "PVM.NOVMX": "PVM offers its guests no VMX (hardware-privileged features are disabled): nested events are unsupported.",
    # --- Xen's HVM PKS (xen-project/xen) ----------------------------------------------
    "XEN.CPUID": "PKS is offered to HVM guests only on VMX with HAP (and a PKS host); CR4.PKS is valid iff the guest has PKS.",
    "XEN.MSR": "MSR_PKRS: #GP without the guest's PKS or with bits 63:32 set; else full guest access (no intercept).",
    "XEN.WALK": "Xen's own page walk checks the key only when the U/S and R/W checks passed, so such a #PF lacks PK.",
}

# Where the hypervisor rules come from: repository, file and function, read with the search tools.
_HYPERVISOR_SOURCES: dict[str, str] = {
    "PKVM.MSR.RAN": "intel-staging/pKVM-IA pkvm-v6.18, arch/x86/kvm/pkvm/pkvm.c, pkvm_set_msr() (WARN_ON(kvm_vcpu_has_run))",
    "PKVM.MSR.MTRR": (
        "intel-staging/pKVM-IA pkvm-v6.18, arch/x86/kvm/pkvm/pkvm.c, pkvm_set_msr() (MTRRphysBase_MSR(0)..MSR_MTRRfix4K_F8000, "
        "MSR_MTRRdefType)"
    ),
    "PKVM.MSR.MISC": "intel-staging/pKVM-IA pkvm-v6.18, arch/x86/kvm/pkvm/pkvm.c, pkvm_set_msr() (case MSR_IA32_MISC_ENABLE)",
    "PKVM.MSR.IGNORED": (
        "intel-staging/pKVM-IA pkvm-v6.18, arch/x86/kvm/pkvm/pkvm.c, pkvm_set_msr() (\"Ignore writings ... return 0\")"
    ),
    "PKVM.MSR.DENY": "intel-staging/pKVM-IA pkvm-v6.18, arch/x86/kvm/pkvm/pkvm.c, pkvm_set_msr() (default: -EPERM)",
    "PKVM.PV.ALWAYS": "intel-staging/pKVM-IA pkvm-v6.18, arch/x86/kvm/pkvm/pkvm.c, is_guest_vcpu_accessible() (return true)",
    "PKVM.PV.PRERUN": (
        "intel-staging/pKVM-IA pkvm-v6.18, arch/x86/kvm/pkvm/pkvm.c, is_guest_vcpu_accessible() (return !kvm_vcpu_has_run)"
    ),
    "PKVM.PV.DENY": (
        "intel-staging/pKVM-IA pkvm-v6.18, arch/x86/kvm/pkvm/pkvm.c, is_guest_vcpu_accessible() (default: return false)"
    ),
    "PKVM.GUEST.MSR": (
        "intel-staging/pKVM-IA pkvm-v6.18, arch/x86/kvm/x86.c built with __PKVM_HYP__, kvm_set_msr_common() default case -> "
        "pkvm_host_can_emulate_msr()"
    ),
    "PKVM.CPUID.VMX": (
        "intel-staging/pKVM-IA pkvm-v6.18, arch/x86/kvm/pkvm/cpuid.c, kvm_vcpu_after_set_cpuid() "
        "(guest_cpuid_clear(X86_FEATURE_VMX))"
    ),
    "PKVM.NOPKS": (
        "intel-staging/pKVM-IA pkvm-v6.18: no PKRS/PKS handling under arch/x86/kvm/pkvm (field_2026.md §3); the hypervisor's "
        "kvm_set_msr_common() (arch/x86/kvm/x86.c) has no MSR_IA32_PKRS case"
    ),
    "PKVM.CPUID.PKS": (
        "intel-staging/pKVM-IA pkvm-v6.18, arch/x86/kvm/pkvm/pkvm.c, pkvm_vcpu_after_set_cpuid() -> pkvm_enforce_cpuid() (body "
        "not in the stored corpus)"
    ),
    "PVM.CPUID": "virt-pvm/linux, Documentation/virt/kvm/x86/pvm-spec.rst, \"CPUID leaf\"",
    "PVM.CR4.PKS": "virt-pvm/linux, Documentation/virt/kvm/x86/pvm-spec.rst, \"Protection Keys\"",
    "PVM.CR4.PKE": "virt-pvm/linux, Documentation/virt/kvm/x86/pvm-spec.rst, \"Protection Keys\"",
    "PVM.KEY": "virt-pvm/linux, Documentation/virt/kvm/x86/pvm-spec.rst, \"Paging\" (PKS feature is changed)",
    "PVM.PKRU": "virt-pvm/linux, Documentation/virt/kvm/x86/pvm-spec.rst, \"Protection Keys\"",
    "PVM.PKRS": "virt-pvm/linux, Documentation/virt/kvm/x86/pvm-spec.rst, \"Protection Keys\", \"RDPKRU/WRPKRU\"",
    "PVM.SWITCH": "virt-pvm/linux, Documentation/virt/kvm/x86/pvm-spec.rst, \"Protection Keys\", \"PVM events\"",
    "PVM.NOVMX": (
        "virt-pvm/linux, Documentation/virt/kvm/x86/pvm-spec.rst, \"CPUID leaf\" (features needing hardware-privileged "
        "instructions are disabled)"
    ),
    "XEN.CPUID": (
        "xen-project/xen, xen/arch/x86/cpuid.c calculate_hvm_max_policy() (PKS only with cpu_has_vmx, 'H' = HAP) and "
        "xen/arch/x86/hvm/hvm.c hvm_cr4_guest_valid_bits()"
    ),
    "XEN.MSR": (
        "xen-project/xen, xen/arch/x86/msr.c guest_rdmsr()/guest_wrmsr() case MSR_PKRS; xen/arch/x86/hvm/vmx/vmx.c "
        "vmx_cpuid_policy_changed() (clears the MSR_PKRS intercept)"
    ),
    "XEN.WALK": (
        "xen-project/xen, xen/arch/x86/mm/guest_walk.c guest_walk_tables() (\"If all access checks are thus far ok, check "
        "Protection Key\")"
    ),
}

# Specificity, as data: rule -> the more general rules it is a special case of.  Where several rules
# decided one outcome, a report names the most specific (``most_specific``): e.g. a CPL3 access to a
# supervisor address that faults is ARCH.PFEC.CPL3's case before it is ARCH.PFEC.PK's or X86.PAGE.US's.
REFINES: dict[str, tuple[str, ...]] = {
    "ARCH.PFEC.CPL3": ("ARCH.PFEC.PK", "X86.PAGE.US"),
    "ARCH.PFEC.PK": ("ARCH.RIGHTS", "ARCH.KEY", "ARCH.CHK.REG", "ARCH.ADDR"),
    "ARCH.PFEC.TERMINAL": ("X86.PAGE.NP",),
    "KVM.CR4.RSVD": ("ARCH.CR4.RSVD", "X86.CR4.RSVD"),
    "KVM.CR4.ROLE": ("KVM.MMU.PKR",),
    "X86.INIT.VMX": ("X86.INIT", "VMX.EXIT.LOAD", "VMX.EXIT.SAVE", "KVM.NESTED.EXIT"),
    "X86.SMM": ("X86.PAGING.OFF",),
}


def _general(rule_id: str) -> set[str]:
    """Every rule ``rule_id`` refines, transitively."""
    out: set[str] = set()
    todo = list(REFINES.get(rule_id, ()))
    while todo:
        r = todo.pop()
        if r not in out:
            out.add(r)
            todo.extend(REFINES.get(r, ()))
    return out


def most_specific(rules: tuple[str, ...] | list[str]) -> str | None:
    """The rule a report should name among ``rules`` (the ones that decided an outcome, in the order
    they were hit): the last one that no other rule in ``rules`` refines (``REFINES``)."""
    covered: set[str] = set()
    for r in rules:
        covered |= _general(r)
    for r in reversed(rules):
        if r not in covered:
            return r
    return rules[-1] if rules else None


SPEC_FAMILIES = ("ARCH", "VMX", "KVM", "PKVM")
# Each hypervisor's own documented rules: a departure from the architecture citing one is explained.
HYPERVISOR_FAMILIES = ("KVM", "PKVM", "PVM", "XEN")


def describe(rule_id: str) -> str:
    """One-line text for a rule id; unknown ids are returned as they are (they come from traces)."""
    return RULES.get(rule_id, rule_id)


def is_spec_rule(rule_id: str) -> bool:
    """True for ids defined by shared/SPEC.md, the ones rule coverage is measured against."""
    return rule_id.split(".", 1)[0] in SPEC_FAMILIES


# Where each rule comes from, as documents a user can open (no project-internal paths): the SDM
# chapter, the lore Message-ID of the patch or review mail, or an upstream file.  A rule without
# its own entry cites its family's.
KVM_V7_COVER = "<20220424101557.134102-1-lei4.wang@intel.com> (KVM PKS series v7, patches ...-2..9, on lore.kernel.org/kvm)"
FAMILY_SOURCES: dict[str, str] = {
    "ARCH": "Intel SDM Vol. 3A §4.6.2 (protection keys) and §4.7 (page-fault error code); cross-checked with "
            "QEMU target/i386/tcg/system/excp_helper.c and Xen xen/arch/x86/mm/guest_walk.c",
    "VMX": "Intel SDM Vol. 3C ch. 24-27 (VMCS fields, VM-entry/VM-exit controls and checks), as used by " + KVM_V7_COVER,
    "KVM": KVM_V7_COVER + " and its review on kvm@vger.kernel.org",
    "PKVM": "pKVM-IA (github.com/intel-staging/pKVM-IA) pvVMCS pull requests #45, #48 and #60 (Nov 2025 - Feb 2026), "
            "arch/x86/kvm/pkvm/pkvm.c",
    "X86": "Intel SDM Vol. 3A ch. 4 (paging) and Vol. 2 (MOV CR, RDMSR/WRMSR, WRPKRU): base x86 the PKS rules stand on",
    "HOST": "measured on a Linux PVM host (github.com/virt-pvm/linux) with `difftest record kvm`",
    "KVM26": "torvalds/linux v6.18 arch/x86/kvm (cpuid.c, vmx/vmx.c, vmx/nested.c, x86.c) and Paolo Bonzini "
             "<CABgObfZc4FQa9sj=FK5Q-tQxr2yQ-9Ez69R5z=5_R0x5MS1d0A@mail.gmail.com> on the rebase",
    "PVM": "virt-pvm/linux Documentation/virt/kvm/x86/pvm-spec.rst",
    "XEN": "xen-project/xen xen/arch/x86 (hvm/hvm.c, msr.c, mm/guest_walk.c)",
}
RULE_SOURCES: dict[str, str] = {
    **_HYPERVISOR_SOURCES,
    "ARCH.INIT": "<90935936-4e5a-ad28-84b7-a38f6e642543@intel.com> (PKRS preserved on INIT; corrects an earlier cover letter)",
    "ARCH.MSR.INDEP": "<a311a49b-ea77-99bf-0d0b-b613aed621a4@intel.com> (PKRS access depends only on CPUID)",
    "ARCH.CHK.REG": "<YYl+k3VbEieh9X2H@google.com> (address type, not CPL, selects PKRU or PKRS)",
    "VMX.EXIT.SAVE": "<Yo1GW/7OuRooi3nT@google.com> (v7 1/8 review: the save follows the entry-control capability)",
    "KVM.CTL": "<CALMp9eQiyRxJ0jkvVi+fWMZcDQbvyCcuTwH1wrYV-u_E004Bhg@mail.gmail.com> (CPUID change while L2 is active) "
               "and " + KVM_V7_COVER,
    "KVM.CR4.ROLE": "<YQLkczVfCsFp4IxW@google.com> and <YBB0AT6xfObR7A5l@google.com> (a separate cr4_pks MMU role bit)",
    "KVM.MMU.PKR": "<YkTLXGdu2I9i44ti@google.com> (read PKRU/PKRS only when the role enables them) and "
                   "<f4e5dd40-f721-049f-de0f-3af59d48a003@redhat.com> (pkr_mask)",
    "KVM.RESET": "<YYliC1kdT9ssX/f7@google.com> (reset writes 0 through the host-initiated path)",
    "KVM.NESTED.ENTRY": "<YkTP7uztERLwynAN@google.com> (read the current PKRS when not from VM-entry)",
    "KVM.NESTED.BITMAP": "<20200812150017.GB6602@linux.intel.com> (the nested bitmap merges L1's read and write wishes)",
    "KVM.CACHE": "<YQLa4UErfNbdjv3l@google.com> (defer the VMREAD to permission_fault)",
    "PKVM.MSR.PRE": "pKVM-IA pull request #48 review (5 Jan 2026), pkvm_set_msr() in arch/x86/kvm/pkvm/pkvm.c",
    "X86.NA": "pks-difftest: an event a policy has no meaning for (e.g. a KVM ioctl on bare hardware)",
}


def source_of(rule_id: str) -> str:
    """Where ``rule_id`` comes from: its own citation, else its family's, else empty (an id a trace made up)."""
    if rule_id in RULE_SOURCES:
        return RULE_SOURCES[rule_id]
    if rule_id not in RULES:
        return ""
    return FAMILY_SOURCES.get(rule_id.split(".", 1)[0], "")
