"""The protection-key rights check that PKU and PKS share (ARCH.RIGHTS).

PKRU and IA32_PKRS have one layout: for key k, AD is bit 2k and WD is bit 2k+1.  The register
is chosen by the address type (ARCH.CHK.REG); this module only answers "does this register deny
this access to key k", so the CPU model and KVM's pkr_mask model can both call it.
"""

from __future__ import annotations


def ad(pkr: int, key: int) -> bool:
    """Access-disable bit of ``key``."""
    return bool((pkr >> (2 * key)) & 1)


def wd(pkr: int, key: int) -> bool:
    """Write-disable bit of ``key``."""
    return bool((pkr >> (2 * key + 1)) & 1)


def denies(pkr: int, key: int, is_write: bool, wp: bool, user_mode_access: bool) -> bool:
    """ARCH.RIGHTS: deny = AD(k) or (WD(k) and write and (CR0.WP or user-mode access))."""
    bits = (pkr >> (2 * key)) & 3
    if bits & 1:
        return True
    return bool(bits & 2) and is_write and (wp or user_mode_access)
