"""``pkvm-pvm``: a protected VM under pKVM-IA as merged (branch ``pkvm-v6.18``, pvVMCS parts 2-3).

Source: intel-staging/pKVM-IA ``arch/x86/kvm/pkvm/pkvm.c``: ``pkvm_set_msr()`` (PKVM.MSR.RAN,
.MTRR, .MISC, .IGNORED, .DENY), ``is_guest_vcpu_accessible()`` (PKVM.PV.ALWAYS, .PRERUN, .DENY),
``pkvm_vcpu_after_set_cpuid()`` -> ``pkvm_enforce_cpuid()`` (PKVM.CPUID.PKS, a knob: its body is
not in the stored corpus); ``arch/x86/kvm/pkvm/cpuid.c`` ``kvm_vcpu_after_set_cpuid()`` clears
VMX (PKVM.CPUID.VMX); ``arch/x86/kvm/x86.c`` under ``__PKVM_HYP__``: ``kvm_set_msr_common()``'s
default case and ``pkvm_host_can_emulate_msr()`` give the guest #GP for an MSR pKVM does not
forward, with no exit to the host (PKVM.GUEST.MSR).  The branch carries no PKS series, so the
guest side is upstream KVM's (0x6E1 unknown, CR4.PKS reserved).  Merged Jan-Feb 2026 (PR #48,
#60; field_2026.md §3).
"""

from ..pkvm import PkvmMachine
from .registry import Policy, register
from .upstream import POLICY as UPSTREAM

POLICY = register(Policy(
    name="pkvm-pvm",
    description="a protected VM under pKVM as merged: pkvm_set_msr, is_guest_vcpu_accessible, hidden #GP",
    source="intel-staging/pKVM-IA pkvm-v6.18: arch/x86/kvm/pkvm/pkvm.c pkvm_set_msr(), "
           "is_guest_vcpu_accessible(), pkvm_vcpu_after_set_cpuid(); arch/x86/kvm/x86.c pkvm_host_can_emulate_msr()",
    machine=PkvmMachine,
    knobs={**UPSTREAM.knobs, "pkvm": "pvm", "pkvm_msr_pre": "merged", "pkvm_cpuid_pks": "keep"},
    family="PKVM",
))
