"""``kvm-rebase-keep``: the rebase never setting the exit-load control: the host keeps the guest's PKRS.

Source: Paolo Bonzini, CABgObfZc4FQa9sj=FK5Q-tQxr2yQ-9Ez69R5z=5_R0x5MS1d0A@mail.gmail.com (Nov 2025):
"technically it could even be left with the guest value. Since the host clears CR4.PKS, the actual
value won't matter."  The entry-load control stays (always on, as in v7R), so each guest still
starts from its own value; traces/rebase/ shows where the premise (host CR4.PKS=0) is what makes it safe.
"""

from .kvm_rebase import POLICY as KVM_REBASE
from .registry import register

POLICY = register(KVM_REBASE.derive(
    "kvm-rebase-keep",
    "kvm-rebase without the exit-load control: the host runs with the guest's PKRS after a VM exit",
    "Paolo Bonzini CABgObfZc4FQa9sj=FK5Q-tQxr2yQ-9Ez69R5z=5_R0x5MS1d0A@mail.gmail.com",
    exit_host_pkrs="keep",
))
