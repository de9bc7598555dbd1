"""Policy ``hw``: the bare CPU (SPEC §1), with L1 as a hypervisor on real VMX (SPEC §2).

This is what every KVM version is compared against when a trace states the architecture: one
physical PKRS register, shared by L1 and the L2 it runs, saved and loaded only by the VMCS
rules (VMX.*).  Host ioctls other than the CPUID choice have no meaning here (X86.NA).
"""

from __future__ import annotations

from collections.abc import Iterator

from . import vmx
from .cpu import Cpu
from .events import Event, Outcome, gp, unsupported
from .host import DEFAULT_HOST, HostCpu
from .machine import Machine, snapshot_target
from .registers import EXIT_REASON_INIT_SIGNAL, MSR_IA32_PKRS
from .restore import Restorable
from .vmcs12 import VMX_ERROR_UNSUPPORTED_FIELD, Vmcs12
from .vmx import LOW32

EXIT_REASON_MSR_READ = 31
EXIT_REASON_MSR_WRITE = 32


class HwVcpu(Restorable):
    """One logical processor: L1's and L2's registers, L1's VMCS, the one physical PKRS."""

    def __init__(self, machine: HwMachine, index: int = 0) -> None:
        self.host = machine.host
        self.index = index
        self.wait_for_sipi = False  # an AP (index != 0) after INIT, until a SIPI (X86.SIPI)
        self.l1 = Cpu(machine.address_space("l1"))
        self.l2 = Cpu(machine.address_space("l2"))
        self.vmcs = Vmcs12()
        self.guest_mode = False
        self.l1_msr_intercept = 3
        self.in_smm = False
        self.smm_from_l2 = False

    @property
    def active(self) -> Cpu:
        return self.l2 if self.guest_mode and not self.in_smm else self.l1

    def step(self, ev: Event) -> Outcome:
        kind = ev.kind
        if kind == "set_cpuid":
            self.l2.set_cpuid(ev)
            return self.l1.set_cpuid(ev)
        if ev.level == "host" and kind not in ("reset", "init", "sipi"):
            return unsupported(kind)
        if kind == "sipi":  # starts an AP waiting for SIPI; ignored otherwise (PKRS as INIT left it)
            self.wait_for_sipi = False
            return Outcome("ok", rules=("X86.SIPI",))
        if self.wait_for_sipi and kind not in ("reset", "init"):
            return Outcome("hang", rules=("X86.SIPI",))
        if kind == "init" and self.in_smm:
            return Outcome("ok", rules=("X86.SMM",))  # INIT is blocked (held pending) in SMM
        if kind == "init" and self.guest_mode:
            # In VMX non-root operation INIT is a VM exit, not a reset (SDM 25.2: exit reason 3).
            self.vmexit()
            return Outcome("vmexit", exit_reason=EXIT_REASON_INIT_SIGNAL,
                           rules=("VMX.EXIT.SAVE", "VMX.EXIT.LOAD", "X86.INIT.VMX"))
        if kind in ("reset", "init"):
            self.guest_mode = self.in_smm = self.smm_from_l2 = False
            self.l1.smram = None
            self.wait_for_sipi = kind == "init" and self.index != 0  # the BSP runs on after INIT
            return self.l1.handlers[kind](ev)
        if kind == "rsm":
            return self.rsm(ev.level)
        if ev.level == "l2":
            if not self.guest_mode or self.in_smm:
                return unsupported(kind)
            return self.l2_step(ev)
        if self.guest_mode and not self.in_smm:
            return unsupported(kind)
        return self.l1_step(ev)

    # -- L1: the hypervisor on bare VMX -------------------------------------------------
    def l1_step(self, ev: Event) -> Outcome:
        kind = ev.kind
        if kind == "vmwrite":
            ok = self.vmcs.write(ev.field or 0, ev.value or 0)
            return Outcome("ok", rules=("VMX.FIELD",)) if ok else self.bad_field()
        if kind == "vmread":
            value = self.vmcs.read(ev.field or 0)
            return Outcome("ok", value=value, rules=("VMX.FIELD",)) if value is not None else self.bad_field()
        if kind == "set_msr_bitmap":
            if ev.msr == MSR_IA32_PKRS:
                self.l1_msr_intercept = (ev.value or 0) & 3
            return Outcome("ok", rules=())
        if kind in ("vmlaunch", "vmresume"):
            return self.vmentry()
        if kind == "smi":
            return self.smi(from_l2=False)
        handler = self.l1.handlers.get(kind)
        return handler(ev) if handler else unsupported(kind)

    @staticmethod
    def bad_field() -> Outcome:
        return Outcome("vmfail", vm_error=VMX_ERROR_UNSUPPORTED_FIELD, rules=("VMX.FIELD",))

    def vmentry(self) -> Outcome:
        """VMLAUNCH/VMRESUME: VMX.CTL, VMX.ENTRY.CHK.HOST, VMX.ENTRY.CHK.GUEST, VMX.ENTRY.LOAD."""
        v = self.vmcs
        failed = (vmx.check_controls(v, self.host.has("vmx_entry_load_pkrs"), self.host.has("vmx_exit_load_pkrs"))
                  or vmx.check_host_state(v))
        if failed is not None:
            return failed
        failed = vmx.check_guest_state(v)
        if failed is not None:
            # A failed entry loads host state as a VM exit would.
            if v.exit_load:
                self.l1.pkrs = v.host_pkrs & LOW32
            return failed
        self.l2.cpuid_7_ecx = self.l1.cpuid_7_ecx
        self.l2.pkrs = v.guest_pkrs & LOW32 if v.entry_load else self.l1.pkrs
        self.guest_mode = True
        return Outcome("ok", rules=("VMX.ENTRY.LOAD",))

    def vmexit(self) -> None:
        """VMX.EXIT.SAVE then VMX.EXIT.LOAD; without the exit control L1 keeps L2's PKRS (D5)."""
        if self.host.has("vmx_entry_load_pkrs"):
            self.vmcs.guest_pkrs = self.l2.pkrs
        self.l1.pkrs = self.vmcs.host_pkrs & LOW32 if self.vmcs.exit_load else self.l2.pkrs
        self.guest_mode = False

    def smi(self, from_l2: bool) -> Outcome:
        """SMI (default treatment, SDM 34.14.1): no VM exit and no PKRS change; SMM runs on the l1
        registers (saved in SMRAM and restored by RSM) with CR0.PG and CR4 cleared, so PKS is off."""
        if self.in_smm:
            return Outcome("ok", rules=("X86.SMM",))  # SMIs are blocked in SMM (latched)
        if from_l2:
            self.l1.pkrs = self.l2.pkrs  # entering SMM changes no PKRS state (B18's expectation)
        self.l1.enter_smm()
        self.in_smm = True
        self.smm_from_l2 = from_l2
        return Outcome("ok", rules=("X86.SMM",))

    def rsm(self, level: str) -> Outcome:
        """RSM, at the level that took the SMI: restore the saved registers and go back there.

        PKRS is not part of the SMRAM state, so the value the SMM handler left carries to that level.
        """
        if not self.in_smm:
            return Outcome("ud", rules=("X86.SMM",))
        if level != ("l2" if self.smm_from_l2 else "l1"):
            return unsupported("rsm")
        self.l1.leave_smm()
        self.in_smm = False
        if self.smm_from_l2:
            self.smm_from_l2 = False
            self.l2.pkrs = self.l1.pkrs
        return Outcome("ok", rules=("X86.SMM",))

    # -- L2: a guest on real VMX --------------------------------------------------------
    def l2_step(self, ev: Event) -> Outcome:
        kind = ev.kind
        if kind in ("rdmsr", "wrmsr") and ev.msr == MSR_IA32_PKRS:
            if (ev.cpl or 0) > 0:
                return gp("ARCH.MSR.CPL")
            write = kind == "wrmsr"
            if self.l1_msr_intercept & (2 if write else 1):
                self.vmexit()
                return Outcome("vmexit", exit_reason=EXIT_REASON_MSR_WRITE if write else EXIT_REASON_MSR_READ,
                               rules=("VMX.EXIT.SAVE", "VMX.EXIT.LOAD"))
        if kind == "nested_exit":
            self.vmexit()
            return Outcome("ok", rules=("VMX.EXIT.SAVE", "VMX.EXIT.LOAD"))
        if kind == "smi":
            return self.smi(from_l2=True)
        handler = self.l2.handlers.get(kind)
        return handler(ev) if handler else unsupported(kind)

    def snapshot(self, name: str) -> int:
        head, _, rest = name.partition(".")
        if head == "vmcs12":
            v = self.vmcs
            return {"guest_ia32_pkrs": v.guest_pkrs, "host_ia32_pkrs": v.host_pkrs,
                    "entry_ctls.load_pkrs": int(v.entry_load), "exit_ctls.load_pkrs": int(v.exit_load)}[rest]
        if head == "l2":
            return self.l2.snapshot(rest)
        if name in ("pkrs", "hw_pkrs"):
            return self.active.pkrs
        if name == "nested.guest_mode":
            return int(self.guest_mode)
        return self.l1.snapshot(name)


