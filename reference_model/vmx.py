"""VMX as the architecture defines it for PKRS (SPEC §2, VMX.*): one VMCS and its transitions.

Only the PKRS-related part of a VMCS is modelled: the guest and host IA32_PKRS fields and the
two load controls.  The functions are the CPU's behaviour on VM entry and VM exit; KVM's model
calls them for vmcs01/vmcs02, and the bare-CPU policy for the VMCS L1 manages itself.
``host_cache`` is not architectural: it is KVM's ``loaded_vmcs->host_state.pkrs``, kept beside
the VMCS it caches so that a VMCS switch carries it along.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .events import Outcome
from .registers import (
    EXIT_REASON_FAILED_ENTRY,
    EXIT_REASON_INVALID_STATE,
    VMX_ERROR_ENTRY_INVALID_CONTROL,
    VMX_ERROR_ENTRY_INVALID_HOST_STATE,
)
from .restore import Restorable

LOW32 = 0xFFFF_FFFF


@dataclass
class Vmcs(Restorable):
    """The PKRS slice of one VMCS."""

    name: str
    guest_pkrs: int = 0  # GUEST_IA32_PKRS, a 64-bit field
    host_pkrs: int = 0  # HOST_IA32_PKRS
    entry_load: bool = False  # VM-entry control bit 22
    exit_load: bool = False  # VM-exit control bit 29
    host_cache: int = 0  # KVM's software cache of host_pkrs (not architectural)


class PkrsControls(Protocol):
    """What the entry checks read of a VMCS: a hardware one (:class:`Vmcs`) or L1's vmcs12."""

    @property
    def entry_load(self) -> bool: ...

    @property
    def exit_load(self) -> bool: ...

    @property
    def guest_pkrs(self) -> int: ...

    @property
    def host_pkrs(self) -> int: ...


def check_controls(vmcs: PkrsControls, entry_supported: bool, exit_supported: bool,
                   rules: tuple[str, ...] = ("VMX.CTL",)) -> Outcome | None:
    """VMX.CTL: a load-PKRS control the capability MSR does not allow is VMfail error 7.

    ``rules`` names who decided what the capability MSR allows (KVM adds KVM.NESTED.CAPS for L1's).
    """
    if (vmcs.entry_load and not entry_supported) or (vmcs.exit_load and not exit_supported):
        return Outcome("vmfail", vm_error=VMX_ERROR_ENTRY_INVALID_CONTROL, rules=rules)
    return None


def check_host_state(vmcs: PkrsControls) -> Outcome | None:
    """VMX.ENTRY.CHK.HOST: exit control set and host field 63:32 != 0 is VMfail error 8."""
    if vmcs.exit_load and vmcs.host_pkrs >> 32:
        return Outcome("vmfail", vm_error=VMX_ERROR_ENTRY_INVALID_HOST_STATE, rules=("VMX.ENTRY.CHK.HOST",))
    return None


def check_guest_state(vmcs: PkrsControls) -> Outcome | None:
    """VMX.ENTRY.CHK.GUEST: entry control set and guest field 63:32 != 0 is an entry failure."""
    if vmcs.entry_load and vmcs.guest_pkrs >> 32:
        return Outcome("entry_fail", exit_reason=EXIT_REASON_FAILED_ENTRY | EXIT_REASON_INVALID_STATE, exit_qual=0,
                       rules=("VMX.ENTRY.CHK.GUEST",))
    return None


def entry_load(vmcs: Vmcs, pkrs: int) -> int:
    """VMX.ENTRY.LOAD: the PKRS the guest starts with after a successful entry."""
    return vmcs.guest_pkrs & LOW32 if vmcs.entry_load else pkrs


def exit_save_load(vmcs: Vmcs, pkrs: int, saves: bool) -> int:
    """VMX.EXIT.SAVE and VMX.EXIT.LOAD: save into the guest field, return the PKRS after the exit.

    ``saves`` is whether the CPU supports the 1-setting of the entry control: the save happens
    then, whatever the control's current value (so with the controls clear the field is
    "polluted" with whatever PKRS the guest ran with).
    """
    if saves:
        vmcs.guest_pkrs = pkrs
    return vmcs.host_pkrs & LOW32 if vmcs.exit_load else pkrs
