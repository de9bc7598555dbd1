"""``pkvm-pvm-compare``: PROPOSAL (seed 004 review, never merged).

A protected VM; before it runs, host MSR writes succeed only if equal to the current value.

This was one of the three proposals of the pKVM-IA pvvmcs part 2 review (seed 004, Dec 2025 -
Jan 2026) for host MSR writes before a pVM's first run; none was merged.  What was merged is
``pkvm-pvm`` (``pkvm_set_msr()`` in ``arch/x86/kvm/pkvm/pkvm.c``).  Kept to show what the
proposal would have done.

Source: seed 004 (pKVM-IA pvvmcs part 2 review, Dec 2025): PKVM.KINDS, PKVM.PROTECT, PKVM.CPUID,
PKVM.COST, and for the MSR policy before first run PKVM.MSR.PRE (the compare-with-current-value
code, the reviewer's write-only/side-effect objection, the 5-MSR crosvm allowlist and the 8-MSR
list seen in pkvm_set_msr). Guest-side PKS behaviour is v7's.
"""

from ..pkvm import PkvmMachine
from .kvm_v7 import POLICY as KVM_V7
from .registry import Policy, register

POLICY = register(Policy(
    name="pkvm-pvm-compare",
    description="proposal (not merged): a pVM; before it runs, host MSR writes succeed only if equal to the current value",
    source="proposal in the pKVM-IA pvVMCS part 2 review (github.com/intel-staging/pKVM-IA pull request #48, "
           "Dec 2025), not merged",
    machine=PkvmMachine,
    knobs={**KVM_V7.knobs, "pkvm": "pvm", "pkvm_msr_pre": "compare"},
    family="PKVM",
))
