"""Linear-address translation attributes and the architectural page-access check.

A trace does not carry page tables byte by byte; it says, per leaf, what the rules need: the
leaf size, P, R/W and U/S (of the leaf and of every entry above it), a reserved bit, XD and the
key (ARCH.ADDR, ARCH.KEY).  :func:`check_access` turns one access into ok or #PF with the exact
PFEC and CR2 and the ids of the rules that decided it.  It is a pure function of the register
values passed in, so KVM's model can call it with the *physical* PKRS of a running guest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .events import PAGE_BYTES, Outcome
from .pkeys import denies
from .registers import (
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    CR4_PKE,
    CR4_PKS,
    CR4_SMAP,
    CR4_SMEP,
    EFER_LMA,
    EFER_NXE,
    PF_ID,
    PF_P,
    PF_PK,
    PF_RSVD,
    PF_U,
    PF_W,
)

WRITE_ACCESSES = frozenset({"write", "rmw", "implicit_write"})
IMPLICIT_ACCESSES = frozenset({"implicit", "implicit_write"})


@dataclass(slots=True, frozen=True)
class Mapping:
    """One leaf translation: the attributes of the leaf and the AND of the entries above it."""

    base: int
    page_size: str
    present: bool = True
    writable: bool = True  # R/W=1 in every entry used
    user: bool = False  # U/S of the leaf
    user_upper: bool = True  # U/S=1 in every non-leaf entry
    rsvd: bool = False  # a reserved bit set in some entry
    nx: bool = False  # XD in some entry
    key: int = 0  # bits 62:59 of the leaf

    def __reduce__(self) -> tuple[type[Mapping], tuple[int, str, bool, bool, bool, bool, bool, bool, int]]:
        """Pickle as a constructor call: the generated slots ``__getstate__`` is slow for snapshots."""
        return (Mapping, (self.base, self.page_size, self.present, self.writable, self.user, self.user_upper,
                          self.rsvd, self.nx, self.key))

    @property
    def user_address(self) -> bool:
        """ARCH.ADDR: user-mode address iff U/S=1 in every entry, leaf included."""
        return self.user and self.user_upper


class PageTables:
    """The leaf mappings of one address space, looked up by linear address."""

    __slots__ = ("_by_size", "_state")

    def __init__(self) -> None:
        self._by_size: dict[str, dict[int, Mapping]] = {"4k": {}, "2m": {}, "1g": {}}
        self._state: tuple[tuple[Any, ...], ...] | None = None  # the mappings' fields, for pickling; None: changed

    def __reduce__(self) -> tuple[Callable[[tuple[tuple[Any, ...], ...]], PageTables], tuple[tuple[tuple[Any, ...], ...]]]:
        """Pickle as the mappings' fields in insertion order, computed once per change (snapshots pickle often)."""
        if self._state is None:
            self._state = tuple(m.__reduce__()[1] for table in self._by_size.values() for m in table.values())
        return _page_tables, (self._state,)

    def map(self, m: Mapping) -> None:
        """Install ``m``, replacing every mapping it overlaps."""
        self._state = None
        size = PAGE_BYTES[m.page_size]
        for other_size, table in self._by_size.items():
            other_bytes = PAGE_BYTES[other_size]
            if other_bytes >= size:
                table.pop(m.base & ~(other_bytes - 1), None)
            else:
                for b in [b for b in table if m.base <= b < m.base + size]:
                    del table[b]
        self._by_size[m.page_size][m.base] = m

    def lookup(self, addr: int) -> Mapping | None:
        """The leaf mapping that translates ``addr``, or None (not present)."""
        for size in ("4k", "2m", "1g"):
            m = self._by_size[size].get(addr & ~(PAGE_BYTES[size] - 1))
            if m is not None:
                return m
        return None

    def __len__(self) -> int:
        return sum(len(t) for t in self._by_size.values())


def _page_tables(state: tuple[tuple[Any, ...], ...]) -> PageTables:
    pt = PageTables()
    for fields in state:
        m = Mapping(*fields)
        pt._by_size[m.page_size][m.base] = m
    pt._state = state
    return pt


def page_base(addr: int, page_size: str) -> int:
    """The base of the ``page_size`` page holding ``addr``."""
    return addr & ~(PAGE_BYTES[page_size] - 1)