class HwMachine(Machine):
    """Policy ``hw``: the architecture alone (SPEC §1, §2)."""

    name = "hw"

    def __init__(self, host: HostCpu = DEFAULT_HOST) -> None:
        super().__init__(host)
        self.hw_vcpus: dict[int, HwVcpu] = {}

    def hw_vcpu(self, index: int) -> HwVcpu:
        v = self.hw_vcpus.get(index)
        if v is None:
            v = self.hw_vcpus[index] = HwVcpu(self, index)
        return v

    def step(self, ev: Event) -> Outcome:
        return self.hw_vcpu(ev.vcpu).step(ev)

    def vcpu_ids(self) -> list[int]:
        return list(self.hw_vcpus)

    def cpus(self) -> Iterator[tuple[tuple[int, str], Cpu]]:
        for i, v in self.hw_vcpus.items():
            yield (i, "l1"), v.l1
            yield (i, "l2"), v.l2

    def cpu_at(self, vcpu: int, level: str) -> Cpu | None:
        v = self.hw_vcpus.get(vcpu)
        return None if v is None else (v.l2 if level == "l2" else v.l1)

    def access_cpu(self, vcpu: int, level: str) -> Cpu | None:
        v = self.hw_vcpus.get(vcpu)
        if v is None or v.wait_for_sipi:  # waiting for SIPI: the access hangs (X86.SIPI), it is stepped
            return None
        if level == "l2":  # HwVcpu.step: L2 runs only in guest mode outside SMM (l2_step passes accesses to L2's CPU)
            return v.l2 if v.guest_mode and not v.in_smm else None
        return v.l1 if not v.guest_mode or v.in_smm else None

    def observe(self, vcpu: int) -> tuple[int | None, ...]:
        """(effective PKRS, None): a bare CPU has no host to exit to."""
        return (self.hw_vcpu(vcpu).active.pkrs, None)

    def snapshot(self, path: str) -> int:
        target = snapshot_target(path)
        if target is None or target[0] is None:
            raise KeyError(path)
        return self.hw_vcpu(target[0]).snapshot(target[1])
