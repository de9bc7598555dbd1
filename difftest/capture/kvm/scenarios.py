"""The scenario library: event sequences the recorder performs on a real vCPU.

Each scenario is a list of model events (no expectations: the recording supplies them).  It
starts from a fresh vCPU and sets every piece of VM-wide state it depends on (MSR filter,
userspace-MSR exits), so scenarios can share one VM, each on its own vCPU, and still mean the
same as if each had a VM of its own.  ``supported_ecx`` is leaf 7.0 ECX of
KVM_GET_SUPPORTED_CPUID, so "with PKS in the CPUID set" means "what KVM offers, plus bit 31".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from reference_model.events import Event

from .executor import UserMsrReply
from .guest_program import LONG_CR0, LONG_CR4, LONG_EFER, PML4

PKRS = 0x6E1
KGSBASE = 0xC0000102
STAR = 0xC0000081
CR4_PKE, CR4_PKS = 1 << 22, 1 << 24
CPUID_PKS = 1 << 31
REASONS = {"inval": 1, "unknown": 2, "filter": 4}


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    build: Callable[[int], list[Event]]  # supported leaf-7 ECX -> events (vcpu filled in later)
    reply: UserMsrReply = field(default_factory=UserMsrReply)


def _prologue(supported_ecx: int, pks_cpuid: bool | None, long_mode: bool) -> list[Event]:
    evs = [Event("create_vcpu", level="host"),
           Event("set_msr_filter", level="host", filter_default="allow", msrs=(), filter_allow=0),
           Event("enable_user_msr", level="host", value=0)]
    if pks_cpuid is not None:
        ecx = supported_ecx | CPUID_PKS if pks_cpuid else supported_ecx & ~CPUID_PKS
        evs += [Event("set_cpuid", level="host", cpuid_7_ecx=ecx), Event("get_cpuid", level="host")]
    if long_mode:
        evs.append(Event("set_sregs", level="host", cr0=LONG_CR0, cr3=PML4, cr4=LONG_CR4, efer=LONG_EFER))
    return evs


def host_pkrs(pks_cpuid: bool) -> Callable[[int], list[Event]]:
    def build(sup: int) -> list[Event]:
        return [*_prologue(sup, pks_cpuid, False),
                Event("get_msr_index_list", level="host"),
                Event("get_msrs", level="host", msrs=(PKRS,)),
                Event("set_msrs", level="host", msrs=(PKRS,), values=(0x12345678,)),
                Event("set_msrs", level="host", msrs=(PKRS,), values=(0,)),
                Event("set_msrs", level="host", msrs=(PKRS,), values=(1 << 32,)),
                Event("set_msrs", level="host", msrs=(KGSBASE, PKRS, STAR), values=(0x1234, 5, 0x2000)),
                Event("get_msrs", level="host", msrs=(KGSBASE, STAR)),
                Event("get_msrs", level="host", msrs=(KGSBASE, PKRS, STAR))]
    return build


def guest_pkrs(pks_cpuid: bool, long_mode: bool) -> Callable[[int], list[Event]]:
    def build(sup: int) -> list[Event]:
        return [*_prologue(sup, pks_cpuid, long_mode), Event("run", level="host"),
                Event("wrmsr", msr=PKRS, value=0x11223344),
                Event("rdmsr", msr=PKRS),
                Event("wrmsr", msr=PKRS, value=(1 << 32) | 1),
                Event("wrmsr", msr=KGSBASE, value=0x1234),
                Event("rdmsr", msr=KGSBASE),
                Event("get_msrs", level="host", msrs=(PKRS,))]
    return build


def cr4_pks(pks_cpuid: bool, long_mode: bool) -> Callable[[int], list[Event]]:
    base = LONG_CR4 if long_mode else 0

    def build(sup: int) -> list[Event]:
        evs = [*_prologue(sup, pks_cpuid, long_mode),
               Event("set_sregs", level="host", cr4=base | CR4_PKS),
               Event("get_sregs", level="host", reg="cr4"),
               Event("run", level="host"),
               Event("mov_cr4", value=base | CR4_PKS),
               Event("cpuid", cpuid_leaf=7, cpuid_subleaf=0),
               Event("mov_cr4", value=base | CR4_PKE),
               Event("cpuid", cpuid_leaf=7, cpuid_subleaf=0),
               Event("get_sregs", level="host", reg="cr4"),
               Event("mov_cr4", value=base | CR4_PKE | CR4_PKS),
               Event("set_sregs", level="host", cr4=base | CR4_PKE),
               Event("get_sregs", level="host", reg="cr4")]
        if long_mode:
            evs.append(Event("rdpkru"))
        return evs
    return build


def msr_filter(deny: bool, user: str) -> Callable[[int], list[Event]]:
    mask = {"off": 0, "all": 7}.get(user, REASONS.get(user, 0))

    def build(sup: int) -> list[Event]:
        evs = _prologue(sup, None, False)
        evs.append(Event("set_msr_filter", level="host", filter_default="allow", msrs=(PKRS, KGSBASE),
                         filter_allow=0 if deny else 3))
        if mask:
            evs.append(Event("enable_user_msr", level="host", value=mask))
        evs += [Event("run", level="host"),
                Event("wrmsr", msr=PKRS, value=0x11223344),
                Event("rdmsr", msr=PKRS),
                Event("wrmsr", msr=KGSBASE, value=0x1234),
                Event("rdmsr", msr=KGSBASE),
                Event("wrmsr", msr=KGSBASE, value=1 << 63),
                Event("set_msrs", level="host", msrs=(KGSBASE,), values=(0x5678,)),
                Event("set_msrs", level="host", msrs=(PKRS,), values=(1,))]
        return evs
    return build


def reserved_bits(long_mode: bool) -> Callable[[int], list[Event]]:
    base = LONG_CR4 if long_mode else 0

    def build(sup: int) -> list[Event]:
        return [*_prologue(sup, True, long_mode), Event("run", level="host"),
                Event("set_msrs", level="host", msrs=(PKRS,), values=(0xFFFFFFFF00000000,)),
                Event("wrmsr", msr=PKRS, value=0xFFFFFFFF00000000),
                Event("set_sregs", level="host", cr4=base | (1 << 31)),
                Event("mov_cr4", value=base | (1 << 31)),
                Event("get_sregs", level="host", reg="cr4")]
    return build


def _library() -> dict[str, Scenario]:
    lib: dict[str, Scenario] = {}

    def add(s: Scenario) -> None:
        lib[s.name] = s

    for pks in (False, True):
        tag = "pks" if pks else "nopks"
        add(Scenario(f"host-pkrs-{tag}", f"host KVM_GET/SET_MSRS of IA32_PKRS, CPUID {'with' if pks else 'without'} PKS",
                     host_pkrs(pks)))
        for lm in (False, True):
            mode = "long" if lm else "real"
            add(Scenario(f"guest-pkrs-{mode}-{tag}",
                         f"guest WRMSR/RDMSR of IA32_PKRS in {mode} mode, CPUID {'with' if pks else 'without'} PKS",
                         guest_pkrs(pks, lm)))
            add(Scenario(f"cr4-pks-{mode}-{tag}",
                         f"CR4.PKS (and PKE) via KVM_SET_SREGS and guest MOV in {mode} mode, CPUID "
                         f"{'with' if pks else 'without'} PKS", cr4_pks(pks, lm)))
    for deny in (False, True):
        for user in ("off", "inval", "unknown", "filter", "all"):
            add(Scenario(f"msr-filter-{'deny' if deny else 'allow'}-user-{user}",
                         f"MSR filter {'denying' if deny else 'allowing'} 0x6E1 and KERNEL_GS_BASE, "
                         f"userspace MSR exits {user}", msr_filter(deny, user)))
    add(Scenario("msr-filter-deny-user-all-reject",
                 "MSR filter denying 0x6E1 and KERNEL_GS_BASE, all userspace exits, userspace answers #GP",
                 msr_filter(True, "all"), UserMsrReply(error=1)))
    add(Scenario("msr-user-unknown-accept-data",
                 "userspace MSR exits for unknown MSRs; userspace emulates RDMSR 0x6E1 as 0xCAFEF00D",
                 msr_filter(False, "unknown"), UserMsrReply(error=0, data=0xCAFEF00D)))
    for lm in (False, True):
        add(Scenario(f"reserved-bits-{'long' if lm else 'real'}",
                     "reserved bits: IA32_PKRS bits 63:32 (host and guest), an undefined CR4 bit",
                     reserved_bits(lm)))
    return lib


SCENARIOS: dict[str, Scenario] = _library()
