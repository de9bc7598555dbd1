"""KVM with the PKS series on a VMX host (SPEC §2-§3), every version a set of knobs.

One :class:`KvmVcpu` per vCPU holds what the series touches: the guest's architectural
registers per level (L1, L2), the physical PKRS of the CPU it runs on, vmcs01/vmcs02 with their
PKRS fields, controls and host-field cache, the MSR bitmap, the software PKRS copy, the MMU role
and cached ``pkr_mask``, and the nested state (vmcs12, vmcs01_guest_pkrs, run_pending).  The
event semantics, implicit entries/exits and snapshot paths are documented in
``docs/kvm-model.md``; each decision below cites the SPEC rule it implements.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from . import vmx
from .cpu import Cpu
from .events import Event, Outcome, gp, kinds_where, unsupported
from .host import HostCpu
from .kvm_knobs import KvmKnobs
from .machine import Machine, snapshot_target
from .mmu import MmuRole, build_pkr_mask, pkr_bits, role_of
from .msr_filter import MsrFilter, UserMsrExits
from .paging import WRITE_ACCESSES, check_access
from .pkrs import pkrs_value_valid
from .registers import (
    COUNTER_MSRS,
    CPUID7_ECX_PKS,
    CPUID7_ECX_PKU,
    CR0_PE,
    CR0_PG,
    CR4_KNOWN,
    CR4_PAE,
    CR4_PKE,
    CR4_PKS,
    CR4_SMAP,
    CR4_SMEP,
    EFER_LMA,
    EFER_LME,
    EXIT_REASON_INIT_SIGNAL,
    MSR_EXIT_FILTER,
    MSR_EXIT_INVAL,
    MSR_EXIT_UNKNOWN,
    MSR_IA32_PKRS,
    PF_P,
    PF_PK,
    PF_RSVD,
    PF_U,
    PF_W,
    PLAIN_MSRS,
    VMCS_GUEST_IA32_PKRS,
    VMCS_GUEST_IA32_PKRS_HIGH,
)
from .restore import Restorable, restore
from .vmcs12 import FIELD_NAMES, LAYOUTS, PKRS_FIELDS, VMX_ERROR_UNSUPPORTED_FIELD, Vmcs12
from .vmx import LOW32, Vmcs, check_guest_state, check_host_state, entry_load, exit_save_load

EXIT_REASON_MSR_READ = 31
EXIT_REASON_MSR_WRITE = 32
# Guest events that always exit to KVM: CR0/CR4 writes (KVM owns CR4.PKS), CPUID, MSRs other
# than a passed-through 0x6E1, KVM's own page walks, and RDPKRU on a host that emulates it.
KVM_HANDLED = frozenset({"mov_cr0", "mov_cr4", "cpuid", "wrmsr", "rdmsr", "emu_access"})
HOST_KINDS = kinds_where("host_handled")  # dispatched host-side whatever guest level is active
# What a vCPU waiting for SIPI (X86.SIPI) still answers: the signals, and host ioctls other than KVM_RUN.
WAKING_KINDS = (HOST_KINDS - {"run"}) | {"sipi"}
# Nested-VMX events by level: the KvmVcpu method that handles each (KvmVcpu.nested_handler).
L1_NESTED = {"vmwrite": "l1_vmwrite", "vmread": "l1_vmread", "vmlaunch": "l1_vmlaunch", "vmresume": "l1_vmlaunch",
             "set_msr_bitmap": "l1_set_msr_bitmap", "smi": "smi"}
L2_NESTED = {"nested_exit": "l2_nested_exit", "smi": "smi"}
NESTED_KINDS = frozenset(L1_NESTED) | frozenset(L2_NESTED)


@dataclass
class NestedBlob(Restorable):
    """What KVM_GET_NESTED_STATE returned: vmcs12 and the flags."""

    vmcs12: Vmcs12
    guest_mode: bool
    run_pending: bool


class GuestCpu(Cpu):
    """A guest level's architectural registers, with KVM's checks and side effects hooked in."""

    def __init__(self, owner: KvmVcpu, level: str) -> None:
        super().__init__(owner.vm.address_space(level))
        self.owner = owner
        self.level = level
        self.hw_cr4 = 0
        if owner.k.pdptr_reload_on_pks:
            self.pdptr_bits = Cpu.pdptr_bits | CR4_PKS  # RFC v1, B1

    def cr4_reserved(self, value: int) -> str | None:
        """KVM.CR4.RSVD: PKS is reserved unless the guest CPUID has PKS and KVM has the cap."""
        if value & CR4_PKS and not (self.has_pks and self.owner.vm.cap):
            return "KVM.CR4.RSVD"
        if value & ~CR4_KNOWN:
            return "X86.CR4.RSVD"
        if value & CR4_PKE and self.owner.k.cr4_pke_needs_pku and not (self.has_pku and self.owner.host.has("pku")):
            return "X86.CR4.RSVD"
        return None

    def after_cr_write(self, old_cr4: int) -> None:
        self.owner.vmx_set_cr4(self, old_cr4)
        self.owner.update_mmu(self)

    def after_efer_write(self) -> None:
        """vmx_set_efer and kvm_mmu_reset_context: only CR0/CR4 writes (and their callers,
        ept_update_paging_mode_cr0) run vmx_set_cr4 (sources/kvm_pks_series.md §3.4)."""
        self.owner.update_mmu(self)

    def pkrs_for_access(self) -> int:
        """Hardware checks guest accesses against the physical PKRS."""
        return self.owner.hw_pkrs


class KvmMachine(Machine):
    """A VM on one host: vCPUs plus the VM-wide MSR filter, userspace-exit mask and host PKRS."""

    name = "kvm"

    def __init__(self, knobs: Mapping[str, Any], host: HostCpu) -> None:
        super().__init__(host)
        self.k = KvmKnobs.from_mapping(knobs)
        self.filter = MsrFilter()
        self.filter_active = False
        self.user_exits = UserMsrExits()
        self.host_pkrs = 0  # the host kernel's own PKRS (pkrs_cache)
        self.warnings = 0  # kernel WARNs (a VMREAD of a field the CPU lacks)
        self.nested_blobs: dict[int, NestedBlob] = {}
        self.kvm_vcpus: dict[int, KvmVcpu] = {}
        self.vcpu_class: type[KvmVcpu] = KvmVcpu
        k, h = self.k, host
        # KVM.CAP (and D2: v6/v7 do not really require the controls)
        self.cap = k.pks_support and h.has("ept") and h.has("pks") and (
            not k.cap_requires_ctls or (h.has("vmx_entry_load_pkrs") and h.has("vmx_exit_load_pkrs")))
        pair_ok = h.has("vmx_entry_load_pkrs") and h.has("vmx_exit_load_pkrs")
        self.entry_ctl_usable = h.has("vmx_entry_load_pkrs") and (pair_ok or not k.pair_controls)
        self.exit_ctl_usable = h.has("vmx_exit_load_pkrs") and (pair_ok or not k.pair_controls)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def kvm_vcpu(self, index: int) -> KvmVcpu:
        v = self.kvm_vcpus.get(index)
        if v is None:
            v = self.kvm_vcpus[index] = self.vcpu_class(self, index)
        return v

    def step(self, ev: Event) -> Outcome:
        v = self.kvm_vcpus.get(ev.vcpu)  # (kvm_vcpu, inlined: this runs once per event)
        return (v if v is not None else self.kvm_vcpu(ev.vcpu)).step(ev)

    def vcpu_ids(self) -> list[int]:
        return list(self.kvm_vcpus)

    def cpus(self) -> Iterator[tuple[tuple[int, str], Cpu]]:
        for i, v in self.kvm_vcpus.items():
            yield (i, "l1"), v.l1
            yield (i, "l2"), v.l2

    def cpu_at(self, vcpu: int, level: str) -> Cpu | None:
        v = self.kvm_vcpus.get(vcpu)
        return None if v is None else (v.l2 if level == "l2" else v.l1)

    def access_cpu(self, vcpu: int, level: str) -> Cpu | None:
        v = self.kvm_vcpus.get(vcpu)
        return None if v is None else v.access_cpu(level)

    def observe(self, vcpu: int) -> tuple[int | None, ...]:
        """The observable PKRS state of a vCPU: (guest's effective PKRS, host's PKRS after the last exit)."""
        v = self.kvm_vcpu(vcpu)
        return (v.effective_pkrs(), v.exit_pkrs)

    def snapshot(self, path: str) -> int:
        target = snapshot_target(path)
        if target is None:
            raise KeyError(path)
        vcpu, name = target
        if vcpu is None:
            if name == "pkrs":
                return self.host_pkrs
            if name == "warnings":
                return self.warnings
            if name.startswith("counter."):
                return self.counters.get(name[len("counter."):], 0)
            raise KeyError(path)
        v = self.kvm_vcpus.get(vcpu)
        return (v if v is not None else self.kvm_vcpu(vcpu)).snapshot(name)


class KvmVcpu(Restorable):
    """One vCPU as KVM (with the knobs' version of the series) runs it."""

    def host_set_msr_gate(self, msr: int, value: int) -> str | None:
        """A refusal rule for a host MSR write before KVM handles it (pKVM overrides), or None."""
        return None

    def __init__(self, vm: KvmMachine, index: int) -> None:
        self.vm = vm
        self.k = vm.k
        self.host = vm.host
        self.index = index
        self.l1 = GuestCpu(self, "l1")
        self.l2 = GuestCpu(self, "l2")
        self.vmcs01 = Vmcs("vmcs01")
        self.vmcs02 = Vmcs("vmcs02")
        self.cur = self.vmcs01
        if self.k.ctl_initial_on or self.k.ctl_policy == "always":  # P2
            self.vmcs01.entry_load = vm.entry_ctl_usable
            self.vmcs01.exit_load = vm.exit_ctl_usable
        self.hw_pkrs = vm.host_pkrs
        self.exit_pkrs = vm.host_pkrs  # what the host ran with right after the last VM exit
        self.copy = 0
        self.copy_avail = False
        self.want_passthrough = False
        self.intercept_r = True
        self.intercept_w = True
        self.in_guest = False
        self.loaded = False
        self.mmu: dict[str, tuple[MmuRole | None, int]] = {"l1": (None, 0), "l2": (None, 0)}
        # nested
        self.vmcs12 = Vmcs12()
        self.guest_mode = False
        self.run_pending = False
        self.vmcs01_guest_pkrs = 0
        self.l1_msr_intercept = 3  # L1's MSR bitmap for L2 (bit 0 read, bit 1 write): all exit
        self.need_sync_rare = False
        self.vmcs12_dirty = True
        self.nested_entry_cap = False
        self.nested_exit_cap = False
        self.in_smm = False
        self.smm_from_l2 = False
        self.wait_for_sipi = False  # kvm_apic_accept_events: an AP after INIT is INIT_RECEIVED
        self.pvm_ran = False
        self.update_nested_caps()
        self.update_mmu(self.l1)
        self.update_mmu(self.l2)
        self.bind_handlers()

    def bind_handlers(self) -> None:
        """The host-ioctl table, bound to this object (rebuilt on unpickling: lambdas are not state)."""
        self.host_handlers: dict[str, Callable[[Event], Outcome]] = {
            "create_vcpu": lambda ev: Outcome("ok", rules=()),
            "set_cpuid": self.set_cpuid,
            "get_cpuid": lambda ev: Outcome("ok", value=self.l1.cpuid_7_ecx, rules=("ARCH.CPUID",)),
            "get_msr_index_list": self.get_msr_index_list,
            "set_msrs": self.set_msrs,
            "get_msrs": self.get_msrs,
            "set_sregs": self.set_sregs,
            "get_sregs": self.get_sregs,
            "set_msr_filter": self.set_msr_filter,
            "enable_user_msr": self.enable_user_msr,
            "get_nested_state": self.get_nested_state,
            "set_nested_state": self.set_nested_state,
            "run": self.run,
            "host_pkrs": self.set_host_pkrs,
            # before 2026 every vCPU has a CPU of its own (kvm2026.py models shared pCPUs): the
            # exit and unload above are all a put does, and a vCPU can only be loaded on its own CPU
            "vcpu_put": lambda ev: Outcome("ok", rules=("KVM26.PCPU",)),
            "vcpu_load": lambda ev: Outcome("ok", rules=("KVM26.PCPU",)) if ev.value == self.index
            else unsupported(ev.kind),
            "reset": lambda ev: self.vcpu_reset(init=False),
            "init": self.init_signal,
            "sipi": self.sipi,
            "pvm_start": self.pvm_start,
            # Without pKVM the host performs the operation itself (kvm_x86_ops), always allowed; pkvm.py
            # overrides with is_guest_vcpu_accessible()
            "pv_call": lambda ev: Outcome("ok", rules=()),
        }

    def __getstate__(self) -> dict[str, object]:
        """Pickled state: every attribute but the handler table."""
        state = dict(self.__dict__)
        del state["host_handlers"]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        restore(self, state)
        self.bind_handlers()

    # ------------------------------------------------------------------ VMCS accessors
    def vmread(self, vmcs: Vmcs, which: str) -> int:
        """VMREAD of a PKRS field; without PKS on the CPU the field does not exist (WARN, 0)."""
        name = "GUEST_IA32_PKRS" if which == "guest" else "HOST_IA32_PKRS"
        if not self.host.has("pks"):
            self.vm.count(f"vmread_invalid.{name}")
            self.vm.warnings += 1
            return 0
        self.vm.count("vmread.GUEST_IA32_PKRS" if which == "guest" else "vmread.HOST_IA32_PKRS")
        return vmcs.guest_pkrs if which == "guest" else vmcs.host_pkrs

    def vmwrite(self, vmcs: Vmcs, which: str, value: int) -> None:
        name = "GUEST_IA32_PKRS" if which == "guest" else "HOST_IA32_PKRS"
        if not self.host.has("pks"):
            self.vm.count(f"vmwrite_invalid.{name}")
            self.vm.warnings += 1
            return
        self.vm.count("vmwrite.GUEST_IA32_PKRS" if which == "guest" else "vmwrite.HOST_IA32_PKRS")
        if which == "guest":
            vmcs.guest_pkrs = value
        else:
            vmcs.host_pkrs = value

    def set_ctls(self, vmcs: Vmcs, on: bool) -> None:
        """Set or clear both load-PKRS controls of ``vmcs`` (KVM.CTL)."""
        if vmcs.entry_load != on:
            self.vm.count("vmwrite.VM_ENTRY_CONTROLS")
        if vmcs.exit_load != on:
            self.vm.count("vmwrite.VM_EXIT_CONTROLS")
        vmcs.entry_load = vmcs.exit_load = on

    # ------------------------------------------------------------------ entries and exits
    def prepare_switch_to_guest(self) -> None:
        """KVM.HOST: refresh the loaded VMCS's host field when its exit control is set and it is stale."""
        cur = self.cur
        if self.host.has("pks") and cur.exit_load and self.vm.host_pkrs != cur.host_cache:
            self.vmwrite(cur, "host", self.vm.host_pkrs)
            cur.host_cache = self.vm.host_pkrs

    def hw_entry(self) -> Outcome | None:
        """Hardware VM entry on the current VMCS (VMX.ENTRY.LOAD); a control the CPU lacks fails it (D2)."""
        cur = self.cur
        if (cur.entry_load and not self.host.has("vmx_entry_load_pkrs")) or (
                cur.exit_load and not self.host.has("vmx_exit_load_pkrs")):
            return Outcome("internal_error", rules=("KVM.CAP", "VMX.CTL"))
        if self.host.has("pks"):
            self.hw_pkrs = entry_load(cur, self.hw_pkrs)
        self.in_guest = True
        if self.guest_mode:
            self.run_pending = False  # the nested entry has completed
        self.pvm_ran = True
        return None

    def hw_exit(self) -> None:
        """Hardware VM exit (VMX.EXIT.SAVE, VMX.EXIT.LOAD), then KVM's cache handling (KVM.CACHE)."""
        if self.host.has("pks"):
            self.hw_pkrs = exit_save_load(self.cur, self.hw_pkrs, self.host.has("vmx_entry_load_pkrs"))
        self.exit_pkrs = self.hw_pkrs
        self.in_guest = False
        self.vm.counters["exit.hw"] += 1  # (count(), inlined: once per exit)
        if self.k.pkrs_copy == "lazy":
            self.copy_avail = False
        elif self.k.pkrs_copy == "eager" and self.host.has("pks"):
            ctx = self.l2 if self.guest_mode else self.l1
            if ctx.cr4 & CR4_PKS:  # v4 refreshes its copy after every exit while CR4.PKS=1
                self.copy = self.vmread(self.cur, "guest") & LOW32

    def enter(self) -> Outcome | None:
        """Make sure the vCPU is in the guest (KVM_RUN): sample the host PKRS if state was unloaded."""
        if self.in_guest:
            return None
        if not self.loaded:
            self.prepare_switch_to_guest()
            self.loaded = True
        return self.hw_entry()

    def leave_to_userspace(self) -> None:
        """Exit to userspace: a hardware exit, then vcpu_put unloads guest state (PKRS left as it is)."""
        if self.in_guest:
            self.hw_exit()
        self.loaded = False

    # ------------------------------------------------------------------ dispatch
    def access_cpu(self, level: str) -> Cpu | None:
        """The CPU :meth:`step` runs an ``access`` at ``level`` on directly (in the guest, the level active,
        no exit: accesses are neither host kinds nor KVM-handled); None where it enters, refuses or exits."""
        if not self.in_guest or self.wait_for_sipi or self.nested_handler("access", level) is not None:
            return None
        if level == "l2":
            return self.l2 if self.guest_mode else None
        return self.l1 if not self.guest_mode or self.in_smm else None

    def step(self, ev: Event) -> Outcome:
        kind = ev.kind
        if self.wait_for_sipi and kind not in WAKING_KINDS:
            return Outcome("hang", rules=("X86.SIPI",))  # INIT_RECEIVED: KVM_RUN blocks, nothing executes
        if kind in HOST_KINDS:
            self.leave_to_userspace()
            return self.host_handlers[kind](ev)
        if kind == "vm_exit":
            return self.vm_exit(ev)
        if kind == "rsm":
            return self.rsm(ev)
        level = ev.level if ev.level in ("l1", "l2") else "l1"
        if level == "l2" and not self.guest_mode:
            return Outcome("unsupported", rules=("X86.NA",))
        if level == "l1" and self.guest_mode and not self.in_smm:
            return Outcome("unsupported", rules=("X86.NA",))
        if not self.in_guest:  # (enter(), skipped when already in the guest: most events)
            failed = self.enter()
            if failed is not None:
                return failed
        cpu = self.l2 if level == "l2" else self.l1
        if kind in ("wrmsr", "rdmsr") and ev.msr == MSR_IA32_PKRS:
            return self.guest_pkrs_access(ev, cpu, level)  # exits only when intercepted
        if kind in NESTED_KINDS:
            nested = self.nested_handler(kind, level)
            if nested is not None:
                return nested(ev)
        # Without an exit the CPU runs it (with EPT: CR3, INVLPG, accesses, PKRU)
        if kind not in KVM_HANDLED and not (kind == "rdpkru" and self.k.rdpkru_internal_error):
            handler = cpu.handlers.get(kind)
            return handler(ev) if handler is not None else unsupported(kind)
        # An exit to KVM: the hardware saves the guest's PKRS first (VMX.EXIT.SAVE), KVM handles the
        # instruction, then re-enters unless the vCPU went to userspace.
        self.vm.counters["exit.kvm"] += 1  # (count(), inlined)
        self.hw_exit()
        if kind == "emu_access":
            out = self.emulated_access(ev, cpu, level)
        elif kind == "rdpkru" and self.k.rdpkru_internal_error:
            out = Outcome("internal_error", rules=("HOST.PVM.RDPKRU",))
        elif kind in ("wrmsr", "rdmsr"):
            out = self.guest_other_msr(ev, cpu)
        else:
            out = cpu.handlers[kind](ev)
        if out.result in ("user_exit", "internal_error"):
            self.loaded = False
            return out
        return self.hw_entry() or out

    # ------------------------------------------------------------------ CPUID and CR4
    def set_cpuid(self, ev: Event) -> Outcome:
        """KVM_SET_CPUID2, then vmx_vcpu_after_set_cpuid (KVM.MSR.INTERCEPT, KVM.CTL, nested caps)."""
        ecx7 = (ev.cpuid_7_ecx or 0) & self.k.cpuid7_ecx_keep
        if self.k.clear_gcpuid_without_cap and not self.vm.cap:
            ecx7 &= ~CPUID7_ECX_PKS
        for cpu in (self.l1, self.l2):
            cpu.cpuid_7_ecx = ecx7
            if ev.cpuid_1_ecx is not None:
                cpu.cpuid_1_ecx = ev.cpuid_1_ecx
        gpks = bool(ecx7 & CPUID7_ECX_PKS)
        cap = self.vm.cap
        rules = ["ARCH.CPUID", "KVM.MSR.INTERCEPT", "KVM.CTL"]
        if self.k.intercept_policy == "cpuid":
            self.set_passthrough(cap and gpks)
        elif self.k.intercept_policy == "cpuid_sticky" and cap and gpks:
            self.set_passthrough(True)  # v5: never intercepted again (B11a)
        if self.k.ctl_policy == "cpuid" and cap:
            self.set_ctls(self.cur, gpks)  # acts on the loaded VMCS, vmcs02 if L2 is active (B16)
        elif self.k.ctl_policy == "cpuid_clear_only" and not (cap and gpks):
            self.set_ctls(self.cur, False)  # v5: never set again (B11b)
        self.update_nested_caps()
        return Outcome("ok", rules=tuple(rules))

    def vmx_set_cr4(self, cpu: GuestCpu, old_cr4: int) -> None:
        """vmx_set_cr4: KVM.CR4.PG0, and v4's control toggling on hw_cr4 vs the old guest CR4 (B6, B7)."""
        hw_cr4 = cpu.cr4
        if not self.host.has("unrestricted_guest") and not cpu.cr0 & CR0_PG:
            hw_cr4 &= ~(CR4_SMEP | CR4_SMAP | CR4_PKE | CR4_PKS)
        cpu.hw_cr4 = hw_cr4
        if self.k.ctl_policy == "cr4" and (hw_cr4 ^ old_cr4) & CR4_PKS:
            if self.l1.has_pks and hw_cr4 & CR4_PKS:
                self.set_ctls(self.cur, True)
                self.set_passthrough(True)
                self.vmwrite(self.cur, "guest", self.copy)
            else:
                self.set_ctls(self.cur, False)
                self.set_passthrough(False)

    def update_mmu(self, cpu: GuestCpu) -> None:
        """KVM.CR4.ROLE: rebuild pkr_mask only when the version's MMU role changes."""
        role = role_of(cpu.cr0, cpu.cr4, cpu.efer, self.k.mmu_role)
        old_role, _mask = self.mmu[cpu.level]
        if role != old_role:
            mask = build_pkr_mask(cpu.cr0, cpu.cr4, cpu.efer, role, self.k.mmu_role, self.k.pkr_mask_by_address)
            self.mmu[cpu.level] = (role, mask)
            self.vm.count("mmu.pkr_mask_rebuild")

    # ------------------------------------------------------------------ the MSR
    def set_passthrough(self, want: bool) -> None:
        """KVM's wish for 0x6E1; pass-through never overrides the filter (KVM.MSR.INTERCEPT)."""
        self.want_passthrough = want
        self.apply_bitmap()

    def apply_bitmap(self) -> None:
        f, active = self.vm.filter, self.vm.filter_active
        self.intercept_r = not (self.want_passthrough and (not active or f.allows(MSR_IA32_PKRS, False)))
        self.intercept_w = not (self.want_passthrough and (not active or f.allows(MSR_IA32_PKRS, True)))

    def pkrs_checks(self, value: int | None, host_initiated: bool) -> bool:
        """KVM.MSR.WR / KVM.MSR.RD checks (value only for writes); True if the access is allowed."""
        if not self.k.pks_support:
            return False
        ok_cap = self.vm.cap and (host_initiated or self.l1.has_pks)
        if value is None:
            return ok_cap
        return ok_cap and pkrs_value_valid(value)

    def read_lazy(self) -> int:
        """kvm_read_pkrs: the cached copy, filled by VMREAD when not available (KVM.CACHE)."""
        if not self.copy_avail:
            if self.k.lazy_vmread_needs_cap and not self.vm.cap:
                return self.copy  # v5: vmx_cache_reg leaves the copy alone without the cap
            self.copy = self.vmread(self.cur, "guest") & LOW32
            self.copy_avail = True
        return self.copy

    def vmx_set_pkrs(self, value: int, host_initiated: bool) -> bool:
        """vmx_set_msr for 0x6E1: checks, then the version's effect; False on failure."""
        if not self.pkrs_checks(value, host_initiated):
            return False
        mode = self.k.pkrs_copy
        if mode == "none":
            self.vmwrite(self.cur, "guest", value)
        elif mode == "eager":
            if self.copy != value:  # v4 skips an equal write (B9)
                self.copy = value
                self.vmwrite(self.cur, "guest", value)
        else:
            self.copy = value
            self.copy_avail = True
            self.vmwrite(self.cur, "guest", value)
        return True

    def vmx_get_pkrs(self, host_initiated: bool) -> int | None:
        """vmx_get_msr for 0x6E1; None on failure."""
        if not self.pkrs_checks(None, host_initiated):
            return None
        mode = self.k.pkrs_copy
        if mode == "none":
            return self.vmread(self.cur, "guest") & LOW32
        if mode == "eager":
            return self.copy
        return self.read_lazy()

    def msr_failure(self, rule: str) -> Outcome:
        """A guest MSR access KVM refuses: #GP, or a userspace exit if that reason is enabled."""
        return self.user_exit_or_gp(MSR_EXIT_INVAL if self.k.pks_support else MSR_EXIT_UNKNOWN, rule)

    def guest_pkrs_access(self, ev: Event, cpu: GuestCpu, level: str) -> Outcome:
        """Guest RDMSR/WRMSR 0x6E1: native when passed through, else KVM handles it."""
        write = ev.kind == "wrmsr"
        if (ev.cpl or 0) > 0:
            return gp("ARCH.MSR.CPL")
        if level == "l2":
            wish = 2 if write else 1
            if self.l1_msr_intercept & wish:  # L1 wants the exit (KVM.NESTED.BITMAP)
                reason = EXIT_REASON_MSR_WRITE if write else EXIT_REASON_MSR_READ
                self.hw_exit()
                self.nested_vmexit()
                failed = self.hw_entry()
                return failed or Outcome("vmexit", exit_reason=reason, rules=("KVM.NESTED.BITMAP",))
        intercepted = self.intercept_w if write else self.intercept_r
        if not self.k.pks_support or not self.host.has("pks"):
            intercepted = True
        if not intercepted:  # the CPU runs it: only the architecture's checks apply
            if write:
                if not pkrs_value_valid(ev.value or 0):
                    return gp("ARCH.MSR.RSVD")
                self.hw_pkrs = ev.value or 0
                return Outcome("ok", rules=("KVM.MSR.INTERCEPT", "ARCH.MSR.INDEP"))
            return Outcome("ok", value=self.hw_pkrs, rules=("KVM.MSR.INTERCEPT", "ARCH.MSR.INDEP"))
        self.vm.count("exit.msr_intercept")
        self.hw_exit()
        out = self.kvm_guest_msr(write, ev.value or 0)
        if out.result != "user_exit":
            failed = self.hw_entry()
            if failed is not None:
                return failed
        return out

    def kvm_guest_msr(self, write: bool, value: int) -> Outcome:
        """KVM's handling of an intercepted guest access: the filter first, then vmx_{set,get}_msr."""
        if self.vm.filter_active and not self.vm.filter.allows(MSR_IA32_PKRS, write):
            return self.user_exit_or_gp(MSR_EXIT_FILTER, "KVM.MSR.FILTER")
        if write:
            if not self.vmx_set_pkrs(value, host_initiated=False):
                return self.msr_failure("KVM.MSR.WR")
            return Outcome("ok", rules=("KVM.MSR.WR", "KVM.MSR.INTERCEPT"))
        got = self.vmx_get_pkrs(host_initiated=False)
        if got is None:
            return self.msr_failure("KVM.MSR.RD")
        return Outcome("ok", value=got, rules=("KVM.MSR.RD", "KVM.CACHE"))

    def guest_other_msr(self, ev: Event, cpu: GuestCpu) -> Outcome:
        """Any other MSR: the filter first (KVM.MSR.FILTER), then KVM's emulation of the architecture.

        A refusal is #GP, or a userspace exit: UNKNOWN for an MSR KVM does not know, INVAL for a
        value it rejects (e.g. a non-canonical KERNEL_GS_BASE), when that reason is enabled.
        """
        if (ev.cpl or 0) > 0:
            return gp("ARCH.MSR.CPL")
        msr, write = ev.msr or 0, ev.kind == "wrmsr"
        if self.vm.filter_active and not self.vm.filter.allows(msr, write):
            self.vm.count("exit.msr_intercept")
            return self.user_exit_or_gp(MSR_EXIT_FILTER, "KVM.MSR.FILTER")
        known = msr in PLAIN_MSRS or msr in COUNTER_MSRS or msr == 0xC0000080
        if not known:
            self.vm.count("exit.msr_intercept")
            return self.user_exit_or_gp(MSR_EXIT_UNKNOWN, "X86.MSR.UNKNOWN")
        out = cpu.wrmsr(ev) if write else cpu.rdmsr(ev)
        if out.result == "gp":
            return self.user_exit_or_gp(MSR_EXIT_INVAL, out.rules[0] if out.rules else "X86.MSR.STORE")
        return out

    def user_exit_or_gp(self, reason: int, rule: str) -> Outcome:
        """A refused guest MSR access: a userspace exit if ``reason`` is enabled, else #GP."""
        if self.vm.user_exits.exits_for(reason):
            self.vm.count("exit.user")
            self.loaded = False
            return Outcome("user_exit", exit_reason=reason, rules=(rule, "KVM.MSR.FILTER"))
        return gp(rule)

    # ------------------------------------------------------------------ host MSR ioctls
    def host_set_msr(self, msr: int, value: int) -> bool:
        if msr == MSR_IA32_PKRS:
            return self.vmx_set_pkrs(value, host_initiated=True)
        if msr in PLAIN_MSRS:
            self.l1.msrs[msr] = value
            return True
        if msr == 0xC0000080:
            return self.l1.write_efer(value).result == "ok"
        return False

    def host_get_msr(self, msr: int) -> int | None:
        if msr == MSR_IA32_PKRS:
            return self.vmx_get_pkrs(host_initiated=True)
        if msr in PLAIN_MSRS:
            return self.l1.msrs.get(msr, 0)
        if msr == 0xC0000080:
            return self.l1.efer
        return None

    def set_msrs(self, ev: Event) -> Outcome:
        """KVM_SET_MSRS: host-initiated, filter ignored; stops at the first failure (count semantics)."""
        count = 0
        rules = ["KVM.MSR.WR"]
        for msr, value in zip(ev.msrs or (), ev.values or (), strict=False):
            refused = self.host_set_msr_gate(msr, value)
            if refused:
                rules.append(refused)
                break
            if not self.host_set_msr(msr, value):
                break
            count += 1
        return Outcome("ok", count=count, rules=tuple(rules))

    def get_msrs(self, ev: Event) -> Outcome:
        values: list[int] = []
        for msr in ev.msrs or ():
            v = self.host_get_msr(msr)
            if v is None:
                break
            values.append(v)
        return Outcome("ok", count=len(values), values=tuple(values), rules=("KVM.MSR.RD",))

    def get_msr_index_list(self, ev: Event) -> Outcome:
        """KVM.MSR.LIST: value 1 if 0x6E1 is listed."""
        listed = self.k.pks_support and (self.vm.cap or not self.k.msr_list_needs_cap)
        return Outcome("ok", value=int(listed), rules=("KVM.MSR.LIST",))

    def set_msr_filter(self, ev: Event) -> Outcome:
        if not self.k.msr_filter_available:
            return Outcome("einval", rules=("KVM.MSR.FILTER",))
        self.vm.filter.set(ev.filter_default or "allow", tuple(ev.msrs or ()), ev.filter_allow or 0)
        self.vm.filter_active = not (self.vm.filter.default_allow and not self.vm.filter.allow)
        for vcpu in self.vm.kvm_vcpus.values():
            vcpu.leave_to_userspace()
            if self.k.filter_reevaluates_pkrs:  # v4 leaves PKRS out of the re-evaluated list (B8)
                vcpu.apply_bitmap()
        return Outcome("ok", rules=("KVM.MSR.FILTER", "KVM.MSR.INTERCEPT"))

    def enable_user_msr(self, ev: Event) -> Outcome:
        self.vm.user_exits.mask = ev.value or 0
        return Outcome("ok", rules=("KVM.MSR.FILTER",))

    # ------------------------------------------------------------------ sregs
    def set_sregs(self, ev: Event) -> Outcome:
        """KVM_SET_SREGS: EINVAL on an invalid CR4 (KVM.CR4.RSVD) or CR0/EFER combination."""
        cpu = self.l2 if self.guest_mode else self.l1
        cr0 = cpu.cr0 if ev.cr0 is None else ev.cr0
        cr4 = cpu.cr4 if ev.cr4 is None else ev.cr4
        efer = cpu.efer if ev.efer is None else ev.efer
        rule = cpu.cr4_reserved(cr4)
        if rule:
            return Outcome("einval", rules=(rule,))
        if (cr0 & CR0_PG and not cr0 & CR0_PE) or (cr0 & CR0_PG and efer & EFER_LME and not cr4 & CR4_PAE):
            return Outcome("einval", rules=("X86.MODE",))
        old = cpu.cr4
        cpu.cr0, cpu.cr4 = cr0, cr4
        cpu.efer = (efer & ~EFER_LMA) | (EFER_LMA if cr0 & CR0_PG and efer & EFER_LME else 0)
        if ev.cr3 is not None:
            cpu.cr3 = ev.cr3
        cpu.flush_tlb()
        cpu.after_cr_write(old)
        return Outcome("ok", rules=("KVM.CR4.RSVD",))

    def get_sregs(self, ev: Event) -> Outcome:
        cpu = self.l2 if self.guest_mode else self.l1
        return Outcome("ok", value=int(getattr(cpu, ev.reg or "cr4")), rules=())

    # ------------------------------------------------------------------ host context
    def run(self, ev: Event) -> Outcome:
        return self.enter() or Outcome("ok", rules=("KVM.HOST",))

    def set_host_pkrs(self, ev: Event) -> Outcome:
        """The host kernel writes its own PKRS (in host context, so after an exit)."""
        self.vm.host_pkrs = ev.value or 0
        self.hw_pkrs = self.vm.host_pkrs
        return Outcome("ok", rules=("KVM.HOST",))

    def vm_exit(self, ev: Event) -> Outcome:
        """A hardware exit handled in the kernel and an immediate re-entry (guest state stays loaded)."""
        failed = self.enter()
        if failed is not None:
            return failed
        self.hw_exit()
        return self.hw_entry() or Outcome("ok", rules=("VMX.EXIT.SAVE", "VMX.EXIT.LOAD", "KVM.CACHE"))

    def vcpu_reset(self, init: bool) -> Outcome:
        """kvm_vcpu_reset (KVM.RESET): RESET writes 0 with the cap; INIT preserves (v4/v5 differ)."""
        if self.guest_mode:
            self.leave_nested()
        self.in_smm = self.smm_from_l2 = self.wait_for_sipi = False
        self.l1.smram = None
        old = self.l1.cr4
        self.l1._power_on_registers()
        if not init:
            self.l1.pkru = 0
        clear = self.k.init_clears_pkrs if init else self.k.reset_clears_pkrs
        if clear:
            if not self.k.reset_writes_vmcs:
                self.copy = 0  # v4: the software copy only (B9)
            elif self.vm.cap:
                self.vmx_set_pkrs(0, host_initiated=True)
        self.l1.after_cr_write(old)
        return Outcome("ok", rules=("KVM.RESET", "ARCH.INIT" if init else "ARCH.RESET"))

    def pvm_start(self, ev: Event) -> Outcome:
        self.pvm_ran = True
        return Outcome("ok", rules=("PKVM.PROTECT",))

    # ------------------------------------------------------------------ emulated accesses
    def emulated_access(self, ev: Event, cpu: GuestCpu, level: str) -> Outcome:
        """KVM's own page walk (KVM.MMU.PKR): ordinary permissions, then the cached pkr_mask."""
        addr, access, cpl = ev.addr or 0, ev.access or "read", ev.cpl or 0
        m = cpu.pages.lookup(addr)
        base = check_access(m, addr, access, cpl, cpu.cr0, cpu.cr4 & ~(CR4_PKE | CR4_PKS), cpu.efer, 0, 0)
        if m is None or not m.present or not cpu.cr0 & CR0_PG or (base.pfec or 0) & PF_RSVD:
            return base
        role, mask = self.mmu[level]
        assert role is not None
        write = access in WRITE_ACCESSES
        user_access = cpl == 3 and access not in ("implicit", "implicit_write")
        fetch = access == "fetch"
        if m.user_address:
            if self.k.pkru_gated_by_role and not role.cr4_pke:
                pkr = 0
            else:
                self.vm.count("mmu.pkru_read")
                pkr = cpu.pkru
        else:
            pkr = self.emu_pkrs(role)
        bits = pkr_bits(mask, pkr, m.key, write, user_access, fetch, m.user_address, self.k.pkr_mask_by_address)
        rules = (*base.rules, "KVM.MMU.PKR")
        fresh_role = role_of(cpu.cr0, cpu.cr4, cpu.efer, self.k.mmu_role)
        fresh = build_pkr_mask(cpu.cr0, cpu.cr4, cpu.efer, fresh_role, self.k.mmu_role, self.k.pkr_mask_by_address)
        if fresh != mask:  # the mask was built for other registers and the role did not notice (B3, B10)
            rules = (*rules, "KVM.CR4.ROLE")
        if not bits:
            return Outcome(base.result, pfec=base.pfec, cr2=base.cr2, rules=rules)
        pfec = (base.pfec if base.result == "pf" else (PF_W if write else 0) | (PF_U if user_access else 0)) or 0
        return Outcome("pf", pfec=pfec | PF_P | PF_PK, cr2=addr, rules=(*rules, "ARCH.PFEC.PK"))

    def emu_pkrs(self, role: MmuRole) -> int:
        """The PKRS value the version's permission_fault uses (B13, D4)."""
        src = self.k.emu_pkrs_source
        if src == "msr":  # RFC v1-v3: kvm_get_msr, not host-initiated, so the filter applies (D4)
            self.vm.count("mmu.pkrs_read")
            if self.vm.filter_active and not self.vm.filter.allows(MSR_IA32_PKRS, False):
                return 0
            got = self.vmx_get_pkrs(host_initiated=False)
            return got or 0
        if src == "copy":
            return self.copy
        if src == "gated" and not role.cr4_pks:
            return 0
        self.vm.count("mmu.pkrs_read")
        return self.read_lazy()

    # ------------------------------------------------------------------ nested VMX
    def update_nested_caps(self) -> None:
        """KVM.NESTED.CAPS and VMX.CR4FIXED1 for L1."""
        h, k = self.host, self.k
        hw_e = k.pks_support and h.has("vmx_entry_load_pkrs")
        hw_x = k.pks_support and h.has("vmx_exit_load_pkrs")
        gate = self.vm.cap and self.l1.has_pks
        if k.nested_caps == "hw":
            e, x = hw_e, hw_x
        elif k.nested_caps == "hw_and_cpuid":
            e, x = hw_e and gate, hw_x and gate
        else:  # RFC v1: only the per-vCPU update ORs them in
            e = x = gate
        self.nested_entry_cap, self.nested_exit_cap = e, x

    def nested_handler(self, kind: str, level: str) -> Callable[[Event], Outcome] | None:
        """The method that handles a nested-VMX event of ``kind`` at ``level`` (None: not one)."""
        name = (L1_NESTED if level == "l1" else L2_NESTED).get(kind)
        return None if name is None else getattr(self, name)

    def l1_set_msr_bitmap(self, ev: Event) -> Outcome:
        if ev.msr == MSR_IA32_PKRS:
            self.l1_msr_intercept = (ev.value or 0) & 3
        return Outcome("ok", rules=("KVM.NESTED.BITMAP",))

    def l1_vmwrite(self, ev: Event) -> Outcome:
        f = ev.field or 0
        if f in PKRS_FIELDS and not self.k.pks_support:
            return Outcome("vmfail", vm_error=VMX_ERROR_UNSUPPORTED_FIELD, rules=("VMX.FIELD",))
        if not self.vmcs12.write(f, ev.value or 0):
            return Outcome("vmfail", vm_error=VMX_ERROR_UNSUPPORTED_FIELD, rules=("X86.NA",))
        self.vmcs12_dirty = True
        self.vm.count(f"nested.vmwrite.{FIELD_NAMES[f]}")
        return Outcome("ok", rules=("VMX.FIELD", "KVM.VMCS12.LAYOUT"))

    def l1_vmread(self, ev: Event) -> Outcome:
        f = ev.field or 0
        if f in PKRS_FIELDS and not self.k.pks_support:
            return Outcome("vmfail", vm_error=VMX_ERROR_UNSUPPORTED_FIELD, rules=("VMX.FIELD",))
        if f in (VMCS_GUEST_IA32_PKRS, VMCS_GUEST_IA32_PKRS_HIGH) and self.need_sync_rare:
            self.sync_vmcs02_to_vmcs12_rare()
        value = self.vmcs12.read(f)
        if value is None:
            return Outcome("vmfail", vm_error=VMX_ERROR_UNSUPPORTED_FIELD, rules=("X86.NA",))
        self.vm.count(f"nested.vmread.{FIELD_NAMES[f]}")
        return Outcome("ok", value=value, rules=("VMX.FIELD", "KVM.NESTED.EXIT"))

    def sync_vmcs02_to_vmcs12_rare(self) -> None:
        """KVM.NESTED.EXIT: save L2's PKRS into vmcs12 if the version's gate allows (B15)."""
        gate = {"cap": self.vm.cap, "gcpuid": self.l1.has_pks,
                "nested_entry_ctl": self.nested_entry_cap}[self.k.save_l2_gate]
        if gate:
            self.vmcs12.guest_pkrs = self.vmread(self.vmcs02, "guest")
        self.need_sync_rare = False

    def switch_vmcs(self, new: Vmcs) -> None:
        """vmx_switch_vmcs: KVM.HOST brings the new VMCS's host field in line (B5), cache reset."""
        old = self.cur
        self.cur = new
        if self.loaded:
            if self.k.sync_host_field and new.host_cache != old.host_cache:
                self.vmwrite(new, "host", old.host_cache)
            new.host_cache = old.host_cache
        if self.k.pkrs_copy == "lazy":
            self.copy_avail = False

    def l1_vmlaunch(self, ev: Event) -> Outcome:
        """VMLAUNCH/VMRESUME: VMX.CTL, VMX.ENTRY.CHK.HOST, then the entry (KVM.NESTED.ENTRY)."""
        v12 = self.vmcs12
        failed = (vmx.check_controls(v12, self.nested_entry_cap, self.nested_exit_cap, ("VMX.CTL", "KVM.NESTED.CAPS"))
                  or vmx.check_host_state(v12))
        if failed is not None:
            return failed
        self.vm.count("nested.vmentry")
        self.hw_exit()  # the VMLAUNCH itself exits to L0; guest state stays loaded
        failed = self.enter_non_root(from_vmentry=True, run_pending=True)
        if failed is not None:
            self.hw_entry()
            return failed
        return self.hw_entry() or Outcome("ok", rules=("KVM.NESTED.ENTRY", "VMX.ENTRY.LOAD"))

    def enter_non_root(self, from_vmentry: bool, run_pending: bool) -> Outcome | None:
        """nested_vmx_enter_non_root_mode; an entry failure returns its outcome (L1 keeps running)."""
        v12, k, cap = self.vmcs12, self.k, self.vm.cap
        self.run_pending = run_pending
        capture = {
            "not_load": cap and not v12.entry_load,
            "not_from_vmentry": cap and (not from_vmentry or not v12.entry_load),
            "not_run_pending": cap and (not run_pending or not v12.entry_load),
        }[k.capture_l1_pkrs]
        if capture:
            self.vmcs01_guest_pkrs = self.vmread(self.vmcs01, "guest") & LOW32
        self.switch_vmcs(self.vmcs02)
        self.vmcs02.entry_load = self.vmcs01.entry_load or v12.entry_load
        self.vmcs02.exit_load = self.vmcs01.exit_load
        if from_vmentry:
            failed = check_guest_state(v12)
            if failed is not None:
                self.switch_vmcs(self.vmcs01)
                self.load_vmcs12_host_state()
                return failed
        if self.vmcs12_dirty:
            if run_pending and v12.entry_load:
                self.vmwrite(self.vmcs02, "guest", v12.guest_pkrs)
            self.vmcs12_dirty = False
        if cap and (not run_pending or not v12.entry_load):
            self.vmwrite(self.vmcs02, "guest", self.vmcs01_guest_pkrs)
        self.guest_mode = True
        return None

    def load_vmcs12_host_state(self) -> None:
        """KVM.NESTED.EXIT: vmcs12's exit control loads host_ia32_pkrs into vmcs01 (a raw VMWRITE)."""
        if self.vmcs12.exit_load:
            self.vmwrite(self.vmcs01, "guest", self.vmcs12.host_pkrs)

    def nested_vmexit(self) -> None:
        """nested_vmx_vmexit after the hardware exit from vmcs02: back to vmcs01 (D5 without the control)."""
        self.guest_mode = False
        self.run_pending = False
        self.need_sync_rare = True
        self.switch_vmcs(self.vmcs01)
        self.load_vmcs12_host_state()

    def leave_nested(self) -> None:
        self.guest_mode = False
        self.run_pending = False
        self.switch_vmcs(self.vmcs01)

    def l2_nested_exit(self, ev: Event) -> Outcome:
        self.hw_exit()
        self.nested_vmexit()
        return self.hw_entry() or Outcome("ok", rules=("KVM.NESTED.EXIT", "VMX.EXIT.SAVE", "VMX.EXIT.LOAD"))

    def smi(self, ev: Event) -> Outcome:
        """SMI, emulated by KVM (enter_smm): with L2 active, vmx_enter_smm first forces a nested exit
        (B18; the SDM changes no state), then L1's CR0/CR4/EFER are saved and cleared (X86.SMM)."""
        if self.in_smm:
            return Outcome("ok", rules=("X86.SMM",))  # blocked in SMM, latched
        self.hw_exit()
        rules: tuple[str, ...] = ("X86.SMM",)
        if self.guest_mode:
            self.nested_vmexit()
            self.sync_vmcs02_to_vmcs12_rare()
            self.smm_from_l2 = True
            rules = ("X86.SMM", "KVM.NESTED.EXIT")
        self.l1.enter_smm()
        self.in_smm = True
        return self.hw_entry() or Outcome("ok", rules=rules)

    def rsm(self, ev: Event) -> Outcome:
        """RSM at the level that took the SMI: restore L1's registers, then vmx_leave_smm re-enters L2.

        Upstream vmx_leave_smm calls nested_vmx_enter_non_root_mode(vcpu, false) and only then sets
        nested_run_pending (Maxim Levitsky, 20220207155447.840194-5-mlevitsk@redhat.com): the entry
        runs with run_pending clear, so prepare_vmcs02 gives L2 vmcs01_guest_pkrs, L1's PKRS at RSM.
        """
        if not self.in_smm:
            return Outcome("ud", rules=("X86.SMM",))
        if (ev.level if ev.level in ("l1", "l2") else "l1") != ("l2" if self.smm_from_l2 else "l1"):
            return Outcome("unsupported", rules=("X86.NA",))
        failed = self.enter()
        if failed is not None:
            return failed
        self.vm.counters["exit.kvm"] += 1  # (count(), inlined)
        self.hw_exit()
        self.l1.leave_smm()
        self.in_smm = False
        rules: tuple[str, ...] = ("X86.SMM",)
        if self.smm_from_l2:
            self.smm_from_l2 = False
            self.vmcs12_dirty = True
            self.enter_non_root(from_vmentry=False, run_pending=False)
            self.run_pending = True
            rules = ("X86.SMM", "KVM.NESTED.ENTRY")
        return self.hw_entry() or Outcome("ok", rules=rules)

    def init_signal(self, ev: Event) -> Outcome:
        """INIT: with L2 active it is a nested VM exit to L1 (vmx_check_nested_events: reason 3,
        vmcs12's host state loaded), not a reset; otherwise kvm_vcpu_reset(init_event=true)."""
        if self.in_smm:
            return Outcome("ok", rules=("X86.SMM",))  # INIT is blocked in SMM (kvm_apic_init_sipi_allowed)
        if self.guest_mode:
            self.nested_vmexit()
            return Outcome("vmexit", exit_reason=EXIT_REASON_INIT_SIGNAL,
                           rules=("KVM.NESTED.EXIT", "VMX.EXIT.LOAD", "X86.INIT.VMX"))
        out = self.vcpu_reset(init=True)
        self.wait_for_sipi = self.index != 0  # the BSP (vCPU 0) runs on; an AP waits for SIPI
        return out

    def sipi(self, ev: Event) -> Outcome:
        """SIPI: an AP waiting after INIT starts (kvm_vcpu_deliver_sipi_vector sets CS:IP; PKRS stays as
        INIT left it, ARCH.INIT); to any other vCPU it is ignored."""
        self.wait_for_sipi = False
        return Outcome("ok", rules=("X86.SIPI",))

    def get_nested_state(self, ev: Event) -> Outcome:
        """KVM_GET_NESTED_STATE: vmx_get_nested_state syncs vmcs02 into vmcs12 first while L2 is
        active (sync_vmcs02_to_vmcs12 and its rare half, with the version's PKRS gate)."""
        rules: tuple[str, ...] = ("KVM.NESTED.ENTRY",)
        if self.need_sync_rare or self.guest_mode:
            self.sync_vmcs02_to_vmcs12_rare()
            rules = ("KVM.NESTED.ENTRY", "KVM.NESTED.EXIT")  # the save of L2's PKRS is KVM.NESTED.EXIT's
        self.vm.nested_blobs[self.index] = NestedBlob(self.vmcs12.copy(), self.guest_mode, self.run_pending)
        return Outcome("ok", rules=rules)

    def set_nested_state(self, ev: Event) -> Outcome:
        """KVM_SET_NESTED_STATE: the not-from-VM-entry path of KVM.NESTED.ENTRY (B14)."""
        blob = self.vm.nested_blobs.get(ev.src_vcpu if ev.src_vcpu is not None else self.index)
        if blob is None:
            return Outcome("einval", rules=("KVM.NESTED.ENTRY",))
        v12 = blob.vmcs12
        if (v12.entry_load and not self.nested_entry_cap) or (v12.exit_load and not self.nested_exit_cap) or (
                check_host_state(Vmcs("vmcs12", host_pkrs=v12.host_pkrs, exit_load=v12.exit_load)) is not None):
            return Outcome("einval", rules=("VMX.CTL", "VMX.ENTRY.CHK.HOST"))
        if self.guest_mode:
            self.leave_nested()
        self.vmcs12 = v12.copy()
        self.vmcs12_dirty = True
        if blob.guest_mode:
            self.enter_non_root(from_vmentry=False, run_pending=bool(ev.run_pending))
        return Outcome("ok", rules=("KVM.NESTED.ENTRY",))

    # ------------------------------------------------------------------ state
    def effective_pkrs(self) -> int:
        """What the guest's accesses are checked against: physical in the guest, else what entry gives."""
        if self.in_guest or not self.host.has("pks"):
            return self.hw_pkrs
        return entry_load(self.cur, self.hw_pkrs)

    def snapshot(self, name: str) -> int:
        simple = VCPU_STATE.get(name)
        if simple is not None:
            return simple(self)
        head, _, rest = name.partition(".")
        if head in ("vmcs01", "vmcs02"):
            return VMCS_STATE[rest](self.vmcs01 if head == "vmcs01" else self.vmcs02)
        if head == "vmcs12":
            v = self.vmcs12
            if rest.startswith("offset."):  # KVM.VMCS12.LAYOUT
                guest_off, host_off = LAYOUTS[self.k.vmcs12_layout]
                return {"offset.guest_ia32_pkrs": guest_off, "offset.host_ia32_pkrs": host_off}[rest]
            return {"guest_ia32_pkrs": v.guest_pkrs, "host_ia32_pkrs": v.host_pkrs,
                    "entry_ctls.load_pkrs": int(v.entry_load), "exit_ctls.load_pkrs": int(v.exit_load)}[rest]
        if head == "l2":
            return self.l2.snapshot(rest)
        if name == "cpuid.7.ecx":
            return self.l1.cpuid_7_ecx
        return self.l1.snapshot(name)


# Snapshot paths of a VMCS's PKRS state (KvmVcpu.snapshot: vmcs01.NAME, vmcs02.NAME).
VMCS_STATE: dict[str, Callable[[Vmcs], int]] = {
    "guest_ia32_pkrs": lambda v: v.guest_pkrs,
    "host_ia32_pkrs": lambda v: v.host_pkrs,
    "host_cache": lambda v: v.host_cache,
    "entry_ctls.load_pkrs": lambda v: int(v.entry_load),
    "exit_ctls.load_pkrs": lambda v: int(v.exit_load),
}

# Snapshot paths of a vCPU's own state (KvmVcpu.snapshot), each read from the vCPU.
VCPU_STATE: dict[str, Callable[[KvmVcpu], int]] = {
    "pkrs": lambda v: v.effective_pkrs(),
    "hw_pkrs": lambda v: v.hw_pkrs,
    "exit_pkrs": lambda v: v.exit_pkrs,
    "pkrs_copy": lambda v: v.copy,
    "pkrs_copy_avail": lambda v: int(v.copy_avail),
    "vmcs01_guest_pkrs": lambda v: v.vmcs01_guest_pkrs,
    "msr_bitmap.0x6e1.read": lambda v: int(v.intercept_r),
    "msr_bitmap.0x6e1.write": lambda v: int(v.intercept_w),
    "nested.guest_mode": lambda v: int(v.guest_mode),
    "nested.run_pending": lambda v: int(v.run_pending),
    "mmu.cr4_pks": lambda v: int(bool(v.mmu["l1"][0] and v.mmu["l1"][0].cr4_pks)),
    "pkr_mask": lambda v: v.mmu["l1"][1],
    "vmx.entry_ctls_high.load_pkrs": lambda v: int(v.nested_entry_cap),
    "vmx.exit_ctls_high.load_pkrs": lambda v: int(v.nested_exit_cap),
    "vmx.cr4_fixed1.pks": lambda v: int(v.k.pks_support and v.l1.has_pks),
}

__all__ = ["CPUID7_ECX_PKU", "KvmMachine", "KvmVcpu"]