def check_access(
    mapping: Mapping | None,
    addr: int,
    access: str,
    cpl: int,
    cr0: int,
    cr4: int,
    efer: int,
    pkrs: int,
    pkru: int,
) -> Outcome:
    """The architectural outcome of one access (SPEC §1), with the rules that decided it.

    A faulting read-modify-write whose read alone would fault also cites X86.RMW.LOAD: the load
    half decides the fault (AD, not present, RSVD, U/S, SMAP), not the store half (WD, R/W).
    """
    out = _check_access(mapping, addr, access, cpl, cr0, cr4, efer, pkrs, pkru)
    if access == "rmw" and out.result == "pf" and _check_access(
            mapping, addr, "read", cpl, cr0, cr4, efer, pkrs, pkru).result == "pf":
        out.rules = (*out.rules, "X86.RMW.LOAD")
    return out


def _check_access(
    mapping: Mapping | None,
    addr: int,
    access: str,
    cpl: int,
    cr0: int,
    cr4: int,
    efer: int,
    pkrs: int,
    pkru: int,
) -> Outcome:
    if not cr0 & CR0_PG:
        return Outcome("ok", rules=("X86.PAGING.OFF", "ARCH.CR4.EFFECT"))
    fetch = access == "fetch"
    is_write = access in WRITE_ACCESSES
    user_mode = cpl == 3 and access not in IMPLICIT_ACCESSES
    ia32e = bool(efer & EFER_LMA)
    nxe = bool(efer & EFER_NXE)
    base_code = (PF_W if is_write else 0) | (PF_U if user_mode else 0)
    if fetch and ((cr4 & CR4_PAE and nxe) or cr4 & CR4_SMEP):
        base_code |= PF_ID
    # Terminal faults first; they never set PK (ARCH.PFEC.TERMINAL).
    if mapping is None or not mapping.present:
        return Outcome("pf", pfec=base_code, cr2=addr, rules=("X86.PAGE.NP", "ARCH.PFEC.TERMINAL"))
    rsvd_rules: tuple[str, ...] = ()
    if mapping.rsvd:
        rsvd_rules = ("ARCH.PFEC.TERMINAL",)
    elif mapping.nx and not nxe and (ia32e or cr4 & CR4_PAE):
        rsvd_rules = ("X86.PAGE.NX", "ARCH.PFEC.TERMINAL")
    elif not ia32e and cr4 & CR4_PAE and mapping.key:
        rsvd_rules = ("X86.PAGE.PAE_KEY", "ARCH.PFEC.TERMINAL")
    if rsvd_rules:
        return Outcome("pf", pfec=base_code | PF_P | PF_RSVD, cr2=addr, rules=rsvd_rules)

    rules: list[str] = ["ARCH.ADDR"]
    user_addr = mapping.user_address
    ordinary = False
    if user_mode and not user_addr:
        ordinary = True
        rules += ["X86.PAGE.US", "ARCH.PFEC.CPL3"]
    if is_write and not mapping.writable and (user_mode or cr0 & CR0_WP):
        ordinary = True
        rules.append("X86.PAGE.RW")
    if fetch and mapping.nx and nxe:
        ordinary = True
        rules.append("X86.PAGE.NX")
    if fetch and not user_mode and user_addr and cr4 & CR4_SMEP:
        ordinary = True
        rules.append("X86.PAGE.SMEP")
    if not fetch and not user_mode and user_addr and cr4 & CR4_SMAP:
        ordinary = True
        rules.append("X86.PAGE.SMAP")

    pk = False
    if not ia32e:
        rules.append("ARCH.CR4.EFFECT")
    elif fetch:
        rules.append("ARCH.CHK.DATA")
    else:
        pkr = None
        if user_addr and cr4 & CR4_PKE:
            pkr = pkru
        elif not user_addr and cr4 & CR4_PKS:
            pkr = pkrs
        rules.append("ARCH.CHK.REG")
        if pkr is not None:
            rules += ["ARCH.KEY", "ARCH.RIGHTS"]
            pk = denies(pkr, mapping.key, is_write, bool(cr0 & CR0_WP), user_mode)
    if not (pk or ordinary):
        return Outcome("ok", rules=tuple(rules))
    pfec = base_code | PF_P
    if pk:
        pfec |= PF_PK
        rules.append("ARCH.PFEC.PK")
    return Outcome("pf", pfec=pfec, cr2=addr, rules=tuple(rules))


__all__ = ["Mapping", "PageTables", "check_access", "page_base", "CR4_PKE", "CR4_PKS"]
