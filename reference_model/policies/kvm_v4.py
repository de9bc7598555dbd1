"""``kvm-v4``: the v4 series (Chenyi Qiang, 2021-02-05), the version of the seed-001 review.

Source: cover ``20210205083706.14146-1-chenyi.qiang@intel.com``; Sean's review
``YQLa4UErfNbdjv3l@google.com`` (B5 host field not synced on a VMCS switch, B6/B7 toggling in
vmx_set_cr4, B8 filter special case, B9 reset writes only the copy) and
``YQLkczVfCsFp4IxW@google.com`` (B10 merged cr4_pkr role bit).  Eager software copy with
skip-if-equal writes and a VMREAD after every exit while CR4.PKS=1; RFC-era vmcs12 layout and
nested caps gated by CPUID.
"""

from .kvm_v5 import POLICY as KVM_V5
from .registry import register

POLICY = register(KVM_V5.derive(
    "kvm-v4",
    "KVM PKS series v4 (2021)",
    "v4 0/5 20210205083706.14146-1-chenyi.qiang@intel.com; review YQLa4UErfNbdjv3l@google.com",
    ctl_policy="cr4",
    intercept_policy="cr4",
    filter_reevaluates_pkrs=False,
    sync_host_field=False,
    pkrs_copy="eager",
    emu_pkrs_source="copy",
    mmu_role="merged",
    reset_writes_vmcs=False,
    init_clears_pkrs=True,
    nested_caps="hw_and_cpuid",
    vmcs12_layout="rfc",
    lazy_vmread_needs_cap=False,
))
