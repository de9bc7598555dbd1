"""The knobs in which KVM versions differ, with v7's values as defaults.

Each knob is one row of the per-version table (sources/kvm_pks_series.md §10) or one bug's
cause (§11); the policy modules in ``policies/`` set them.  A user variant file may change any
of them (``difftest/variants.py``).  String knobs list their allowed values in ``CHOICES``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from .restore import Restorable


@dataclass(frozen=True)
class KvmKnobs(Restorable):
    """KVM behaviour switches; defaults are the v7 series (SPEC §3)."""

    # -- support and capability (KVM.CAP, KVM.MSR.LIST) ---------------------------------
    pks_support: bool = True  # False: upstream KVM, 0x6E1 is an unknown MSR, cap=0
    cap_requires_ctls: bool = False  # RFC v1-v5: cap also needs both load controls (v6/v7 do not: D2)
    pair_controls: bool = False  # v7R adjust_vm_entry_exit_pair: one control alone is never used
    clear_gcpuid_without_cap: bool = False  # RFC v1-v3 clear the guest's PKS bit when !cap
    msr_list_needs_cap: bool = True  # RFC v1 lists 0x6E1 even without cap (B2)
    # -- CR4 and the MMU (KVM.CR4.*, KVM.MMU.PKR) ---------------------------------------
    pdptr_reload_on_pks: bool = False  # RFC v1: CR4.PKS in pdptr_bits (B1)
    mmu_role: str = "separate"  # none (RFC v1-v3, B3) | merged (v4, B10) | separate
    pkr_mask_by_address: bool = True  # RFC v1-v3 do not tell PKE from PKS (B4)
    emu_pkrs_source: str = "gated"  # msr (v1-v3) | copy (v4) | blind (v5/v6, B13) | gated (v7: only if role.cr4_pks)
    pkru_gated_by_role: bool = True  # v7 reads PKRU only if role.cr4_pke (B13)
    # -- the MSR (KVM.MSR.*) ------------------------------------------------------------
    # (no knob for v7R moving the 63:32 check after the capability checks: every failure of
    # vmx_set_msr returns 1, so the order changes no outcome; sources/kvm_pks_series.md §2.1)
    pkrs_copy: str = "lazy"  # none (v1-v3: VMREAD/VMWRITE only) | eager (v4: skip-if-equal, per-exit VMREAD) | lazy
    lazy_vmread_needs_cap: bool = False  # v5's vmx_cache_reg VMREADs only with cap (v6+ unconditionally, B13)
    intercept_policy: str = "cpuid"  # cpuid | cr4 (v4) | cpuid_sticky (v5, B11a)
    msr_filter_available: bool = True  # RFC v1/v2 predate KVM_X86_SET_MSR_FILTER
    filter_reevaluates_pkrs: bool = True  # v4 special-cases PKRS outside the possible list (B8)
    # -- the VMCS controls and host field (KVM.CTL, KVM.HOST) ---------------------------
    ctl_initial_on: bool = False  # RFC v1-v5 and v7R start with both controls on
    ctl_policy: str = "cpuid"  # cpuid | cr4 (v4, B6/B7) | cpuid_clear_only (v5, B11b) | always (v7R)
    sync_host_field: bool = True  # RFC v1-v4 copy only the cache on a VMCS switch (B5)
    # -- RESET / INIT (KVM.RESET) -------------------------------------------------------
    reset_clears_pkrs: bool = True  # RFC v1-v3 do nothing on RESET
    init_clears_pkrs: bool = False  # v4, v5 clear PKRS on INIT (B9, B12)
    reset_writes_vmcs: bool = True  # v4 clears only the software copy (B9)
    # -- nested (KVM.NESTED.*) ----------------------------------------------------------
    nested_caps: str = "hw"  # cpuid (RFC v1) | hw_and_cpuid (RFC v2-v4) | hw
    vmcs12_layout: str = "v5"  # rfc (RFC v1-v4: 320/328) | v5 (998/1006)
    capture_l1_pkrs: str = "not_from_vmentry"  # not_load (v1-v6, B14) | not_from_vmentry | not_run_pending (v7R)
    save_l2_gate: str = "nested_entry_ctl"  # cap (RFC v1) | gcpuid (v2-v6, B15) | nested_entry_ctl
    # -- hosts that differ from upstream KVM (sources/kvm_recorder.md) ------------------
    cpuid7_ecx_keep: int = 0xFFFF_FFFF  # bits of leaf 7 ECX that survive KVM_SET_CPUID2
    cr4_pke_needs_pku: bool = True  # the PVM backend accepts CR4.PKE without PKU
    rdpkru_internal_error: bool = False  # the PVM backend fails to emulate RDPKRU
    # -- PVM (PVM.*): the guest's key split, invisible to the hypervisor (snapshot pvm.pkrs_view only)
    pvm_supervisor_keys: int = 0xFFFF_0000  # SUPERVISOR_KEYS_MASK: keys 8-15 for supervisor pages
    # -- pKVM (PKVM.*) ------------------------------------------------------------------
    pkvm: str = "none"  # none | npvm | pvm
    pkvm_msr_pre: str = "compare"  # merged (pkvm-v6.18 pkvm_set_msr) | the review's proposals compare | allow5 | allow8
    pkvm_cpuid_pks: str = "keep"  # pkvm_enforce_cpuid and a pVM's PKS bit (unsettled): keep | clear | native

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> KvmKnobs:
        k = cls(**dict(m))
        for name, allowed in CHOICES.items():
            if getattr(k, name) not in allowed:
                raise ValueError(f"knob {name}={getattr(k, name)!r}: one of {', '.join(allowed)}")
        return k

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


CHOICES: dict[str, tuple[str, ...]] = {
    "mmu_role": ("none", "merged", "separate"),
    "emu_pkrs_source": ("msr", "copy", "blind", "gated"),
    "pkrs_copy": ("none", "eager", "lazy"),
    "intercept_policy": ("cpuid", "cr4", "cpuid_sticky"),
    "ctl_policy": ("cpuid", "cr4", "cpuid_clear_only", "always"),
    "nested_caps": ("cpuid", "hw_and_cpuid", "hw"),
    "vmcs12_layout": ("rfc", "v5"),
    "capture_l1_pkrs": ("not_load", "not_from_vmentry", "not_run_pending"),
    "save_l2_gate": ("cap", "gcpuid", "nested_entry_ctl"),
    "pkvm": ("none", "npvm", "pvm"),
    "pkvm_msr_pre": ("merged", "compare", "allow5", "allow8"),
    "pkvm_cpuid_pks": ("keep", "clear", "native"),
}

V7_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(KvmKnobs)}
