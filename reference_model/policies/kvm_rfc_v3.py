"""``kvm-rfc-v3``: RFC v3 (Chenyi Qiang, 2020-11-05), seed 002.

Source: cover ``20201105081805.5674-1-chenyi.qiang@intel.com``.  Compared with v4: no software
copy (every access VMREADs/VMWRITEs, permission_fault goes through kvm_get_msr, so the MSR
filter reaches emulation, D4); pkr_mask does not tell PKE from PKS (B4) and CR4.PKS is no MMU
role bit (B3) (Paolo ``f4e5dd40-…``, Sean ``YBB0AT6xfObR7A5l``); intercept and controls follow
CPUID; no RESET handling; the guest's PKS bit is cleared without the cap; PKRS is in the
possible-pass-through list.
"""

from .kvm_v4 import POLICY as KVM_V4
from .registry import register

POLICY = register(KVM_V4.derive(
    "kvm-rfc-v3",
    "KVM PKS RFC v3 (2020)",
    "RFC v3 0/7 20201105081805.5674-1-chenyi.qiang@intel.com",
    ctl_policy="cpuid",
    intercept_policy="cpuid",
    filter_reevaluates_pkrs=True,
    pkrs_copy="none",
    emu_pkrs_source="msr",
    mmu_role="none",
    pkr_mask_by_address=False,
    clear_gcpuid_without_cap=True,
    reset_clears_pkrs=False,
    init_clears_pkrs=False,
    reset_writes_vmcs=True,
))
