"""``kvm-rebase-ones``: the rebase loading all-ones into the host PKRS at VM exit (without host PKS).

Source: Paolo Bonzini, CABgObfZc4FQa9sj=FK5Q-tQxr2yQ-9Ez69R5z=5_R0x5MS1d0A@mail.gmail.com (Nov 2025):
"Without host PKS support it could be loaded with all-ones".  A host that uses PKS still gets its own.
"""

from .kvm_rebase import POLICY as KVM_REBASE
from .registry import register

POLICY = register(KVM_REBASE.derive(
    "kvm-rebase-ones",
    "kvm-rebase, host PKRS after a VM exit = all-ones when the host does not use PKS",
    "Paolo Bonzini CABgObfZc4FQa9sj=FK5Q-tQxr2yQ-9Ez69R5z=5_R0x5MS1d0A@mail.gmail.com",
    exit_host_pkrs="ones",
))
