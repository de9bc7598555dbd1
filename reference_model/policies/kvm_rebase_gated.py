"""``kvm-rebase-gated``: the rebase advertising PKS only with host PKS (``F(PKS)``), as v7 did.

Source: v7 (20220424101557.134102-1-lei4.wang@intel.com) sets the cap with
kvm_cpu_cap_check_and_set(X86_FEATURE_PKS), i.e. boot_cpu_has(PKS), which on v7's base series
meant a host kernel built with supervisor pkeys (CR4.PKS=1); torvalds/linux arch/x86/kvm/cpuid.c
F() masks with boot_cpu_data.  The pair rule (KVM26.CTL.PAIR) applies as in ``kvm-rebase``.
"""

from .kvm_rebase import POLICY as KVM_REBASE
from .registry import register

POLICY = register(KVM_REBASE.derive(
    "kvm-rebase-gated",
    "kvm-rebase with PKS gated on host PKS (F(PKS), v7's choice): not advertised unless the host uses PKS",
    "v7 kvm_cpu_cap_check_and_set(X86_FEATURE_PKS); torvalds/linux arch/x86/kvm/cpuid.c F()",
    cap_source="host",
))
