"""The guest's real paging structures, built from a trace's ``map`` events.

A trace describes each leaf by its attributes; the guest must express them as 4-level entries
whose upper levels are shared between neighbouring pages.  :class:`GuestTables` allocates tables
from the guest's pool, turns one ``map`` into the entry writes the guest performs at that point,
and walks the result, so the compiler can check, access by access, that the page the guest has
is the page the trace describes (sharing an upper entry can make them differ).
"""

from __future__ import annotations

from dataclasses import dataclass

from difftest.capture.qemu.layout import (
    FRAME_1G,
    FRAME_2M,
    FRAME_4K,
    INFRA_TABLES,
    MAX_TABLES,
    TABLE_POOL,
    WINDOW_PML4_INDEX,
    window,
)
from reference_model.events import PAGE_BYTES

P, RW, US, PS = 0x1, 0x2, 0x4, 0x80
RSVD_BIT = 1 << 51  # above QEMU's 40 physical-address bits, so reserved
XD = 1 << 63
KEY_SHIFT = 59
ADDR_MASK = 0x000F_FFFF_FFFF_F000
LEAF_LEVEL = {"1g": 1, "2m": 2, "4k": 3}  # level index: 0 PML4, 1 PDPT, 2 PD, 3 PT
FRAMES = {"4k": FRAME_4K, "2m": FRAME_2M, "1g": FRAME_1G}


@dataclass(frozen=True)
class Page:
    """The attributes the access check needs (the same ones a trace's ``map`` states)."""

    present: bool
    page_size: str = "4k"
    writable: bool = True
    user: bool = False
    user_upper: bool = True
    rsvd: bool = False
    nx: bool = False
    key: int = 0


NOT_PRESENT = Page(False)


def table_addr(index: int) -> int:
    return TABLE_POOL + index * 4096


def _indices(addr: int) -> tuple[int, int, int, int]:
    return ((addr >> 39) & 511, (addr >> 30) & 511, (addr >> 21) & 511, (addr >> 12) & 511)


class GuestTables:
    """Paging structures of one trace unit: the guest's own entries plus the trace's."""

    def __init__(self) -> None:
        self.entries: dict[int, dict[int, int]] = {}
        self.next_table = INFRA_TABLES
        # The guest's own entries, rebuilt on every boot; a map may not change them.
        self.fixed: dict[tuple[int, int], int] = {
            (0, 0): table_addr(1) | P | RW | US,
            (1, 0): table_addr(2) | P | RW | US,
            (0, WINDOW_PML4_INDEX): table_addr(4) | P | RW,
        }
        self.fixed[(2, 0)] = table_addr(3) | P | RW | US
        for (t, i), v in self.fixed.items():
            self.entries.setdefault(t, {})[i] = v

    @property
    def tables_used(self) -> int:
        return self.next_table

    def _alloc(self) -> int:
        if self.next_table >= MAX_TABLES:
            raise OverflowError("the guest's table pool is full")
        self.next_table += 1
        return self.next_table - 1

    def map(self, addr: int, page: Page) -> list[tuple[int, int]] | None:
        """The (physical address, value) writes that install ``page`` at ``addr``, applied to
        this model; None if they would change one of the guest's own entries."""
        idx = _indices(addr)
        leaf_level = LEAF_LEVEL[page.page_size]
        writes: list[tuple[int, int, int]] = []  # (table, index, value)
        staged: dict[tuple[int, int], int] = {}
        table = 0
        for level in range(leaf_level):
            cur = staged.get((table, idx[level]), self.entries.get(table, {}).get(idx[level], 0))
            child = (cur & ADDR_MASK) if (cur & P and not cur & PS) else None
            if child is None or not (TABLE_POOL <= child < TABLE_POOL + MAX_TABLES * 4096):
                child = table_addr(self._alloc())
            upper_us = page.user_upper if level == leaf_level - 1 else True
            want = child | P | RW | (US if upper_us else 0)
            if want != cur:
                writes.append((table, idx[level], want))
                staged[(table, idx[level])] = want
            table = (child - TABLE_POOL) // 4096
        leaf = 0
        if page.present:
            leaf = FRAMES[page.page_size] | P
        leaf |= (RW if page.writable else 0) | (US if page.user else 0) | (page.key << KEY_SHIFT)
        leaf |= (RSVD_BIT if page.rsvd else 0) | (XD if page.nx else 0) | (PS if page.page_size != "4k" else 0)
        writes.append((table, idx[leaf_level], leaf))
        for t, i, v in writes:
            if (t, i) in self.fixed and self.fixed[(t, i)] != v:
                return None
        for t, i, v in writes:
            self.entries.setdefault(t, {})[i] = v
        return [(table_addr(t) + 8 * i, v) for t, i, v in writes]

    def walk(self, addr: int) -> Page:
        """What a 4-level walk of ``addr`` finds in these structures."""
        idx = _indices(addr)
        table = 0
        writable = user_upper = True
        rsvd = nx = False
        for level in range(4):
            e = self.entries.get(table, {}).get(idx[level], 0)
            if not e & P:
                return NOT_PRESENT
            rsvd |= bool(e & RSVD_BIT)
            nx |= bool(e & XD)
            writable &= bool(e & RW)
            if level == 3 or (level in (1, 2) and e & PS):
                size = {1: "1g", 2: "2m", 3: "4k"}[level]
                return Page(True, size, writable, bool(e & US), user_upper, rsvd, nx, (e >> KEY_SHIFT) & 15)
            user_upper &= bool(e & US)
            table = ((e & ADDR_MASK) - TABLE_POOL) // 4096
            if not 0 <= table < MAX_TABLES:
                return NOT_PRESENT  # outside the pool: never a trace page
        return NOT_PRESENT


class TracePages:
    """The pages as the trace describes them (a later map replaces every page it overlaps)."""

    def __init__(self) -> None:
        self.pages: dict[tuple[str, int], Page] = {}

    def map(self, base: int, page: Page) -> None:
        size = PAGE_BYTES[page.page_size]
        for key in list(self.pages):
            other_size, other_base = key
            ob = PAGE_BYTES[other_size]
            if other_base < base + size and base < other_base + ob:
                del self.pages[key]
        self.pages[(page.page_size, base)] = page

    def lookup(self, addr: int) -> Page:
        for size, nbytes in PAGE_BYTES.items():
            page = self.pages.get((size, addr & ~(nbytes - 1)))
            if page is not None:
                return page
        return NOT_PRESENT


def alias_of(addr: int, page_size: str) -> int:
    """Where the guest itself reaches the byte behind ``addr`` (through its own mapping)."""
    return window(FRAMES[page_size] + (addr & (PAGE_BYTES[page_size] - 1)))


def same_page(trace: Page, guest: Page) -> bool:
    """True if the guest's walk gives what the trace's page needs (only P for a non-present one)."""
    if not trace.present:
        return not guest.present
    return trace == guest
