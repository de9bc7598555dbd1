"""PVM's own PKS (PVM.*): the pagetable-based KVM backend that runs guests at hardware CPL 3.

Source: virt-pvm/linux ``Documentation/virt/kvm/x86/pvm-spec.rst`` ("CPUID leaf", "Paging",
"Protection Keys", "RDPKRU/WRPKRU", "PVM events").  A third PKS semantics beside the SDM's and
QEMU's: guest user and supervisor pages are both hardware user pages, so

- keys ignore the U/S bit: with the *underlying* (hardware) CR4.PKE, every data access of the
  guest is checked against its key in the underlying PKRU, in both modes (PVM.KEY, PVM.PKRU);
- the switcher swaps that PKRU on every user/supervisor switch: user -> supervisor saves it to
  ``PVCS::pkru`` and loads 0, or the hypervisor's IA32_PKRS if CR4.PKS; supervisor -> user loads
  ``PVCS::pkru`` (PVM.SWITCH); nothing happens without the underlying CR4.PKE;
- the guest's IA32_PKRS, as its supervisor sees it, is the underlying PKRU masked to the keys it
  keeps for supervisor pages (PVM.PKRS); RDPKRU/WRPKRU in supervisor mode reach the underlying PKRU;
- CR4.PKS needs CR4.PKE, which needs the underlying CR4.PKE (PVM.CR4.PKS, PVM.CR4.PKE); CPUID
  offers PKS only when the host's CR4.PKE is set (PVM.CPUID);
- PVM offers no VMX to its guests (PVM.NOVMX).

Host ioctls are upstream KVM's as the PVM backend runs them (``upstream-pvm``).  A trace's CPL
sequence stands for PVM's mode switches: an event at CPL 3 after one at CPL 0-2 is a switch to
user mode (EVENT_RETURN_USER), the reverse an event or syscall into supervisor mode.

Where the spec is silent (see docs/hypervisors.md): a WRMSR to IA32_PKRS takes effect at the next
user -> supervisor switch (the spec recommends setting it "before returning to the user mode so
that after the next switchback" it applies); on a host without PKU RDPKRU keeps this host's
recorded behaviour (HOST.PVM.RDPKRU).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .events import Event, Outcome, gp
from .host import HostCpu
from .kvm import GuestCpu, KvmMachine, KvmVcpu
from .paging import WRITE_ACCESSES, check_access
from .pkeys import denies
from .pkrs import pkrs_value_valid
from .registers import (
    CPUID7_ECX_PKS,
    CPUID7_ECX_PKU,
    CR0_PG,
    CR4_KNOWN,
    CR4_PKE,
    CR4_PKS,
    CR4_SMAP,
    EFER_LMA,
    PF_P,
    PF_PK,
    PF_RSVD,
    PF_U,
    PF_W,
)

NESTED_KINDS = frozenset({"vmwrite", "vmread", "set_msr_bitmap", "vmlaunch", "vmresume", "nested_exit",
                          "get_nested_state", "set_nested_state", "smi", "rsm"})
# A mode-changing guest event: it carries the CPL it runs at.
CPL_KINDS = frozenset({"access", "emu_access", "wrmsr", "rdmsr", "mov_cr0", "mov_cr3", "mov_cr4"})


def underlying_pke(host: HostCpu) -> bool:
    """The hardware CR4.PKE under the guest: the host kernel sets it iff the CPU has PKU."""
    return host.has("pku")


class PvmCpu(GuestCpu):
    """A PVM guest's registers plus the underlying PKRU, ``PVCS::pkru`` and the current mode."""

    def __init__(self, owner: KvmVcpu, level: str) -> None:
        super().__init__(owner, level)
        self.underlying_pkru = 0
        self.pvcs_pkru = 0  # the user PKRU saved while in supervisor mode
        self.user_mode = False

    # -- PVM.CR4.* ------------------------------------------------------------------------
    def cr4_reserved(self, value: int) -> str | None:
        if value & ~CR4_KNOWN:
            return "X86.CR4.RSVD"
        if value & CR4_SMAP:
            return "X86.CR4.RSVD"  # "SMAP is disabled and CR4.SMAP can not be set"
        if value & CR4_PKE and not underlying_pke(self.owner.host):
            return "PVM.CR4.PKE"
        if value & CR4_PKS and not (value & CR4_PKE and self.has_pks):
            return "PVM.CR4.PKS"
        return None

    # -- PVM.SWITCH -------------------------------------------------------------------------
    def switch_mode(self, cpl: int) -> None:
        """The switcher's PKRU swap on a user/supervisor switch (only with the underlying CR4.PKE)."""
        user = cpl == 3
        if user == self.user_mode:
            return
        self.user_mode = user
        self.owner.vm.count("pvm.switch")
        if not underlying_pke(self.owner.host):
            return
        if user:
            self.underlying_pkru = self.pvcs_pkru
        else:
            self.pvcs_pkru = self.underlying_pkru
            self.underlying_pkru = self.pkrs if self.cr4 & CR4_PKS else 0

    @property
    def effective_pkru(self) -> int:
        """The guest's user PKRU: the underlying register in user mode, PVCS::pkru in supervisor mode."""
        return self.underlying_pkru if self.user_mode else self.pvcs_pkru

    # -- PVM.KEY, PVM.PKRU --------------------------------------------------------------------
    def access(self, ev: Event) -> Outcome:
        """The architecture's paging checks without keys, then PVM's key check on every data access."""
        addr, kind, cpl = ev.addr or 0, ev.access or "read", ev.cpl or 0
        m = self.pages.lookup(addr)
        out = check_access(m, addr, kind, cpl, self.cr0, self.cr4 & ~(CR4_PKE | CR4_PKS), self.efer, 0, 0)
        rules = tuple(r for r in out.rules if r not in ("ARCH.CHK.REG", "ARCH.CHK.DATA", "ARCH.CR4.EFFECT"))
        pfec = out.pfec or 0
        terminal = out.result == "pf" and (not pfec & PF_P or pfec & PF_RSVD)
        if (m is None or terminal or not self.cr0 & CR0_PG or not self.efer & EFER_LMA or kind == "fetch"
                or not underlying_pke(self.owner.host)):
            return Outcome(out.result, pfec=out.pfec, cr2=out.cr2, rules=(*rules, "PVM.KEY"))
        rules = (*rules, "PVM.KEY", "PVM.PKRU")
        # the guest runs at hardware CPL 3 with CR0.WP=1: WD denies every write, whatever the U/S bit
        write = kind in WRITE_ACCESSES
        if not denies(self.underlying_pkru, m.key, write, True, True):
            return Outcome(out.result, pfec=out.pfec, cr2=out.cr2, rules=rules)
        if out.result != "pf":
            user = cpl == 3 and kind not in ("implicit", "implicit_write")
            pfec = (PF_W if write else 0) | (PF_U if user else 0)
        return Outcome("pf", pfec=pfec | PF_P | PF_PK, cr2=addr, rules=rules)

    # -- PVM.PKRS: the MSR and RDPKRU/WRPKRU --------------------------------------------------
    def pkrs_msr(self, ev: Event) -> Outcome:
        if (ev.cpl or 0) > 0:
            return gp("ARCH.MSR.CPL")
        if not self.has_pks:
            return gp("PVM.CPUID")
        if ev.kind == "rdmsr":
            return Outcome("ok", value=self.pkrs, rules=("PVM.PKRS",))
        value = ev.value or 0
        if not pkrs_value_valid(value):
            return gp("ARCH.MSR.RSVD")
        self.pkrs = value  # the hypervisor's view; loaded into the underlying PKRU at the next switch
        return Outcome("ok", rules=("PVM.SWITCH", "PVM.PKRS"))

    def wrpkru(self, ev: Event) -> Outcome:
        if not underlying_pke(self.owner.host):
            return Outcome("ud", rules=("X86.PKRU", "PVM.CR4.PKE"))
        value = ev.value or 0
        if value >> 32:
            return gp("X86.PKRU")
        self.underlying_pkru = value
        return Outcome("ok", rules=("X86.PKRU", "PVM.PKRU" if self.user_mode else "PVM.PKRS"))

    def rdpkru(self, ev: Event) -> Outcome:
        if not underlying_pke(self.owner.host):
            return Outcome("ud", rules=("X86.PKRU", "PVM.CR4.PKE"))
        return Outcome("ok", value=self.underlying_pkru, rules=("X86.PKRU", "PVM.PKRU" if self.user_mode else "PVM.PKRS"))

    def pkrs_for_access(self) -> int:
        return self.pkrs

    def snapshot(self, name: str) -> int:
        if name == "pkru":
            return self.effective_pkru
        if name == "pvm.underlying_pkru":
            return self.underlying_pkru
        if name == "pvm.pkrs_view":
            return self.underlying_pkru & self.owner.k.pvm_supervisor_keys
        return super().snapshot(name)


