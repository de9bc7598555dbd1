"""``pvm``: PVM's own PKS, as virt-pvm/linux's specification defines it (PVM.*).

Source: virt-pvm/linux ``Documentation/virt/kvm/x86/pvm-spec.rst`` ("CPUID leaf", "Paging",
"Protection Keys", "RDPKRU/WRPKRU", "PVM events"); model in ``reference_model/pvm.py``.  Host
ioctls are those of upstream KVM on the PVM backend (``upstream-pvm``: sources/kvm_recorder.md,
traces/real/), except that CPUID keeps PKS/PKU when the host's CR4.PKE is set (PVM.CPUID) and
CR4.PKE follows the spec (PVM.CR4.PKE), not this host's recorded leniency (HOST.PVM.PKE).
"""

from ..pvm import PvmMachine
from .registry import Policy, register
from .upstream_pvm import POLICY as UPSTREAM_PVM

POLICY = register(Policy(
    name="pvm",
    description="PVM's PKS: keys ignore U/S, the underlying PKRU serves both modes, swapped on each switch",
    source="virt-pvm/linux: Documentation/virt/kvm/x86/pvm-spec.rst, sections CPUID leaf, Paging, "
           "Protection Keys, RDPKRU/WRPKRU, PVM events",
    machine=PvmMachine,
    knobs={**UPSTREAM_PVM.knobs, "cpuid7_ecx_keep": 0xFFFF_FFFF, "cr4_pke_needs_pku": True},
    family="PVM",
))
