"""``upstream``: KVM without the PKS series: no cap, 0x6E1 is an unknown MSR, CR4.PKS reserved.

Source: sources/kvm_recorder.md §0-§2 (the real behaviour of a kernel without PKS support: host
GET/SET_MSRS stop at 0x6E1, the guest gets #GP or an UNKNOWN userspace exit, KVM_SET_SREGS with
CR4.PKS is EINVAL, MOV to CR4 is #GP); SPEC KVM.CAP with cap=0.
"""

from .kvm_v7 import POLICY as KVM_V7
from .registry import register

POLICY = register(KVM_V7.derive(
    "upstream",
    "KVM without PKS support: cap=0, 0x6E1 unknown",
    "upstream Linux arch/x86/kvm (no PKS: 0x6E1 unknown, CR4.PKS reserved); `difftest record kvm`",
    pks_support=False,
))
