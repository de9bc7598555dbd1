"""The rule catalogue: every stable rule id the model can cite, with a one-line summary.

Ids in the ``ARCH``, ``VMX``, ``KVM`` and ``PKVM`` families are SPEC.md's (§1-§4) and keep
its wording in short.  The ``X86`` family is ours: base-architecture behaviour that SPEC.md
takes for granted (ordinary paging faults, mode switches, unknown MSRs) but that an outcome
still has to cite so that no decision is anonymous.  ``HOST`` ids name behaviour of a specific
real host that differs from upstream KVM (see sources/kvm_recorder.md).
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
    "X86.PKRU": "WRPKRU/RDPKRU need CR4.PKE=1 (else #UD); WRPKRU needs ECX=EDX=0.",
    "X86.INIT": "INIT/RESET put CR0/CR3/CR4/EFER back to their power-up values and flush the TLB.",
    # --- hosts that differ from upstream KVM (sources/kvm_recorder.md §0) -----------------
    "HOST.PVM.CPUID": "The PVM backend rewrites CPUID leaves 1 and 7 on KVM_SET_CPUID2 (PKS/PKU bits dropped).",
    "HOST.PVM.PKE": "The PVM backend accepts CR4.PKE although the guest CPUID has no PKU.",
    "HOST.PVM.RDPKRU": "The PVM backend fails to emulate RDPKRU: KVM_EXIT_INTERNAL_ERROR, not #UD.",
    "X86.NA": "The event has no meaning for this policy (e.g. a KVM ioctl replayed on bare hardware).",
}

SPEC_FAMILIES = ("ARCH", "VMX", "KVM", "PKVM")


def describe(rule_id: str) -> str:
    """One-line text for a rule id; unknown ids are returned as they are (they come from traces)."""
    return RULES.get(rule_id, rule_id)


def is_spec_rule(rule_id: str) -> bool:
    """True for ids defined by shared/SPEC.md, the ones rule coverage is measured against."""
    return rule_id.split(".", 1)[0] in SPEC_FAMILIES
