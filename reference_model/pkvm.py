"""pKVM (seed 004): KVM-high in the host, vCPU state owned by the pKVM hypervisor (PKVM.*).

An npVM behaves as KVM (PKVM.KINDS); every host operation on vCPU state is a PV call, counted
per kind (PKVM.COST).  For a protected VM the knob ``pkvm_msr_pre`` picks the host-access rules:

- ``merged``: pKVM-IA as merged on ``pkvm-v6.18`` (pvVMCS parts 2-3, Jan-Feb 2026).  Host MSR
  writes follow ``pkvm_set_msr()`` (PKVM.MSR.*), every PV call ``is_guest_vcpu_accessible()``
  (PKVM.PV.*), a guest MSR access pKVM neither handles nor forwards is a #GP the host never sees
  (PKVM.GUEST.MSR, ``Outcome.host_visible`` False), and CPUID loses VMX (PKVM.CPUID.VMX) and
  treats PKS as the ``pkvm_cpuid_pks`` knob says (PKVM.CPUID.PKS: the sources do not settle it).
- ``compare``, ``allow5``, ``allow8``: the three proposals of the seed 004 review, kept to show
  what each would have done: once the vCPU has run the host may no longer read or write its
  state (PKVM.PROTECT) nor change CPUID (PKVM.CPUID); before that, host MSR writes succeed only
  with an equal value (a write-only MSR cannot be read back, so it fails) or on an allowlist.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .events import Event, Outcome
from .host import HostCpu
from .kvm import KvmMachine, KvmVcpu
from .pkvm_pv import access_class
from .registers import (
    CPUID1_ECX_VMX,
    CPUID7_ECX_PKS,
    MSR_CSTAR,
    MSR_IA32_PKRS,
    MSR_KERNEL_GS_BASE,
    MSR_LSTAR,
    MSR_STAR,
    MSR_SYSCALL_MASK,
    MSR_SYSENTER_CS,
    MSR_SYSENTER_EIP,
    MSR_SYSENTER_ESP,
    PLAIN_MSRS,
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
NESTED_KINDS = frozenset({"vmwrite", "vmread", "set_msr_bitmap", "vmlaunch", "vmresume", "nested_exit",
                          "get_nested_state", "set_nested_state"})
HOST_ONLY = frozenset({"reset", "init", "host_pkrs", "pvm_start", "create_vcpu", "pv_call"})

# pkvm_set_msr() as merged (arch/x86/kvm/pkvm/pkvm.c): the MSRs a host may still set before first run.
MSR_MTRR_FIRST, MSR_MTRR_LAST = 0x200, 0x26F  # MTRRphysBase_MSR(0) .. MSR_MTRRfix4K_F8000
MSR_MTRR_DEF_TYPE = 0x2FF
MSR_IA32_MISC_ENABLE = 0x1A0
MISC_FAST_STRING, MISC_BTS_UNAVAIL, MISC_PEBS_UNAVAIL = 1 << 0, 1 << 11, 1 << 12
MISC_ALLOWED = MISC_FAST_STRING | MISC_BTS_UNAVAIL | MISC_PEBS_UNAVAIL
MISC_FORCED = MISC_BTS_UNAVAIL | MISC_PEBS_UNAVAIL  # "vPMU is not supported by pKVM yet"
MISC_RESET = MISC_FORCED  # kvm_vcpu_reset: PEBS_UNAVAIL | BTS_UNAVAIL
IGNORED_MSRS = ALLOW8  # "Ignore writings to these MSRs and return 0 ... doesn't really modify"
# pkvm_host_can_emulate_msr(): the guest MSRs pKVM forwards to the host for a pVM (TSC, TSC_ADJUST,
# APICBASE, x2APIC, TSC_DEADLINE); the hypervisor handles the architectural ones in PLAIN_MSRS itself.
FORWARDED_MSRS = frozenset({0x10, 0x3B, 0x1B, 0x6E0, *range(0x800, 0x900)})


def merged_set_msr(msr: int, value: int, has_run: bool) -> tuple[str, int | None]:
    """pkvm_set_msr() for a protected vCPU: (rule, value to write), None = refused (EPERM).

    An ignored MSR comes back with ``value`` -1: success without a write (PKVM.MSR.IGNORED).
    """
    if has_run:
        return "PKVM.MSR.RAN", None
    if MSR_MTRR_FIRST <= msr <= MSR_MTRR_LAST or msr == MSR_MTRR_DEF_TYPE:
        return "PKVM.MSR.MTRR", value
    if msr == MSR_IA32_MISC_ENABLE:
        if value & ~MISC_ALLOWED:
            return "PKVM.MSR.MISC", None
        return "PKVM.MSR.MISC", value | MISC_FORCED
    if msr in IGNORED_MSRS:
        return "PKVM.MSR.IGNORED", -1
    return "PKVM.MSR.DENY", None


def is_mtrr_or_misc(msr: int) -> bool:
    return MSR_MTRR_FIRST <= msr <= MSR_MTRR_LAST or msr in (MSR_MTRR_DEF_TYPE, MSR_IA32_MISC_ENABLE)
PROTECTED_STATE = frozenset({"set_cpuid", "set_msrs", "get_msrs", "set_sregs", "get_sregs", "set_nested_state",
                             "get_nested_state"})


class PkvmVcpu(KvmVcpu):
    """A vCPU whose state lives in the pKVM hypervisor."""

    @property
    def protected(self) -> bool:
        return self.k.pkvm == "pvm"

    @property
    def merged(self) -> bool:
        """The protected vCPU follows pKVM as merged (not one of the review's proposals)."""
        return self.k.pkvm == "pvm" and self.k.pkvm_msr_pre == "merged"

    def bind_handlers(self) -> None:
        super().bind_handlers()
        self.host_handlers["pv_call"] = self.pv_call

    def pv_call(self, ev: Event) -> Outcome:
        """A PV call on this vCPU's state: is_guest_vcpu_accessible() decides for a pVM (PKVM.PV.*)."""
        call = ev.pv_call or ""
        self.vm.count(f"pkvm.pv.{call}")
        if not self.protected:
            return Outcome("ok", rules=("PKVM.KINDS",))
        klass = access_class(call)
        if klass == "always":
            return Outcome("ok", rules=("PKVM.PV.ALWAYS",))
        if klass == "before_first_run" and not self.pvm_ran:
            return Outcome("ok", rules=("PKVM.PV.PRERUN",))
        return Outcome("eperm", rules=("PKVM.PV.DENY" if klass == "never" else "PKVM.PV.PRERUN",))

    def step(self, ev: Event) -> Outcome:
        if self.merged:
            return self.merged_step(ev)
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
        out = super().step(ev)
        if not self.protected and "PKVM.KINDS" not in out.rules:
            out.rules = (*out.rules, "PKVM.KINDS")  # pKVM leaves an npVM to the host's KVM
        return out

    # ------------------------------------------------------------------ pKVM as merged
    def merged_step(self, ev: Event) -> Outcome:
        """A protected vCPU under pKVM as merged: host ioctls become the PV calls of is_guest_vcpu_accessible."""
        kind = ev.kind
        if kind in NESTED_KINDS or ev.level == "l2":
            return Outcome("unsupported", rules=("X86.NA", "PKVM.CPUID.VMX"))  # the pVM has no VMX
        call = PV_CALLS.get(kind)
        if call is not None:
            n = len(ev.msrs or ()) if kind in ("set_msrs", "get_msrs") else 1
            self.vm.count(f"pkvm.pv.{call}", max(n, 1))
            self.leave_to_userspace()
            if kind == "set_msrs":
                return self.merged_set_msrs(ev)
            if kind == "set_cpuid":
                if self.pvm_ran:
                    return Outcome("eperm", rules=("PKVM.PV.PRERUN",))
                return self.merged_set_cpuid(ev)
            if access_class(call) == "never":
                return Outcome("eperm", rules=("PKVM.PV.DENY",))
            if self.pvm_ran:
                if kind == "get_msrs":
                    return Outcome("ok", count=0, values=(), rules=("KVM.MSR.RD", "PKVM.PV.PRERUN"))
                return Outcome("eperm", rules=("PKVM.PV.PRERUN",))
            out = super().step(ev)
            out.rules = (*out.rules, "PKVM.PV.PRERUN")
            return out
        if kind not in HOST_ONLY and not self.in_guest:
            self.vm.count("pkvm.pv.vcpu_run")
        if kind in ("wrmsr", "rdmsr") and ev.level != "host" and self.hidden_msr(ev) and self.enter() is None:
            self.vm.count("pkvm.guest_msr_gp")  # handled in the hypervisor: no exit to the host
            rules = ("PKVM.NOPKS", "PKVM.GUEST.MSR") if ev.msr == MSR_IA32_PKRS else ("PKVM.GUEST.MSR",)
            return Outcome("gp", rules=rules, host_visible=False)
        out = super().step(ev)
        if kind == "cpuid" and ev.cpuid_leaf in (1, 7):  # the value is CPUID as pKVM enforced it
            out.rules = (*out.rules, "PKVM.CPUID.VMX" if ev.cpuid_leaf == 1 else "PKVM.CPUID.PKS")
        if "KVM.CR4.RSVD" in out.rules and not self.vm.cap:
            out.rules = (*out.rules, "PKVM.NOPKS")  # the pVM's CR4 is checked by pKVM's copy of KVM
        return out

    def hidden_msr(self, ev: Event) -> bool:
        """A guest MSR access pKVM neither handles nor forwards (pkvm_host_can_emulate_msr() false)."""
        msr = ev.msr or 0
        if (ev.cpl or 0) > 0 or msr in FORWARDED_MSRS:
            return False
        if msr == MSR_IA32_PKRS:
            return not self.vm.cap  # the merged branch has no PKRS code: KVM does not know the MSR
        return msr not in PLAIN_MSRS and msr != 0xC0000080 and not is_mtrr_or_misc(msr)

    def merged_set_msrs(self, ev: Event) -> Outcome:
        """KVM_SET_MSRS on a pVM: pkvm_set_msr() per MSR, stopping at the first refusal."""
        count = 0
        rules = ["KVM.MSR.WR"]
        for msr, value in zip(ev.msrs or (), ev.values or (), strict=False):
            rule, write = merged_set_msr(msr, value, self.pvm_ran)
            rules.append(rule)
            if write is None:
                break
            if write >= 0 and not self.host_set_msr(msr, write):
                break
            count += 1
        return Outcome("ok", count=count, rules=tuple(rules))

    def merged_set_cpuid(self, ev: Event) -> Outcome:
        """vcpu_after_set_cpuid for a pVM: pkvm_enforce_cpuid (PKS: the knob), then VMX cleared."""
        ecx7 = ev.cpuid_7_ecx or 0
        policy = self.k.pkvm_cpuid_pks
        if policy == "clear" or (policy == "native" and not self.host.has("pks")):
            ecx7 &= ~CPUID7_ECX_PKS
        elif policy == "native":
            ecx7 |= CPUID7_ECX_PKS
        ecx1 = (ev.cpuid_1_ecx or 0) & ~CPUID1_ECX_VMX
        out = self.set_cpuid(Event("set_cpuid", vcpu=ev.vcpu, level=ev.level, seq=ev.seq,
                                   cpuid_7_ecx=ecx7, cpuid_1_ecx=ecx1))
        out.rules = (*out.rules, "PKVM.CPUID.PKS", "PKVM.CPUID.VMX")
        return out

    def host_set_msr(self, msr: int, value: int) -> bool:
        if msr in WRITE_ONLY_MSRS:
            return True  # a command MSR: accepted, nothing stored
        if self.merged and is_mtrr_or_misc(msr):
            self.l1.msrs[msr] = value
            return True
        return super().host_set_msr(msr, value)

    def host_get_msr(self, msr: int) -> int | None:
        if self.merged and is_mtrr_or_misc(msr):
            return self.l1.msrs.get(msr, MISC_RESET if msr == MSR_IA32_MISC_ENABLE else 0)
        return super().host_get_msr(msr)

    # ------------------------------------------------------------------ the review's proposals
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

    def vcpu_reset(self, init: bool) -> Outcome:
        """KVM's reset writes IA32_XSS (and PKRS) host-initiated; pKVM may refuse them harmlessly."""
        out = super().vcpu_reset(init)
        if self.merged:
            if merged_set_msr(0xDA0, 0, self.pvm_ran)[1] is None:
                self.vm.count("pkvm.refused.reset_xss")
            return out
        if self.protected and self.host_set_msr_gate(0xDA0, 0):
            self.vm.count("pkvm.refused.reset_xss")
        return out


class PkvmMachine(KvmMachine):
    """A VM under pKVM: protected or not, by the ``pkvm`` knob."""

    name = "pkvm"

    def __init__(self, knobs: Mapping[str, Any], host: HostCpu) -> None:
        super().__init__(knobs, host)
        self.vcpu_class = PkvmVcpu
