"""``upstream-2026``: KVM as of v6.18 without the PKS series, on the 2026 model (pCPUs, KVM26.*).

Source: torvalds/linux arch/x86/kvm/cpuid.c ``kvm_set_cpu_caps`` (CPUID_7_ECX lists F(PKU),
PASSTHROUGH_F(LA57)..., no PKS; sources/field_2026.md §1.3), ``kvm_set_cpuid`` (SET_CPUID2 after
KVM_RUN must be identical), x86.c ``kvm_probe_msr_to_save`` (no 0x6E1), nested.c
``vmx_set_vmx_msr`` (VMX capability MSRs restorable by userspace).  PKS behaves as ``upstream``.
"""

from ..kvm2026 import DEFAULTS_2026, Kvm2026Machine
from .registry import Policy, register
from .upstream import POLICY as UPSTREAM

POLICY = register(Policy(
    name="upstream-2026",
    description="KVM v6.18 without PKS: cap=0, 0x6E1 unknown; 2026 CPUID/VMX-MSR rules, shared pCPUs",
    source="torvalds/linux arch/x86/kvm/cpuid.c kvm_set_cpu_caps, kvm_set_cpuid; x86.c kvm_probe_msr_to_save",
    machine=Kvm2026Machine,
    knobs={**UPSTREAM.knobs, **DEFAULTS_2026},
))
