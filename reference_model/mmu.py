"""KVM's MMU role and its cached ``pkr_mask`` (KVM.CR4.ROLE, KVM.MMU.PKR).

KVM rebuilds ``pkr_mask`` only when the MMU role changes (``init_kvm_tdp_mmu`` returns early
on an equal role).  So which CR4 bits are part of the role decides whether a CR4.PKS change is
seen by emulated accesses: no PKS bit (RFC v1-v3, B3), one bit merged with PKE (v4, B10) or a
bit of its own (v5+).  The mask is kept as KVM keeps it, so the stale-mask bugs reproduce.

Mask layout (sources/kvm_pks_series.md §5.1): 16 entries of two bits, indexed by the page-fault
error-code bits 4:1 (W, U = user-mode access, the RSVD slot reused for "user-mode address",
F = fetch); bit 0 of an entry is ANDed with AD, bit 1 with WD.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from .registers import CR0_WP, CR4_PKE, CR4_PKS, EFER_LMA, PF_ID, PF_RSVD, PF_U, PF_W

RoleMode = str  # "none" (no PKS bit), "merged" (cr4_pkr = PKE or PKS), "separate" (cr4_pks)


class MmuRole(NamedTuple):
    """The role bits that matter here (a tuple: compared and hashed on every CR write and emulated access)."""

    cr0_wp: bool
    lma: bool
    cr4_pke: bool  # v5+: LMA and PKE; v4: PKE or PKS ("cr4_pkr"); v1-v3: PKE
    cr4_pks: bool  # v5+ only: LMA and PKS


def role_of(cr0: int, cr4: int, efer: int, mode: RoleMode) -> MmuRole:
    """The MMU role a version computes from the guest's registers."""
    lma = bool(efer & EFER_LMA)
    pke, pks = bool(cr4 & CR4_PKE), bool(cr4 & CR4_PKS)
    if mode == "separate":
        return MmuRole(bool(cr0 & CR0_WP), lma, lma and pke, lma and pks)
    if mode == "merged":
        return MmuRole(bool(cr0 & CR0_WP), lma, pke or pks, False)
    return MmuRole(bool(cr0 & CR0_WP), lma, pke, False)


@lru_cache(maxsize=4096)  # (pure, an int, and asked on every emulated access with few distinct registers)
def build_pkr_mask(cr0: int, cr4: int, efer: int, role: MmuRole, mode: RoleMode, by_address: bool) -> int:
    """``update_pkr_bitmask`` as each version wrote it, from the registers at rebuild time."""
    lma = bool(efer & EFER_LMA)
    if mode == "separate":
        pke, pks, enabled = role.cr4_pke, role.cr4_pks, role.cr4_pke or role.cr4_pks
    else:  # v1-v4 read CR4 at rebuild time and require long mode
        pke, pks = bool(cr4 & CR4_PKE), bool(cr4 & CR4_PKS)
        enabled = (pke or pks) and lma
    if not enabled:
        return 0
    wp = bool(cr0 & CR0_WP)
    mask = 0
    for index in range(16):
        pfec = index << 1
        wf, uf, ff, pte_user = bool(pfec & PF_W), bool(pfec & PF_U), bool(pfec & PF_ID), bool(pfec & PF_RSVD)
        if by_address:
            check_pkey = not ff and (pke if pte_user else pks)
        else:  # RFC v1-v3: no user-address slot, PKE and PKS not told apart (B4)
            check_pkey = not ff and not pte_user
        check_write = check_pkey and wf and (uf or wp)
        mask |= (int(check_pkey) | (int(check_write) << 1)) << pfec
    return mask


def pkr_bits(mask: int, pkr: int, key: int, write: bool, user_access: bool, fetch: bool, user_address: bool,
             by_address: bool) -> int:
    """``permission_fault``'s lookup: nonzero means a PK fault."""
    offset = (PF_W if write else 0) | (PF_U if user_access else 0) | (PF_ID if fetch else 0)
    if by_address and user_address:
        offset |= PF_RSVD
    return (pkr >> (2 * key)) & 3 & (mask >> offset)
