"""IA32_PKRS (MSR 0x6E1) as the architecture defines it: ARCH.MSR.*.

The register holds 32 bits, two per key.  These checks are the CPU's; KVM's own order of checks
(KVM.MSR.WR) lives in the KVM model and calls :func:`pkrs_value_valid` for the value part.
"""

from __future__ import annotations

PKRS_MASK = 0xFFFF_FFFF


def pkrs_value_valid(value: int) -> bool:
    """ARCH.MSR.RSVD: bits 63:32 must be zero (KVM's ``kvm_pkrs_valid``)."""
    return value >> 32 == 0


def check_pkrs_write(has_pks: bool, value: int) -> str | None:
    """The rule that makes WRMSR 0x6E1 of ``value`` fault on a bare CPU, or None."""
    if not has_pks:
        return "ARCH.MSR.CPUID"
    if not pkrs_value_valid(value):
        return "ARCH.MSR.RSVD"
    return None


def check_pkrs_read(has_pks: bool) -> str | None:
    """The rule that makes RDMSR 0x6E1 fault on a bare CPU, or None."""
    return None if has_pks else "ARCH.MSR.CPUID"
