"""KVM's userspace MSR filter and userspace MSR exits (KVM.MSR.FILTER).

The filter decides, per guest access, whether KVM executes it at all; a denied access is #GP
or, when KVM_CAP_X86_USER_SPACE_MSR enables the FILTER reason, an exit to userspace.
Host-initiated accesses (KVM_GET/SET_MSRS) ignore it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .registers import MSR_EXIT_FILTER
from .restore import Restorable


@dataclass
class MsrFilter(Restorable):
    """Default action plus per-MSR allow bits (bit 0 read, bit 1 write)."""

    default_allow: bool = True
    allow: dict[int, int] = field(default_factory=dict)

    def allows(self, msr: int, write: bool) -> bool:
        bits = self.allow.get(msr)
        if bits is None:
            return self.default_allow
        return bool(bits & (2 if write else 1))

    def set(self, default: str, msrs: tuple[int, ...], allow: int) -> None:
        self.default_allow = default == "allow"
        self.allow = dict.fromkeys(msrs, allow)


@dataclass
class UserMsrExits(Restorable):
    """KVM_CAP_X86_USER_SPACE_MSR: which failure reasons exit to userspace."""

    mask: int = 0

    def exits_for(self, reason: int) -> bool:
        return bool(self.mask & reason)


__all__ = ["MSR_EXIT_FILTER", "MsrFilter", "UserMsrExits"]