class PvmVcpu(KvmVcpu):
    """A vCPU on the PVM backend: upstream KVM's ioctls, PVM's CPU (PvmCpu) for the guest."""

    def __init__(self, vm: KvmMachine, index: int) -> None:
        super().__init__(vm, index)
        self.l1 = PvmCpu(self, "l1")
        self.l2 = PvmCpu(self, "l2")
        self.mmu = {"l1": (None, 0), "l2": (None, 0)}
        self.update_mmu(self.l1)

    def step(self, ev: Event) -> Outcome:
        if ev.kind in NESTED_KINDS or ev.level == "l2":
            return Outcome("unsupported", rules=("X86.NA", "PVM.NOVMX"))
        if ev.level != "host" and ev.kind in CPL_KINDS:
            cpu = self.l1
            assert isinstance(cpu, PvmCpu)
            cpu.switch_mode(ev.cpl or 0)
        if ev.kind in ("wrpkru", "rdpkru") and underlying_pke(self.host):
            failed = self.enter()  # the hardware runs them at CPL 3 with the underlying CR4.PKE
            return failed or self.l1.handlers[ev.kind](ev)
        out = super().step(ev)
        if ev.kind == "cpuid" and ev.cpuid_leaf == 7:
            out.rules = (*out.rules, "PVM.CPUID")  # leaf 7 as PVM left it
        return out

    def set_cpuid(self, ev: Event) -> Outcome:
        """PVM.CPUID: PKS and PKU survive only on a host whose CR4.PKE is set."""
        ecx7 = ev.cpuid_7_ecx or 0
        if not underlying_pke(self.host):
            ecx7 &= ~(CPUID7_ECX_PKS | CPUID7_ECX_PKU)
        out = super().set_cpuid(Event("set_cpuid", vcpu=ev.vcpu, level=ev.level, seq=ev.seq,
                                      cpuid_7_ecx=ecx7, cpuid_1_ecx=ev.cpuid_1_ecx))
        out.rules = (*out.rules, "PVM.CPUID")
        return out

    def guest_pkrs_access(self, ev: Event, cpu: GuestCpu, level: str) -> Outcome:
        """IA32_PKRS is the hypervisor's register (PVM.PKRS), emulated on every access."""
        assert isinstance(cpu, PvmCpu)
        if not cpu.has_pks and (ev.cpl or 0) == 0:
            # not enumerated: the backend has no such MSR, KVM's unknown-MSR path (#GP or a userspace exit)
            out = self.guest_other_msr(ev, cpu)
            out.rules = (*out.rules, "PVM.CPUID")
            return out
        self.vm.count("exit.msr_intercept")
        return cpu.pkrs_msr(ev)

    def effective_pkrs(self) -> int:
        return self.l1.pkrs

    def emulated_access(self, ev: Event, cpu: GuestCpu, level: str) -> Outcome:
        """PVM emulates with its own key semantics (PVM.KEY): no KVM pkr_mask is involved."""
        return cpu.access(ev)

    def snapshot(self, name: str) -> int:
        """Architectural state and PVM's own; the KVM series' VMX state (VMCS, bitmap, MMU role) has no PVM meaning."""
        head = name.partition(".")[0]
        if name in ("pkrs", "cpuid.7.ecx") or head == "pvm" or name in ("pkru", "cr0", "cr3", "cr4", "efer"):
            return super().snapshot(name)
        raise KeyError(name)


class PvmMachine(KvmMachine):
    """A VM on the PVM backend."""

    name = "pvm"

    def __init__(self, knobs: Mapping[str, Any], host: HostCpu) -> None:
        super().__init__(knobs, host)
        self.vcpu_class = PvmVcpu
