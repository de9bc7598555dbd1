"""vmcs12: the VMCS L1 builds for L2, as KVM stores it (KVM.VMCS12.LAYOUT), and its fields.

L1 reaches it with VMWRITE/VMREAD by field encoding; the ``_HIGH`` encodings address bits 63:32
of a 64-bit field.  The byte layout differs between series versions (D6), which matters for
KVM_GET/SET_NESTED_STATE blobs moved between kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

from .registers import (
    VM_ENTRY_LOAD_IA32_PKRS,
    VM_EXIT_LOAD_IA32_PKRS,
    VMCS_GUEST_IA32_PKRS,
    VMCS_GUEST_IA32_PKRS_HIGH,
    VMCS_HOST_IA32_PKRS,
    VMCS_HOST_IA32_PKRS_HIGH,
    VMCS_VM_ENTRY_CONTROLS,
    VMCS_VM_EXIT_CONTROLS,
)
from .restore import Restorable

FIELD_NAMES = {
    VMCS_GUEST_IA32_PKRS: "GUEST_IA32_PKRS",
    VMCS_GUEST_IA32_PKRS_HIGH: "GUEST_IA32_PKRS_HIGH",
    VMCS_HOST_IA32_PKRS: "HOST_IA32_PKRS",
    VMCS_HOST_IA32_PKRS_HIGH: "HOST_IA32_PKRS_HIGH",
    VMCS_VM_ENTRY_CONTROLS: "VM_ENTRY_CONTROLS",
    VMCS_VM_EXIT_CONTROLS: "VM_EXIT_CONTROLS",
}
PKRS_FIELDS = frozenset({VMCS_GUEST_IA32_PKRS, VMCS_GUEST_IA32_PKRS_HIGH, VMCS_HOST_IA32_PKRS, VMCS_HOST_IA32_PKRS_HIGH})

# KVM.VMCS12.LAYOUT: byte offsets of (guest_ia32_pkrs, host_ia32_pkrs) in struct vmcs12.
LAYOUTS = {"rfc": (320, 328), "v5": (1006, 998)}

VMX_ERROR_UNSUPPORTED_FIELD = 12  # VMREAD/VMWRITE of an unsupported VMCS component


@dataclass
class Vmcs12(Restorable):
    """The PKRS-related fields of L1's vmcs12."""

    guest_pkrs: int = 0
    host_pkrs: int = 0
    entry_ctls: int = 0
    exit_ctls: int = 0

    @property
    def entry_load(self) -> bool:
        return bool(self.entry_ctls & VM_ENTRY_LOAD_IA32_PKRS)

    @property
    def exit_load(self) -> bool:
        return bool(self.exit_ctls & VM_EXIT_LOAD_IA32_PKRS)

    def write(self, field: int, value: int) -> bool:
        """VMWRITE; False if the field is not one this model knows."""
        lo, hi = value & 0xFFFF_FFFF, (value & 0xFFFF_FFFF) << 32
        if field == VMCS_GUEST_IA32_PKRS:
            self.guest_pkrs = value
        elif field == VMCS_GUEST_IA32_PKRS_HIGH:
            self.guest_pkrs = (self.guest_pkrs & 0xFFFF_FFFF) | hi
        elif field == VMCS_HOST_IA32_PKRS:
            self.host_pkrs = value
        elif field == VMCS_HOST_IA32_PKRS_HIGH:
            self.host_pkrs = (self.host_pkrs & 0xFFFF_FFFF) | hi
        elif field == VMCS_VM_ENTRY_CONTROLS:
            self.entry_ctls = lo
        elif field == VMCS_VM_EXIT_CONTROLS:
            self.exit_ctls = lo
        else:
            return False
        return True

    def read(self, field: int) -> int | None:
        """VMREAD; None if the field is not one this model knows."""
        return {
            VMCS_GUEST_IA32_PKRS: self.guest_pkrs,
            VMCS_GUEST_IA32_PKRS_HIGH: self.guest_pkrs >> 32,
            VMCS_HOST_IA32_PKRS: self.host_pkrs,
            VMCS_HOST_IA32_PKRS_HIGH: self.host_pkrs >> 32,
            VMCS_VM_ENTRY_CONTROLS: self.entry_ctls,
            VMCS_VM_EXIT_CONTROLS: self.exit_ctls,
        }.get(field)

    def copy(self) -> Vmcs12:
        return Vmcs12(self.guest_pkrs, self.host_pkrs, self.entry_ctls, self.exit_ctls)
