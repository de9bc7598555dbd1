"""Physical CPUs: the real IA32_PKRS that vCPUs of one or several VMs time-share (rule KVM26.PCPU).

Up to the 2022 series every vCPU of the model ran on a CPU of its own, so a PKRS value could only
ever reach the vCPU that wrote it.  A real host schedules many vCPUs on one pCPU: ``vcpu_load``
(``vmx_vcpu_load``: VMPTRLD of the vCPU's VMCS on this CPU) and ``vcpu_put`` never touch IA32_PKRS,
so what the next guest or the host kernel runs with is whatever the last VM exit (its exit-load
control, or none) or the last host write left in the register.  That is what decides whether
"leave the host PKRS as the guest's" (Paolo Bonzini, Nov 2025) is safe.

A :class:`PhysCpu` is the register plus who is loaded on it; :class:`PcpuTable` places vCPUs.  A
vCPU that was never placed runs on the pCPU with its own index, which keeps every trace without
scheduling events exactly as it was (one vCPU per pCPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .restore import Restorable


@dataclass
class PhysCpu(Restorable):
    """One physical CPU: its IA32_PKRS, the host kernel's CR4.PKS and the vCPU loaded on it."""

    index: int
    pkrs: int = 0  # the real register (RESET value 0, ARCH.RESET)
    host_cr4_pks: bool = False  # the host kernel runs with CR4.PKS=1 (it uses PKS itself)
    loaded: int | None = None  # the vCPU whose VMCS is current on this CPU, if any

    def host_effective_pkrs(self) -> int | None:
        """What the host kernel's supervisor accesses are checked against (None: nothing, CR4.PKS=0)."""
        return self.pkrs if self.host_cr4_pks else None


@dataclass
class PcpuTable(Restorable):
    """The host's pCPUs and the placement of vCPUs on them."""

    host_cr4_pks: bool = False
    host_pkrs: int = 0  # the host kernel's own value (pkrs_cache), what a fresh pCPU holds
    pcpus: dict[int, PhysCpu] = field(default_factory=dict)
    placement: dict[int, int] = field(default_factory=dict)  # vCPU index -> pCPU index

    def pcpu(self, index: int) -> PhysCpu:
        p = self.pcpus.get(index)
        if p is None:
            p = self.pcpus[index] = PhysCpu(index, self.host_pkrs if self.host_cr4_pks else 0, self.host_cr4_pks)
        return p

    def of(self, vcpu: int) -> PhysCpu:
        """The pCPU ``vcpu`` runs on (its own index until it is placed elsewhere)."""
        return self.pcpu(self.placement.get(vcpu, vcpu))

    def place(self, vcpu: int, pcpu: int) -> PhysCpu:
        self.placement[vcpu] = pcpu
        return self.pcpu(pcpu)
