"""``pkvm-npvm``: a non-protected VM under pKVM: behaves as KVM v7, host state access costs PV calls.

Source: seed 004 (pKVM-IA pvvmcs part 2 review, Dec 2025): PKVM.KINDS, PKVM.PROTECT, PKVM.CPUID,
PKVM.COST, and for the MSR policy before first run PKVM.MSR.PRE (the compare-with-current-value
code, the reviewer's write-only/side-effect objection, the 5-MSR crosvm allowlist and the 8-MSR
list seen in pkvm_set_msr). Guest-side PKS behaviour is v7's.
"""

from ..pkvm import PkvmMachine
from .kvm_v7 import POLICY as KVM_V7
from .registry import Policy, register

POLICY = register(Policy(
    name="pkvm-npvm",
    description="a non-protected VM under pKVM: behaves as KVM v7, host state access costs PV calls",
    source="pKVM-IA (github.com/intel-staging/pKVM-IA) pull request #48, pvVMCS part 2 review (Dec 2025)",
    machine=PkvmMachine,
    knobs={**KVM_V7.knobs, "pkvm": "npvm", "pkvm_msr_pre": "compare"},
))
