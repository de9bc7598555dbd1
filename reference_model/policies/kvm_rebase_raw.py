"""``kvm-rebase-raw``: the rebase advertising PKS from raw CPUID (``PASSTHROUGH_F(PKS)``), no host PKS.

Source: torvalds/linux arch/x86/kvm/cpuid.c, PASSTHROUGH_F: "features that KVM supports based purely
on raw hardware CPUID, i.e. that KVM virtualizes even if the host kernel doesn't use the feature"
(added for LA57); Paolo Bonzini (Nov 2025): virtual PKS "should" work without host PKS.  The pair
rule (KVM26.CTL.PAIR) still applies: both load-PKRS controls are needed.
"""

from .kvm_rebase import POLICY as KVM_REBASE
from .registry import register

POLICY = register(KVM_REBASE.derive(
    "kvm-rebase-raw",
    "kvm-rebase with PKS from raw CPUID (PASSTHROUGH_F): advertised without host kernel PKS",
    "torvalds/linux arch/x86/kvm/cpuid.c PASSTHROUGH_F; Paolo Bonzini Nov 2025",
    cap_source="raw",
))
