"""What the importer does with each ``kvm:*`` and ``kvmmmu:*`` tracepoint a 6.18 kernel emits.

Every tracepoint under ``events/kvm`` and ``events/kvmmmu`` of this project's host kernel
(6.18.44 with kvm_pvm; listed from tracefs) has one entry.  An entry says either how its lines
become compared rows (``COMPARED``), or that they only give the import context (which vCPU, which
instruction), or why no comparison is possible: which model field it would need and why that is
not one the model has.  Lines of a tracepoint missing from both tables are counted as
``unclassified`` by name, never dropped silently.
"""

from __future__ import annotations

# Tracepoint -> how its lines are compared (the row kind and what is compared).
COMPARED: dict[str, str] = {
    "kvm_msr": "wrmsr/rdmsr: #GP or not; the value read (run-dependent MSRs: result only)",
    "kvm_cpuid": "cpuid: leaf 7.0 ECX (PKU/OSPKE/PKS); other leaves: result only",
    "kvm_cr": "mov_cr0/3/4 write: #GP (the kvm_inj_exception that follows) or not",
    "kvm_exit": "vm_exit with the exit reason, vCPU from the line's own field",
    "kvm_nested_vmexit_inject": "nested_exit (reflected to L1) with the exit reason",
    "kvm_mmu_pagetable_walk": "emu_access: the walk's address and access bits; result and PFEC",
    "kvm_mmu_paging_element": "the walk's entries: the leaf mapping (P, R/W, U/S, NX, key 62:59) of its emu_access",
    "kvm_mmu_walker_error": "the PFEC of the walk's emu_access (no line: the walk succeeded)",
    "kvm_inj_exception": "vector and error code, folded into the faulting row (#GP after kvm_msr/kvm_cr, "
                         "#PF after a failed walk); an injection with no traced cause is classified",
    "kvm_userspace_exit": "KVM_EXIT_INTERNAL_ERROR after a failed RDPKRU emulation -> rdpkru internal_error; "
                          "other reasons are classified per reason",
}

# Tracepoint -> what its lines give the import without being compared themselves.
CONTEXT: dict[str, str] = {
    "kvm_entry": "vCPU id of the thread (its own field); no outcome",
    "kvm_emulate_insn": "the emulated instruction, kept in the note of the rows it causes (a failed RDPKRU "
                        "becomes an rdpkru row); its outcome is in the lines that follow",
    "kvm_nested_vmenter": "the thread runs L2 until kvm_nested_vmexit_inject (row level)",
    "kvm_page_fault": "vCPU id (own field); the fault's handling is in the walk lines",
}

_IRQ = "interrupt delivery (APIC, IOAPIC, PIC, MSI, posted interrupts): the model has no interrupt controller"
_HV = "Hyper-V enlightenment: the model has no Hyper-V state"
_SEV = "SEV/SNP or SVM-only state: the model has no encrypted-guest or SVM state"
_HOSTMM = "host memory management (MMU notifiers, async page faults): no guest-visible outcome"
_SHADOW = ("KVM's own (shadow/TDP) page tables: the model has the guest's paging only; a field 'spte' "
           "would be needed and its value is host-private")
_TIME = "time keeping (TSC offset, kvmclock): the model has no clock; values are run-dependent"
_SCHED = "vCPU scheduling (halt polling, PLE, wake-ups): no architectural outcome"

