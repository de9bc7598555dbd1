"""KVM as of v6.18 (the 2026 base) with or without the PKS series rebased onto it (rules KVM26.*).

The 2022 model (``kvm.py``) is kept; this module changes only what the 2026 base does differently
where PKS is concerned, each with its rule id (``rules.py``) and the upstream function it comes from:

* KVM_SET_CPUID2 after the first KVM_RUN: EINVAL unless the table is identical, whether or not L2
  is active; an identical table still re-runs the after-set-CPUID hooks (KVM26.CPUID.FROZEN,
  ``cpuid.c: kvm_set_cpuid, kvm_cpuid_check_equal``).
* The capability through the macro families: ``F(PKS)`` needs the host kernel's feature bit,
  ``PASSTHROUGH_F(PKS)`` only raw CPUID (KVM26.CAP.SOURCE, ``cpuid.c: kvm_set_cpu_caps``).
* Entry/exit controls sanitized in pairs (``vmx.c: setup_vmcs_config, vmx_check_entry_exit_pairs``)
  and the feature cleared without the pair, as for CET (``vmx.c: vmx_set_cpu_caps``) (KVM26.CTL.PAIR).
* L1's load-PKRS controls from the sanitized config and the cap (``nested.c:
  nested_vmx_setup_entry_ctls/exit_ctls``), readable and restorable by userspace through host
  KVM_GET_MSRS/KVM_SET_MSRS (``nested.c: vmx_get_vmx_msr, vmx_set_vmx_msr,
  vmx_restore_control_msr``) (KVM26.NESTED.CAPS, KVM26.NESTED.CAPMSR).
* 0x6E1 in msrs_to_save iff the host RDMSR works and the cap is set (``x86.c:
  kvm_probe_msr_to_save``), so KVM_GET_MSR_INDEX_LIST agrees with KVM_GET_SUPPORTED_CPUID
  (KVM26.MSR.LIST).
* Physical CPUs shared by vCPUs (``pcpu.py``) and the rebase's choice of the host PKRS after a VM
  exit (KVM26.PCPU, KVM26.EXIT.HOSTVAL, KVM26.HOST.OWN).

``docs/kvm-model.md`` ("The 2026 base and the rebase's choices") says what the tester concludes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .events import Event, Outcome
from .host import HostCpu
from .kvm import KvmMachine, KvmVcpu
from .kvm_knobs import KvmKnobs
from .machine import snapshot_target
from .pcpu import PcpuTable, PhysCpu
from .registers import (
    CPUID1_ECX_VMX,
    MSR_IA32_VMX_ENTRY_CTLS,
    MSR_IA32_VMX_EXIT_CTLS,
    MSR_IA32_VMX_TRUE_ENTRY_CTLS,
    MSR_IA32_VMX_TRUE_EXIT_CTLS,
    VM_ENTRY_LOAD_IA32_PKRS,
    VM_EXIT_LOAD_IA32_PKRS,
)
from .restore import Restorable
from .vmx import LOW32

# The "default1" controls (SDM Vol. 3 A.3/A.4; KVM's VM_{EXIT,ENTRY}_ALWAYSON_WITHOUT_TRUE_MSR): the
# non-true capability MSRs report them as must-be-1; the true ones let L1 clear "save/load debug
# controls" (bit 2), which KVM frees.  No other control is modelled: their allowed-1 bits read as 0.
DEFAULT1 = {"exit": 0x36DFF, "entry": 0x11FF}
DEBUG_CONTROLS = 1 << 2
PKRS_CONTROL = {"exit": VM_EXIT_LOAD_IA32_PKRS, "entry": VM_ENTRY_LOAD_IA32_PKRS}
# index -> (which controls, is it the "true" MSR)
VMX_CAP_MSRS: dict[int, tuple[str, bool]] = {
    MSR_IA32_VMX_EXIT_CTLS: ("exit", False),
    MSR_IA32_VMX_ENTRY_CTLS: ("entry", False),
    MSR_IA32_VMX_TRUE_EXIT_CTLS: ("exit", True),
    MSR_IA32_VMX_TRUE_ENTRY_CTLS: ("entry", True),
}
VMX_KINDS = frozenset({"vmwrite", "vmread", "vmlaunch", "vmresume", "set_msr_bitmap"})
PKRS_ALL_ONES = LOW32  # AD and WD for all 16 keys


@dataclass(frozen=True)
class Kvm2026Knobs(Restorable):
    """The rebase's open choices (issue 16); each value is one variant in ``policies/``."""

    cap_source: str = "host"  # host: F(PKS), needs the host kernel's X86_FEATURE_PKS | raw: PASSTHROUGH_F(PKS)
    exit_host_pkrs: str = "zero"  # host PKRS after a VM exit without host PKS: zero (v7's stub) | ones | keep

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> Kvm2026Knobs:
        k = cls(**dict(m))
        for name, allowed in CHOICES_2026.items():
            if getattr(k, name) not in allowed:
                raise ValueError(f"knob {name}={getattr(k, name)!r}: one of {', '.join(allowed)}")
        return k

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


