"""pKVM-IA's PV interface on vCPU state: the calls and who may make them for a protected vCPU.

Source: intel-staging/pKVM-IA, branch ``pkvm-v6.18`` (pvVMCS parts 2 and 3, PR #48/#60, merged
Jan-Feb 2026), ``arch/x86/kvm/pkvm/pkvm.c``, ``is_guest_vcpu_accessible()``.  For an npVM every
call is allowed ("no isolation between non-protected VMs and the host").  For a pVM each call is
in one of three classes; a call the function does not list is denied (its ``default:`` case).
The names are the ``enum pkvm_hc`` members without their ``__pkvm__`` prefix.
"""

from __future__ import annotations

# "The host is responsible for running vCPU, injecting interrupts, emulating lapic etc."
ALWAYS = frozenset({
    "enable_nmi_window", "enable_irq_window", "interrupt_allowed", "nmi_allowed", "get_nmi_mask",
    "inject_irq", "inject_nmi", "cancel_injection", "update_cr8_intercept", "refresh_apicv_exec_ctrl",
    "load_eoi_exitmap", "hwapic_isr_update", "write_tsc_offset", "write_tsc_multiplier", "setup_mce",
    "vcpu_run", "complete_emulated_msr", "protected_apic_has_interrupt",
})
# "the host needs to pre-configure the pVM's vCPU state for booting": allowed while !kvm_vcpu_has_run.
BEFORE_FIRST_RUN = frozenset({
    "set_efer", "set_msr", "get_msr", "set_cr4", "set_cr0", "set_rflags", "get_rflags", "set_segment",
    "get_segment", "get_segment_base", "set_idt", "get_idt", "set_gdt", "get_gdt", "flush_tlb_all",
    "flush_tlb_current", "flush_tlb_gva", "flush_tlb_guest", "vcpu_after_set_cpuid", "vcpu_add_fpstate",
    "load_mmu_pgd",
})
# Calls of the PV interface (field_2026.md §3, the host-side enum) that the function denies for a pVM;
# update_exception_bitmap and inject_exception are "always denied" (pkvm_update_exception_bitmap /
# pkvm_inject_exception BUG_ON a protected vCPU).
NEVER = frozenset({
    "update_exception_bitmap", "inject_exception", "set_nmi_mask", "get_interrupt_shadow",
    "set_interrupt_shadow", "set_dr7", "post_set_cr3", "cache_reg", "update_cpuid_runtime",
    "set_virtual_apic_mode", "hwapic_irr_update",
})

PV_CALL_NAMES: tuple[str, ...] = tuple(sorted(ALWAYS | BEFORE_FIRST_RUN | NEVER))


def access_class(call: str) -> str:
    """``always``, ``before_first_run`` or ``never``: the case of is_guest_vcpu_accessible() for a pVM."""
    if call in ALWAYS:
        return "always"
    if call in BEFORE_FIRST_RUN:
        return "before_first_run"
    return "never"
