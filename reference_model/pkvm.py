"""pKVM (seed 004): KVM-high in the host, vCPU state owned by the pKVM hypervisor (PKVM.*).

An npVM behaves as KVM (PKVM.KINDS); every host operation on vCPU state is a PV call, counted
per kind (PKVM.COST).  For a protected VM, once its vCPU has run the host may no longer read or
write that state (PKVM.PROTECT) nor change CPUID (PKVM.CPUID); before that, host MSR writes
follow the policy the review debated (PKVM.MSR.PRE): ``compare`` (equal value only; a
write-only MSR cannot be read back, so it fails), ``allow5`` or ``allow8`` (allowlists).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .events import Event, Outcome
from .host import HostCpu
from .kvm import KvmMachine, KvmVcpu
from .registers import (
    MSR_CSTAR,
    MSR_KERNEL_GS_BASE,
    MSR_LSTAR,
    MSR_STAR,
    MSR_SYSCALL_MASK,
    MSR_SYSENTER_CS,
    MSR_SYSENTER_EIP,
    MSR_SYSENTER_ESP,
)

ALLOW5 = frozenset({MSR_STAR, MSR_LSTAR, MSR_CSTAR, MSR_SYSCALL_MASK, MSR_KERNEL_GS_BASE})
ALLOW8 = ALLOW5 | {MSR_SYSENTER_CS, MSR_SYSENTER_ESP, MSR_SYSENTER_EIP}
# Write-only command MSRs: IA32_PRED_CMD, IA32_FLUSH_CMD (seed 004 names FLUSH_CMD).
WRITE_ONLY_MSRS = frozenset({0x49, 0x10B})
# MSRs whose write acts even with an equal value (seed 004's first objection to "compare").
SIDE_EFFECT_MSRS = frozenset({0x6E0})
# Host ioctls that become PV calls on vCPU state (PKVM.COST), by the PV call's name.
PV_CALLS = {
    "set_cpuid": "vcpu_after_set_cpuid", "get_cpuid": "get_cpuid", "set_msrs": "set_msr", "get_msrs": "get_msr",
    "set_sregs": "set_segment", "get_sregs": "get_segment", "set_nested_state": "set_nested_state",
    "get_nested_state": "get_nested_state",
}
HOST_ONLY = frozenset({"reset", "init", "host_pkrs", "pvm_start", "create_vcpu"})
PROTECTED_STATE = frozenset({"set_cpuid", "set_msrs", "get_msrs", "set_sregs", "get_sregs", "set_nested_state",
                             "get_nested_state"})


class PkvmVcpu(KvmVcpu):
    """A vCPU whose state lives in the pKVM hypervisor."""

    @property
    def protected(self) -> bool:
        return self.k.pkvm == "pvm"

    def step(self, ev: Event) -> Outcome:
        call = PV_CALLS.get(ev.kind)
        if call is not None:
            n = len(ev.msrs or ()) if ev.kind in ("set_msrs", "get_msrs") else 1
            self.vm.count(f"pkvm.pv.{call}", max(n, 1))
        if self.protected and self.pvm_ran and ev.kind in PROTECTED_STATE:
            self.leave_to_userspace()
            rule = "PKVM.CPUID" if ev.kind == "set_cpuid" else "PKVM.PROTECT"
            if ev.kind in ("set_msrs", "get_msrs"):
                return Outcome("ok", count=0, values=() if ev.kind == "get_msrs" else None, rules=("KVM.MSR.WR", rule))
            return Outcome("eperm", rules=(rule,))
        if ev.kind not in PV_CALLS and ev.kind not in HOST_ONLY and not self.in_guest:
            self.vm.count("pkvm.pv.vcpu_run")
        return super().step(ev)

    def host_set_msr_gate(self, msr: int, value: int) -> str | None:
        """PKVM.MSR.PRE for a pVM that has not run yet."""
        if not self.protected:
            return None
        policy = self.k.pkvm_msr_pre
        if policy == "compare":
            if msr in WRITE_ONLY_MSRS:
                return "PKVM.MSR.PRE"  # the read-back fails or differs: EPERM
            current = self.host_get_msr(msr)
            if current != value:
                return "PKVM.MSR.PRE"
            if msr in SIDE_EFFECT_MSRS:
                self.vm.count("pkvm.side_effect_dropped")  # "success" without performing the write
            return None
        allowed = ALLOW5 if policy == "allow5" else ALLOW8
        return None if msr in allowed else "PKVM.MSR.PRE"

    def host_set_msr(self, msr: int, value: int) -> bool:
        if msr in WRITE_ONLY_MSRS:
            return True  # a command MSR: accepted, nothing stored
        return super().host_set_msr(msr, value)

    def vcpu_reset(self, init: bool) -> Outcome:
        """KVM's reset writes IA32_XSS (and PKRS) host-initiated; pKVM may refuse them harmlessly."""
        out = super().vcpu_reset(init)
        if self.protected and self.host_set_msr_gate(0xDA0, 0):
            self.vm.count("pkvm.refused.reset_xss")
        return out


class PkvmMachine(KvmMachine):
    """A VM under pKVM: protected or not, by the ``pkvm`` knob."""

    name = "pkvm"

    def __init__(self, knobs: Mapping[str, Any], host: HostCpu) -> None:
        super().__init__(knobs, host)
        self.vcpu_class = PkvmVcpu
