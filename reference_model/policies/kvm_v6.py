"""``kvm-v6``: the v6 series (Chenyi Qiang, 2022-02-21).

Source: cover ``20220221080840.7369-1-chenyi.qiang@intel.com``.  Differences from v7
(sources/kvm_pks_series.md §10): permission_fault reads PKRS and PKRU blindly and vmx_cache_reg
VMREADs unconditionally (B13, Sean ``YkTLXGdu2I9i44ti@google.com``); L1's PKRS is captured only
when vmcs12 lacks the load control (B14) and L2's PKRS is saved to vmcs12 gated on guest CPUID
(B15) (Sean ``YkTP7uztERLwynAN@google.com``).
"""

from .kvm_v7 import POLICY as KVM_V7
from .registry import register

POLICY = register(KVM_V7.derive(
    "kvm-v6",
    "KVM PKS series v6 (2022)",
    "v6 0/7 20220221080840.7369-1-chenyi.qiang@intel.com",
    emu_pkrs_source="blind",
    pkru_gated_by_role=False,
    capture_l1_pkrs="not_load",
    save_l2_gate="gcpuid",
))
