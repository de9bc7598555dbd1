"""``pkvm-npvm``: a non-protected VM under pKVM: KVM's own handling, host state access costs PV calls.

Source: intel-staging/pKVM-IA ``pkvm-v6.18`` ``arch/x86/kvm/pkvm/pkvm.c``:
``is_guest_vcpu_accessible()`` allows every PV call for an npVM ("no isolation between
non-protected VMs and the host"), ``pkvm_set_msr()`` passes an npVM's writes straight to
``kvm_msr_write()``, and ``pkvm_host_can_emulate_msr()`` forwards every guest MSR to the host;
so the guest-side PKS behaviour is that of the host's KVM, here the v7 series (PKVM.KINDS).
Every host operation on vCPU state is a PV call, counted per call (PKVM.COST, seed 004).
"""

from ..pkvm import PkvmMachine
from .kvm_v7 import POLICY as KVM_V7
from .registry import Policy, register

POLICY = register(Policy(
    name="pkvm-npvm",
    description="a non-protected VM under pKVM: behaves as the host's KVM (v7), host state access costs PV calls",
    source="intel-staging/pKVM-IA pkvm-v6.18: arch/x86/kvm/pkvm/pkvm.c is_guest_vcpu_accessible(), "
           "pkvm_set_msr(); seed 004",
    machine=PkvmMachine,
    knobs={**KVM_V7.knobs, "pkvm": "npvm", "pkvm_msr_pre": "merged"},
    family="PKVM",
))
