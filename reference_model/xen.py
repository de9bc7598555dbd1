"""Xen's HVM PKS (XEN.*): the architecture on VT-x with HAP, Xen's own CPUID policy and page walk.

Source: xen-project/xen, Andrew Cooper's series (Dec 2021, v2 Jan 2023; message ids
20211216095421.12871-* and 20230110171845.20542-*):

- ``xen/arch/x86/cpuid.c`` ``calculate_hvm_max_policy()`` clears PKS without VMX and the
  featureset marks it ``H`` (HAP guests only); ``xen/arch/x86/hvm/hvm.c``
  ``hvm_cr4_guest_valid_bits()`` allows CR4.PKS iff the guest's policy has PKS (XEN.CPUID);
- ``xen/arch/x86/msr.c`` ``guest_rdmsr()``/``guest_wrmsr()`` ``case MSR_PKRS``: #GP without PKS
  or with bits 63:32 set, else the live register; ``xen/arch/x86/hvm/vmx/vmx.c``
  ``vmx_cpuid_policy_changed()`` drops the intercept when the guest has PKS (XEN.MSR);
- ``xen/arch/x86/mm/guest_walk.c`` ``guest_walk_tables()``: Xen's own walk (emulation) checks
  the key only "if all access checks are thus far ok", so a #PF that also has a U/S or R/W
  violation lacks PFEC.PK (XEN.WALK), where the SDM sets it (ARCH.PFEC.PK, ARCH.PFEC.CPL3);
- ``xen/arch/x86/hvm/hvm.c`` ``msrs_to_send[]``: MSR_PKRS travels in the migration record (the
  trace format has no migration event, so this model does not replay it).

Hardware accesses under HAP are the CPU's (policy ``hw``).  Nested HVM is not modelled (X86.NA).
Xen's toolstack has no KVM ioctls, so host events other than the CPUID choice are X86.NA.
"""

from __future__ import annotations

from .events import Event, Outcome, unsupported
from .host import HostCpu
from .hw import HwMachine, HwVcpu
from .registers import CPUID7_ECX_PKS, MSR_IA32_PKRS, PF_PK

NESTED_KINDS = frozenset({"vmwrite", "vmread", "set_msr_bitmap", "vmlaunch", "vmresume", "nested_exit"})
ORDINARY_FAULT_RULES = frozenset({"X86.PAGE.US", "X86.PAGE.RW", "X86.PAGE.NX", "X86.PAGE.SMEP", "X86.PAGE.SMAP"})


def xen_offers_pks(host: HostCpu) -> bool:
    """XEN.CPUID: PKS in the HVM max policy needs a PKS CPU, VMX and HAP (EPT)."""
    return host.has("pks") and host.has("ept")


class XenVcpu(HwVcpu):
    """An HVM vCPU under Xen with HAP."""

    def step(self, ev: Event) -> Outcome:
        kind = ev.kind
        if kind in NESTED_KINDS or ev.level == "l2":
            return unsupported(kind)
        if kind == "set_cpuid":
            ecx7 = ev.cpuid_7_ecx or 0
            if not xen_offers_pks(self.host):
                ecx7 &= ~CPUID7_ECX_PKS
            capped = Event("set_cpuid", vcpu=ev.vcpu, level=ev.level, seq=ev.seq, cpuid_7_ecx=ecx7,
                           cpuid_1_ecx=ev.cpuid_1_ecx)
            out = super().step(capped)
            out.rules = (*out.rules, "XEN.CPUID")
            return out
        out = super().step(ev)
        if kind in ("wrmsr", "rdmsr") and ev.msr == MSR_IA32_PKRS and ev.level != "host":
            out.rules = (*out.rules, "XEN.MSR")
        elif kind == "mov_cr4":
            out.rules = (*out.rules, "XEN.CPUID")
        elif kind == "emu_access":
            out = self.xen_walk(out)
        return out

    @staticmethod
    def xen_walk(out: Outcome) -> Outcome:
        """guest_walk_tables(): the key is checked only when no other access check failed."""
        if out.result != "pf" or not (out.pfec or 0) & PF_PK:
            return out
        if not ORDINARY_FAULT_RULES & set(out.rules):
            return out
        return Outcome("pf", pfec=(out.pfec or 0) & ~PF_PK, cr2=out.cr2,
                       rules=(*[r for r in out.rules if r not in ("ARCH.PFEC.PK", "ARCH.PFEC.CPL3")], "XEN.WALK"))


class XenMachine(HwMachine):
    """A Xen HVM domain on a VT-x host with HAP."""

    name = "xen-hvm"

    def hw_vcpu(self, index: int) -> HwVcpu:
        v = self.hw_vcpus.get(index)
        if v is None:
            v = self.hw_vcpus[index] = XenVcpu(self)
        return v
