"""Fixed facts of the guest's memory map and of the QEMU CPU it runs on.

The guest owns a small identity-mapped region (its code, tables, stacks and the physical frames
behind every trace page) and a window onto the 1 GiB frame; a trace address inside either cannot
be given to the trace, so the compiler reports it as not recorded.  The CR4 bits listed as safe
are the ones QEMU 7.2 TCG accepts with our ``-cpu`` string: anything else risks the reserved-bit
livelock of pks_semantics §4.5, so it is never sent.
"""

from __future__ import annotations

from reference_model.registers import (
    CPUID7_ECX_PKS,
    CPUID7_ECX_PKU,
    CR4_PAE,
    CR4_PGE,
    CR4_PKE,
    CR4_PKS,
    CR4_PSE,
    CR4_SMAP,
    CR4_SMEP,
)

CONTROL_BLOCK = 0x0070_0000  # survives RESET: magic, phase, fresh, expect_reset, ap_cmd (physical)
TABLE_POOL = 0x0080_0000  # paging structures, 4 KiB each (PML4 is table 0)
TABLE_POOL_END = 0x0100_0000
FRAME_4K = 0x0100_0000  # the physical page behind every 4 KiB trace page
FRAME_2M = 0x0120_0000  # the physical 2 MiB frame behind every 2 MiB trace page
FRAME_1G = 0x4000_0000  # the physical 1 GiB frame behind every 1 GiB trace page (needs -m 2048)
IDENTITY_END = 0x0020_0000  # the guest identity-maps [0, 2 MiB): its image, stacks, IDT, GDT
WINDOW_PML4_INDEX = 192  # PML4 slot of the guest's window onto physical [0, 2 GiB)
WINDOW = WINDOW_PML4_INDEX << 39  # linear address of physical 0 in the window
INFRA_TABLES = 5  # PML4, PDPT0, PD0, PT_LOW, PDPT_WINDOW
MAX_TABLES = (TABLE_POOL_END - TABLE_POOL) // 4096

KERNEL_CS = 0x08
KERNEL_DS = 0x10
USER_DS = 0x23
USER_CS = 0x2B
LDT_SELECTOR = 0x40
LDT_DATA_SELECTOR = 0x07  # LDT index 0, TI=1, RPL=3

# CR4 bits QEMU 7.2 TCG accepts with CPU_BASE plus the features below (PKE/PKS only when enumerated).
CR4_ALWAYS_SAFE = 0x4 | 0x8 | CR4_PSE | CR4_PAE | 0x40 | CR4_PGE | 0x100 | 0x200 | 0x400 | CR4_SMEP | CR4_SMAP

CPU_BASE = "qemu64"
CPU_EXTRA = ("+smep", "+smap", "+pdpe1gb")  # not in leaf 7 ECX, which stays exactly the trace's


def cpu_string(cpuid_7_ecx: int) -> str:
    """The ``-cpu`` value for a trace's CPUID choice (PKS and PKU on or off)."""
    feats = [*CPU_EXTRA]
    feats.append("+pks" if cpuid_7_ecx & CPUID7_ECX_PKS else "-pks")
    feats.append("+pku" if cpuid_7_ecx & CPUID7_ECX_PKU else "-pku")
    return ",".join([CPU_BASE, *feats])


def cr4_safe_bits(cpuid_7_ecx: int) -> int:
    """CR4 bits that may be sent to QEMU for this CPUID (never a reserved one: §4.5 livelock)."""
    bits = CR4_ALWAYS_SAFE
    if cpuid_7_ecx & CPUID7_ECX_PKS:
        bits |= CR4_PKS
    if cpuid_7_ecx & CPUID7_ECX_PKU:
        bits |= CR4_PKE
    return bits


def canonical(addr: int) -> bool:
    """True for a canonical 48-bit linear address."""
    top = addr >> 47
    return top == 0 or top == (1 << 17) - 1


def in_guest_region(base: int, size: int) -> bool:
    """True if [base, base+size) overlaps a linear range the guest itself uses."""
    end = base + size
    if base < IDENTITY_END:
        return True
    return base < WINDOW + (1 << 39) and end > WINDOW


def window(phys: int) -> int:
    """The linear address at which the guest reaches physical address ``phys``."""
    return WINDOW + phys