CHOICES_2026: dict[str, tuple[str, ...]] = {
    "cap_source": ("host", "raw"),
    "exit_host_pkrs": ("zero", "ones", "keep"),
}
DEFAULTS_2026: dict[str, Any] = {f.name: f.default for f in fields(Kvm2026Knobs)}
_BASE_KNOBS = frozenset(f.name for f in fields(KvmKnobs))


class Kvm2026Machine(KvmMachine):
    """A host running KVM v6.18 (with or without the rebased series): pCPUs shared by the vCPUs."""

    name = "kvm2026"

    def __init__(self, knobs: Mapping[str, Any], host: HostCpu) -> None:
        super().__init__({k: v for k, v in knobs.items() if k in _BASE_KNOBS}, host)
        self.x = Kvm2026Knobs.from_mapping({k: v for k, v in knobs.items() if k not in _BASE_KNOBS})
        self.vcpu_class = Kvm2026Vcpu
        k, h = self.k, host
        cpu_pks = h.has("pks")
        self.host_kernel_pks = cpu_pks and h.has("host_pks")
        # KVM26.CTL.PAIR: setup_vmcs_config keeps a pair only if the CPU has both halves
        pair_ok = h.has("vmx_entry_load_pkrs") and h.has("vmx_exit_load_pkrs")
        self.hw_entry_ok = h.has("vmx_entry_load_pkrs") and (pair_ok or not k.pair_controls)
        self.hw_exit_ok = h.has("vmx_exit_load_pkrs") and (pair_ok or not k.pair_controls)
        # KVM26.CAP.SOURCE: F() masks with boot_cpu_data, PASSTHROUGH_F() only with raw CPUID
        source_ok = cpu_pks and (self.x.cap_source == "raw" or self.host_kernel_pks)
        self.cap = k.pks_support and h.has("ept") and source_ok and (
            not k.cap_requires_ctls or (self.hw_entry_ok and self.hw_exit_ok))
        self.entry_ctl_usable = self.hw_entry_ok
        # KVM26.EXIT.HOSTVAL: "keep" never sets the exit-load control, so the guest's PKRS stays
        self.exit_ctl_usable = self.hw_exit_ok and self.x.exit_host_pkrs != "keep"
        self.pcpus = PcpuTable(host_cr4_pks=self.host_kernel_pks)
        self.host_wrong: dict[int, bool] = {}  # per pCPU: the host ran with a PKRS not its own this event

    # ------------------------------------------------------------------ scheduling (KVM26.PCPU)
    def step(self, ev: Event) -> Outcome:
        if ev.kind == "vcpu_load":
            return self.vcpu_load(ev.vcpu, ev.value or 0)
        if ev.kind == "vcpu_put":
            return self.vcpu_put(ev.vcpu)
        v = self.kvm_vcpu(ev.vcpu)
        p = self.pcpus.of(ev.vcpu)
        self.host_wrong[p.index] = False
        self.schedule(ev.vcpu)  # every vCPU ioctl runs vcpu_load on the vCPU's pCPU
        out = v.step(ev)
        if self.host_wrong.pop(p.index):  # the host ran with a PKRS not its own (KVM26.HOST.OWN)
            out = replace(out, rules=(*out.rules, "KVM26.HOST.OWN"))
        return out

    def schedule(self, vcpu: int) -> PhysCpu:
        """Load ``vcpu`` on its pCPU, putting whichever vCPU was loaded there first."""
        p = self.pcpus.of(vcpu)
        if p.loaded is not None and p.loaded != vcpu:
            self.put(p.loaded)
        p.loaded = vcpu
        return p

    def put(self, vcpu: int) -> None:
        """vcpu_put: a VM exit if the vCPU was in the guest, then its state is unloaded; PKRS is not touched."""
        v = self.kvm_vcpu(vcpu)
        v.leave_to_userspace()
        p = self.pcpus.of(vcpu)
        if p.loaded == vcpu:
            p.loaded = None

    def vcpu_load(self, vcpu: int, pcpu: int) -> Outcome:
        """The vCPU thread runs on pCPU ``pcpu`` from now on (a migration if it ran elsewhere)."""
        self.kvm_vcpu(vcpu)
        old = self.pcpus.of(vcpu)
        if old.index != pcpu and old.loaded == vcpu:
            self.put(vcpu)
        self.pcpus.place(vcpu, pcpu)
        self.schedule(vcpu)
        return Outcome("ok", rules=("KVM26.PCPU",))

    def vcpu_put(self, vcpu: int) -> Outcome:
        self.kvm_vcpu(vcpu)
        self.put(vcpu)
        return Outcome("ok", rules=("KVM26.PCPU",))

    # ------------------------------------------------------------------ state
    def observe(self, vcpu: int) -> tuple[int | None, ...]:
        """(guest's effective PKRS, host's PKRS after the last exit if the host can see it at all).

        With host CR4.PKS=0 no host access is checked against PKRS, so the value the host runs
        with is not observable and two policies that differ only there do not differ.
        """
        v = self.kvm_vcpu(vcpu)
        return (v.effective_pkrs(), v.exit_pkrs if self.host_kernel_pks else None)

    def snapshot(self, path: str) -> int:
        target = snapshot_target(path)
        if target is not None and target[0] is None:
            name = target[1]
            if name == "supported_cpuid.7.ecx.pks":  # KVM_GET_SUPPORTED_CPUID, leaf 7 ECX bit 31
                return int(self.cap)
            head, _, rest = name.partition(".")
            if head.startswith("pcpu") and head[4:].isdigit() and rest in ("pkrs", "loaded", "host_effective_pkrs"):
                p = self.pcpus.pcpu(int(head[4:]))
                if rest == "pkrs":
                    return p.pkrs
                if rest == "loaded":
                    return -1 if p.loaded is None else p.loaded
                eff = p.host_effective_pkrs()
                if eff is None:
                    raise KeyError(path)
                return eff
        return super().snapshot(path)