# Tracepoint -> why it is not compared (the model field it would need and why that is not there).
CLASSIFIED: dict[str, str] = {
    "kvm_fpu": "host FPU load/unload around KVM_RUN: no guest-visible state",
    "kvm_pio": "guest port I/O: the model has no devices (a field 'port' and device state would be needed)",
    "kvm_mmio": "guest MMIO: the model has no devices",
    "kvm_fast_mmio": "guest MMIO (fast path): the model has no devices",
    "vcpu_match_mmio": "MMIO cache lookup: KVM-internal",
    "kvm_hypercall": "KVM hypercall: the model has no hypercall ABI (a field 'hypercall nr' would be needed)",
    "kvm_xen_hypercall": "Xen hypercall: the model has no Xen ABI",
    "kvm_smm_transition": "SMM entry/exit: the model's smi/rsm events have no outcome a line could state",
    "kvm_nested_vmexit": "L2 exit seen by L0 before reflection: the reflected exit is kvm_nested_vmexit_inject",
    "kvm_nested_vmenter_failed": "nested VM-entry check failure: the line names a check, not vmcs12 fields",
    "kvm_nested_intercepts": "SVM nested intercept vectors: " + _SEV,
    "kvm_nested_intr_vmexit": "nested interrupt exit: " + _IRQ,
    "kvm_invlpga": "SVM INVLPGA: " + _SEV,
    "kvm_skinit": "SVM SKINIT: " + _SEV,
    "kvm_rmp_fault": _SEV, "kvm_vmgexit_enter": _SEV, "kvm_vmgexit_exit": _SEV,
    "kvm_vmgexit_msr_protocol_enter": _SEV, "kvm_vmgexit_msr_protocol_exit": _SEV,
    "kvm_pml_full": "page-modification log full: host dirty tracking",
    "kvm_dirty_ring_exit": "dirty ring: host dirty tracking", "kvm_dirty_ring_push": "dirty ring: host dirty tracking",
    "kvm_dirty_ring_reset": "dirty ring: host dirty tracking",
    "kvm_age_hva": _HOSTMM, "kvm_test_age_hva": _HOSTMM, "kvm_unmap_hva_range": _HOSTMM,
    "kvm_try_async_get_page": _HOSTMM, "kvm_async_pf_completed": _HOSTMM, "kvm_async_pf_not_present": _HOSTMM,
    "kvm_async_pf_ready": _HOSTMM, "kvm_async_pf_repeated_fault": _HOSTMM,
    "kvm_track_tsc": _TIME, "kvm_write_tsc_offset": _TIME, "kvm_update_master_clock": _TIME,
    "kvm_pvclock_update": _TIME, "kvm_wait_lapic_expire": _TIME,
    "kvm_halt_poll_ns": _SCHED, "kvm_vcpu_wakeup": _SCHED, "kvm_ple_window_update": _SCHED,
    "kvm_ack_irq": _IRQ, "kvm_apic": _IRQ, "kvm_apic_accept_irq": _IRQ, "kvm_apic_ipi": _IRQ,
    "kvm_apicv_accept_irq": _IRQ, "kvm_apicv_inhibit_changed": _IRQ, "kvm_avic_doorbell": _IRQ,
    "kvm_avic_ga_log": _IRQ, "kvm_avic_incomplete_ipi": _IRQ, "kvm_avic_kick_vcpu_slowpath": _IRQ,
    "kvm_avic_unaccelerated_access": _IRQ, "kvm_eoi": _IRQ, "kvm_inj_virq": _IRQ,
    "kvm_ioapic_delayed_eoi_inj": _IRQ, "kvm_ioapic_set_irq": _IRQ, "kvm_msi_set_irq": _IRQ,
    "kvm_pi_irte_update": _IRQ, "kvm_pic_set_irq": _IRQ, "kvm_pv_eoi": _IRQ, "kvm_set_irq": _IRQ,
    "kvm_pv_tlb_flush": "paravirtual TLB flush request: the model's TLB is flushed by guest instructions only",
    **{name: _HV for name in (
        "kvm_hv_flush_tlb", "kvm_hv_flush_tlb_ex", "kvm_hv_hypercall", "kvm_hv_hypercall_done",
        "kvm_hv_notify_acked_sint", "kvm_hv_send_ipi", "kvm_hv_send_ipi_ex", "kvm_hv_stimer_callback",
        "kvm_hv_stimer_cleanup", "kvm_hv_stimer_expiration", "kvm_hv_stimer_set_config", "kvm_hv_stimer_set_count",
        "kvm_hv_stimer_start_one_shot", "kvm_hv_stimer_start_periodic", "kvm_hv_syndbg_get_msr",
        "kvm_hv_syndbg_set_msr", "kvm_hv_synic_send_eoi", "kvm_hv_synic_set_irq", "kvm_hv_synic_set_msr",
        "kvm_hv_timer_state")},
    # kvmmmu housekeeping
    "kvm_mmu_get_page": _SHADOW, "kvm_mmu_prepare_zap_page": _SHADOW, "kvm_mmu_set_spte": _SHADOW,
    "kvm_mmu_split_huge_page": _SHADOW, "kvm_mmu_spte_requested": _SHADOW, "kvm_mmu_sync_page": _SHADOW,
    "kvm_mmu_unsync_page": _SHADOW, "kvm_mmu_zap_all_fast": _SHADOW, "kvm_tdp_mmu_spte_changed": _SHADOW,
    "fast_page_fault": _SHADOW, "check_mmio_spte": _SHADOW, "handle_mmio_page_fault": _SHADOW,
    "mark_mmio_spte": _SHADOW,
    "kvm_mmu_set_accessed_bit": "the walk set an Accessed bit: the model keeps no A/D bits (a field 'accessed' "
                                "per entry would be needed; it never changes a PKS outcome)",
    "kvm_mmu_set_dirty_bit": "the walk set a Dirty bit: the model keeps no A/D bits",
}

# kvm_userspace_exit reasons that are classified (not compared), and why.
USERSPACE_EXIT_REASONS: dict[str, str] = {
    "IO": "port I/O exit: the model has no devices",
    "HLT": "HLT exit: the guest stopped; no PKS state involved",
    "MMIO": "MMIO exit: the model has no devices",
    "X86_RDMSR": "MSR read sent to userspace: the line carries no MSR index (the model would need 'msr')",
    "X86_WRMSR": "MSR write sent to userspace: the line carries no MSR index (the model would need 'msr')",
    "INTERNAL_ERROR": "emulation failure of an instruction the model has no event for",
    "SHUTDOWN": "triple fault: the model has no shutdown state",
}
OTHER_USERSPACE_EXIT = "a userspace exit the model has no event for"


def disposition(event: str) -> tuple[str, str]:
    """(class, reason) of a tracepoint: compared, context, classified or unclassified."""
    if event in COMPARED:
        return "compared", COMPARED[event]
    if event in CONTEXT:
        return "context", CONTEXT[event]
    if event in CLASSIFIED:
        return "classified", CLASSIFIED[event]
    return "unclassified", "a tracepoint this importer has no entry for (not a 6.18 kvm/kvmmmu event)"


ALL_KNOWN = frozenset(COMPARED) | frozenset(CONTEXT) | frozenset(CLASSIFIED)
