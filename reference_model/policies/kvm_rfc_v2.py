"""``kvm-rfc-v2``: RFC v2 (Chenyi Qiang, 2020-10-14).

Source: cover ``20201014021157.18022-1-chenyi.qiang@intel.com``.  As RFC v3, but its base kernel
predates KVM_X86_SET_MSR_FILTER (5.10), so there is no filter to honour.
"""

from .kvm_rfc_v3 import POLICY as KVM_RFC_V3
from .registry import register

POLICY = register(KVM_RFC_V3.derive(
    "kvm-rfc-v2",
    "KVM PKS RFC v2 (2020)",
    "RFC v2 0/7 20201014021157.18022-1-chenyi.qiang@intel.com",
    msr_filter_available=False,
))