class Kvm2026Vcpu(KvmVcpu):
    """A vCPU whose physical PKRS is its pCPU's, with the 2026 base's ioctl and capability rules."""

    vm: Kvm2026Machine

    def __init__(self, vm: KvmMachine, index: int) -> None:
        self.born = False  # KvmVcpu.__init__ writes hw_pkrs: creating a vCPU does not touch a pCPU
        self.has_run = False  # kvm_vcpu_has_run(): last_vmentry_cpu != -1
        self.vmx_on = False  # L1 is in VMX operation (any VMX instruction implies its VMXON)
        self.raw_cpuid7: int | None = None
        self.nested_caps_set = False
        super().__init__(vm, index)
        self.born = True

    @property
    def hw_pkrs(self) -> int:
        return self.vm.pcpus.of(self.index).pkrs

    @hw_pkrs.setter
    def hw_pkrs(self, value: int) -> None:
        if self.born:
            self.vm.pcpus.of(self.index).pkrs = value

    # ------------------------------------------------------------------ dispatch
    def step(self, ev: Event) -> Outcome:
        if ev.kind in VMX_KINDS and ev.level != "l2":
            self.vmx_on = True
        return super().step(ev)

    def hw_entry(self) -> Outcome | None:
        self.has_run = True  # vcpu_enter_guest sets last_vmentry_cpu before the entry
        return super().hw_entry()

    def hw_exit(self) -> None:
        super().hw_exit()
        vm = self.vm
        if vm.host_kernel_pks and self.hw_pkrs != vm.host_pkrs:
            vm.host_wrong[vm.pcpus.of(self.index).index] = True

    # ------------------------------------------------------------------ KVM26.EXIT.HOSTVAL
    def host_field_value(self) -> int:
        """HOST_IA32_PKRS: the host kernel's own value if it uses PKS, else the rebase's constant."""
        if self.vm.host_kernel_pks:
            return self.vm.host_pkrs
        return PKRS_ALL_ONES if self.vm.x.exit_host_pkrs == "ones" else 0

    def prepare_switch_to_guest(self) -> None:
        cur, value = self.cur, self.host_field_value()
        if self.host.has("pks") and cur.exit_load and value != cur.host_cache:
            self.vmwrite(cur, "host", value)
            cur.host_cache = value

    def set_host_pkrs(self, ev: Event) -> Outcome:
        out = super().set_host_pkrs(ev)
        self.vm.pcpus.host_pkrs = self.vm.host_pkrs
        return out

    # ------------------------------------------------------------------ KVM26.CPUID.FROZEN
    def set_cpuid(self, ev: Event) -> Outcome:
        """KVM_SET_CPUID2: after the first KVM_RUN only an identical table is accepted (L2 or not)."""
        raw7 = ev.cpuid_7_ecx or 0
        if self.has_run:
            same1 = ev.cpuid_1_ecx is None or ev.cpuid_1_ecx == self.l1.cpuid_1_ecx
            if raw7 != self.raw_cpuid7 or not same1:
                return Outcome("einval", rules=("KVM26.CPUID.FROZEN",))
        self.raw_cpuid7 = raw7
        out = super().set_cpuid(ev)
        return Outcome(out.result, rules=(*out.rules, "KVM26.CPUID.FROZEN")) if self.has_run else out

    # ------------------------------------------------------------------ KVM26.NESTED.*
    def update_nested_caps(self) -> None:
        """L1's load-PKRS controls: set once from the sanitized vmcs_config and the cap (not per CPUID)."""
        if self.nested_caps_set:
            return
        vm = self.vm
        self.nested_entry_cap = self.k.pks_support and vm.cap and vm.hw_entry_ok
        self.nested_exit_cap = self.k.pks_support and vm.cap and vm.hw_exit_ok
        self.nested_caps_set = True

    def nested_vmx_allowed(self) -> bool:
        return self.host.has("vmx") and bool(self.l1.cpuid_1_ecx & CPUID1_ECX_VMX)

    def supported_ctls(self, which: str) -> tuple[int, int]:
        """vmcs_config.nested's (allowed-0, allowed-1) words for the true MSR of ``which``."""
        cap = self.k.pks_support and self.vm.cap and (self.vm.hw_entry_ok if which == "entry" else self.vm.hw_exit_ok)
        low = DEFAULT1[which] & ~DEBUG_CONTROLS
        return low, DEFAULT1[which] | (PKRS_CONTROL[which] if cap else 0)

    def vmx_cap_msr(self, msr: int) -> int:
        which, true = VMX_CAP_MSRS[msr]
        low, _ = self.supported_ctls(which)
        has = self.nested_entry_cap if which == "entry" else self.nested_exit_cap
        high = DEFAULT1[which] | (PKRS_CONTROL[which] if has else 0)
        if not true:
            low |= DEFAULT1[which]  # vmx_get_vmx_msr ORs the always-on bits into the non-true MSR
        return (high << 32) | low

    def restore_vmx_msr(self, msr: int, value: int) -> bool:
        """vmx_set_vmx_msr: EBUSY in VMX operation, EINVAL for 0x483/0x484 or a non-subset value."""
        if self.vmx_on:
            return False
        which, true = VMX_CAP_MSRS[msr]
        if not true:
            return False
        sup_low, sup_high = self.supported_ctls(which)
        low, high = value & LOW32, value >> 32
        if sup_low & ~low or high & ~sup_high:
            return False
        if which == "entry":
            self.nested_entry_cap = bool(high & PKRS_CONTROL[which])
        else:
            self.nested_exit_cap = bool(high & PKRS_CONTROL[which])
        return True

    def host_get_msr(self, msr: int) -> int | None:
        if msr in VMX_CAP_MSRS:
            return self.vmx_cap_msr(msr) if self.nested_vmx_allowed() else None
        return super().host_get_msr(msr)

    def host_set_msr(self, msr: int, value: int) -> bool:
        if msr in VMX_CAP_MSRS:
            return self.nested_vmx_allowed() and self.restore_vmx_msr(msr, value)
        return super().host_set_msr(msr, value)

    def set_msrs(self, ev: Event) -> Outcome:
        out = super().set_msrs(ev)
        if any(m in VMX_CAP_MSRS for m in ev.msrs or ()):
            return Outcome(out.result, count=out.count, rules=(*out.rules, "KVM26.NESTED.CAPMSR"))
        return out

    def get_msrs(self, ev: Event) -> Outcome:
        out = super().get_msrs(ev)
        if any(m in VMX_CAP_MSRS for m in ev.msrs or ()):
            return Outcome(out.result, count=out.count, values=out.values, rules=(*out.rules, "KVM26.NESTED.CAPMSR"))
        return out

    def set_nested_state(self, ev: Event) -> Outcome:
        out = super().set_nested_state(ev)
        if out.result == "ok":
            self.vmx_on = True  # the restored state has VMXON done
        return out

    def vcpu_reset(self, init: bool) -> Outcome:
        if not init:
            self.vmx_on = False
        return super().vcpu_reset(init)

    # ------------------------------------------------------------------ KVM26.MSR.LIST
    def get_msr_index_list(self, ev: Event) -> Outcome:
        """msrs_to_save: the host RDMSR of 0x6E1 must work and kvm_cpu_cap_has(PKS) must hold."""
        listed = self.k.pks_support and self.host.has("pks") and self.vm.cap
        return Outcome("ok", value=int(listed), rules=("KVM26.MSR.LIST",))
