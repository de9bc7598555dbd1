"""One vCPU as the architecture defines it (SPEC §1): registers, MSRs, CR writes, accesses.

:class:`Cpu` executes guest-level events on a bare CPU.  Subclasses (KVM's vCPU) override the
narrow hooks (``cr4_reserved``, ``pkrs_for_access``, the MSR handlers) rather than the event
loop, so the architecture is written once.  The TLB is modelled only as far as ARCH.TLB needs:
which pages were filled before a CR4.PKS/PKE change and not flushed since.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from .events import Event, Outcome, gp
from .paging import Mapping, PageTables, check_access, page_base
from .pkrs import check_pkrs_read, check_pkrs_write
from .registers import (
    COUNTER_MSRS,
    CPUID7_ECX_OSPKE,
    CPUID7_ECX_PKS,
    CPUID7_ECX_PKU,
    CR0_EM,
    CR0_PE,
    CR0_PG,
    CR0_RESET,
    CR0_TS,
    CR0_WP,
    CR4_FLUSH_BITS,
    CR4_KNOWN,
    CR4_PAE,
    CR4_PGE,
    CR4_PKE,
    CR4_PKS,
    CR4_PSE,
    CR4_SMEP,
    EFER_LMA,
    EFER_LME,
    EFER_WRITABLE,
    MSR_EFER,
    MSR_IA32_PKRS,
    PLAIN_MSRS,
)
from .restore import Restorable, restore

Handler = Callable[[Event], Outcome]


class AccessInputs(NamedTuple):
    """Everything of a CPU an access's outcome depends on besides the mapping and the access itself."""

    cr0: int
    cr4: int
    efer: int
    pkrs: int  # the PKRS the hardware checks against (Cpu.pkrs_for_access)
    pkru: int
    stale: frozenset[int]  # TLB pages filled before a CR4.PKS/PKE change or a remap, not flushed


def classify_access(m: Mapping | None, addr: int, access: str, cpl: int, inputs: AccessInputs
                    ) -> tuple[Outcome, int | None]:
    """What :meth:`Cpu.access` answers, and the page base it puts in the TLB (None: none), changing nothing.

    A stale TLB entry (ARCH.TLB) makes the result undefined; a successful access fills the TLB.
    """
    out = check_access(m, addr, access, cpl, inputs.cr0, inputs.cr4, inputs.efer, inputs.pkrs, inputs.pkru)
    fill = None
    if m is not None and inputs.cr0 & CR0_PG:
        if m.base in inputs.stale:
            out.rules = (*out.rules, "ARCH.TLB")
            out.undefined = ("result", "pfec", "cr2")
        elif out.result == "ok":
            fill = m.base
    return out, fill

# MSRs holding linear addresses: a non-canonical value is #GP (X86.MSR.CANONICAL).
CANONICAL_MSRS = frozenset({0xC0000102, 0xC0000082, 0xC0000083, 0x175, 0x176})


def canonical(value: int) -> bool:
    """48-bit canonical: bits 63:47 all equal."""
    top = value >> 47
    return top == 0 or top == (1 << 17) - 1


class Cpu(Restorable):
    """Architectural state and semantics of one logical processor."""

    # CR4 bits whose change reloads the PAE PDPTEs (SDM 4.4.1; CR4.PKS is not one: Jim Mattson, B1).
    pdptr_bits = CR4_PAE | CR4_PGE | CR4_PSE | CR4_SMEP

    def __init__(self, pages: PageTables) -> None:
        self.pages = pages
        self.cpuid_7_ecx = 0
        self.cpuid_1_ecx = 0
        self.pkrs = 0
        self.pkru = 0
        self.cr0 = CR0_RESET
        self.cr3 = 0
        self.cr4 = 0
        self.efer = 0
        self.msrs: dict[int, int] = {}
        self.pdpte_rsvd = False  # the in-memory PAE PDPTEs have a reserved bit set
        self.tlb: set[int] = set()  # page bases filled since the last flush
        self.stale: set[int] = set()  # filled before a CR4.PKS/PKE change or a remap, not flushed
        self.smram: tuple[int, int, int, int] | None = None  # CR0, CR3, CR4, EFER saved by SMM entry
        self.bind_handlers()

    def bind_handlers(self) -> None:
        """The event table, bound to this object (rebuilt on unpickling: bound methods are not state)."""
        self.handlers: dict[str, Handler] = {
            "set_cpuid": self.set_cpuid,
            "cpuid": self.cpuid,
            "wrmsr": self.wrmsr,
            "rdmsr": self.rdmsr,
            "mov_cr0": self.mov_cr0,
            "mov_cr3": self.mov_cr3,
            "mov_cr4": self.mov_cr4,
            "wrpkru": self.wrpkru,
            "rdpkru": self.rdpkru,
            "invlpg": self.invlpg,
            "write_pdpte": self.write_pdpte,
            "map": self.map,
            "access": self.access,
            "emu_access": self.access,
            "reset": self.reset,
            "init": self.init,
        }

    def __getstate__(self) -> dict[str, object]:
        """Pickled state: every attribute but the handler table (a machine snapshot is state only)."""
        state = dict(self.__dict__)
        del state["handlers"]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        restore(self, state)
        self.bind_handlers()

    # -- enumeration ---------------------------------------------------------------------
    @property
    def has_pks(self) -> bool:
        """ARCH.CPUID: CPUID.(7,0):ECX[31]."""
        return bool(self.cpuid_7_ecx & CPUID7_ECX_PKS)

    @property
    def has_pku(self) -> bool:
        return bool(self.cpuid_7_ecx & CPUID7_ECX_PKU)

    def set_cpuid(self, ev: Event) -> Outcome:
        self.cpuid_7_ecx = (ev.cpuid_7_ecx or 0) & ~CPUID7_ECX_OSPKE
        if ev.cpuid_1_ecx is not None:
            self.cpuid_1_ecx = ev.cpuid_1_ecx
        return Outcome("ok", rules=("ARCH.CPUID",))

    def cpuid(self, ev: Event) -> Outcome:
        if ev.cpuid_leaf == 7 and not ev.cpuid_subleaf:
            ecx = self.cpuid_7_ecx | (CPUID7_ECX_OSPKE if self.cr4 & CR4_PKE else 0)
            return Outcome("ok", value=ecx, rules=("ARCH.CPUID",))
        if ev.cpuid_leaf == 1:
            return Outcome("ok", value=self.cpuid_1_ecx, rules=("ARCH.CPUID",))
        return Outcome("ok", value=0, rules=("X86.NA",))

    # -- MSRs ----------------------------------------------------------------------------
    def wrmsr(self, ev: Event) -> Outcome:
        if (ev.cpl or 0) > 0:
            return gp("ARCH.MSR.CPL")
        msr, value = ev.msr, ev.value or 0
        if msr == MSR_IA32_PKRS:
            rule = check_pkrs_write(self.has_pks, value)
            if rule:
                return gp(rule)
            self.pkrs = value
            return Outcome("ok", rules=("ARCH.MSR.CPUID", "ARCH.MSR.RSVD", "ARCH.MSR.INDEP"))
        if msr == MSR_EFER:
            return self.write_efer(value)
        if msr in PLAIN_MSRS:
            if msr in CANONICAL_MSRS and not canonical(value):
                return gp("X86.MSR.CANONICAL")
            self.msrs[msr] = value
            return Outcome("ok", rules=("X86.MSR.STORE",))
        if msr in COUNTER_MSRS:
            return Outcome("ok", rules=("X86.MSR.COUNTER",))
        return gp("X86.MSR.UNKNOWN")

    def rdmsr(self, ev: Event) -> Outcome:
        if (ev.cpl or 0) > 0:
            return gp("ARCH.MSR.CPL")
        msr = ev.msr
        if msr == MSR_IA32_PKRS:
            rule = check_pkrs_read(self.has_pks)
            if rule:
                return gp(rule)
            return Outcome("ok", value=self.pkrs, rules=("ARCH.MSR.CPUID", "ARCH.MSR.RSVD", "ARCH.MSR.INDEP"))
        if msr == MSR_EFER:
            return Outcome("ok", value=self.efer, rules=("X86.MODE",))
        if msr in PLAIN_MSRS:
            return Outcome("ok", value=self.msrs.get(msr, 0), rules=("X86.MSR.STORE",))
        if msr in COUNTER_MSRS:  # the value is the counter's at that moment: no model value
            return Outcome("ok", rules=("X86.MSR.COUNTER",))
        return gp("X86.MSR.UNKNOWN")

    def write_efer(self, value: int) -> Outcome:
        """EFER: only SCE/LME/NXE are writable; LME may not change while paging (X86.MODE)."""
        if value & ~(EFER_WRITABLE | EFER_LMA):
            return gp("X86.MODE")
        if self.cr0 & CR0_PG and (value ^ self.efer) & EFER_LME:
            return gp("X86.MODE")
        self.efer = (value & EFER_WRITABLE) | (self.efer & EFER_LMA)
        self.after_efer_write()
        return Outcome("ok", rules=("X86.MODE",))

    # -- control registers ---------------------------------------------------------------
    def cr4_reserved(self, value: int) -> str | None:
        """The rule that makes ``value`` an invalid CR4, or None.  KVM overrides this."""
        if value & CR4_PKS and not self.has_pks:
            return "ARCH.CR4.RSVD"
        if value & ~CR4_KNOWN or (value & CR4_PKE and not self.has_pku):
            return "X86.CR4.RSVD"
        return None

    def mov_cr0(self, ev: Event) -> Outcome:
        if (ev.cpl or 0) > 0:
            return gp("X86.CR.CPL")
        value = ev.value or 0
        if value >> 32 or (value & CR0_PG and not value & CR0_PE):
            return gp("X86.MODE")
        if value & CR0_PG and not self.cr0 & CR0_PG and self.efer & EFER_LME and not self.cr4 & CR4_PAE:
            return gp("X86.MODE")
        changed = value ^ self.cr0
        if value & CR0_PG and changed & CR0_PG and self.pae_paging_with(value, self.cr4, self.efer) and self.pdpte_rsvd:
            return gp("X86.PAE.PDPTE")
        self.cr0 = value
        self.update_lma()
        if changed & (CR0_PG | CR0_WP | CR0_PE):
            self.flush_tlb()
        self.after_cr_write(self.cr4)
        return Outcome("ok", rules=("X86.MODE",))

    @staticmethod
    def pae_paging_with(cr0: int, cr4: int, efer: int) -> bool:
        """PAE paging (not IA-32e): the mode whose PDPTEs are loaded into registers."""
        return bool(cr0 & CR0_PG and cr4 & CR4_PAE and not efer & EFER_LMA)

    def write_pdpte(self, ev: Event) -> Outcome:
        """The guest rewrites its in-memory PDPTEs; nothing is loaded until CR3 or a pdptr bit changes."""
        self.pdpte_rsvd = bool(ev.rsvd)
        return Outcome("ok", rules=("X86.PAE.PDPTE",))

    def after_cr_write(self, old_cr4: int) -> None:
        """Hook after a successful CR0/CR4 change (KVM runs vmx_set_cr4 and the MMU here)."""

    def after_efer_write(self) -> None:
        """Hook after a successful EFER write (KVM resets the MMU context; vmx_set_cr4 does not run)."""

    def update_lma(self) -> None:
        """X86.MODE: EFER.LMA = EFER.LME and CR0.PG."""
        if self.cr0 & CR0_PG and self.efer & EFER_LME:
            self.efer |= EFER_LMA
        else:
            self.efer &= ~EFER_LMA

    def mov_cr3(self, ev: Event) -> Outcome:
        if (ev.cpl or 0) > 0:
            return gp("X86.CR.CPL")
        if self.pae_paging_with(self.cr0, self.cr4, self.efer) and self.pdpte_rsvd:
            return gp("X86.PAE.PDPTE")
        self.cr3 = ev.value or 0
        self.flush_tlb()
        return Outcome("ok", rules=("ARCH.TLB",))

    def mov_cr4(self, ev: Event) -> Outcome:
        if (ev.cpl or 0) > 0:
            return gp("X86.CR.CPL")
        value = ev.value or 0
        rule = self.cr4_reserved(value)
        if rule:
            return gp(rule)
        if self.efer & EFER_LMA and not value & CR4_PAE:
            return gp("X86.MODE")
        if (value ^ self.cr4) & self.pdptr_bits and self.pae_paging_with(self.cr0, value, self.efer) and self.pdpte_rsvd:
            return gp("X86.PAE.PDPTE")
        old = self.cr4
        out = self.set_cr4(value)
        self.after_cr_write(old)
        return out

    def set_cr4(self, value: int) -> Outcome:
        """Install a valid CR4 and apply its TLB consequences (ARCH.TLB)."""
        changed = value ^ self.cr4
        self.cr4 = value
        rules = ["ARCH.CR4.RSVD"]
        if changed & CR4_FLUSH_BITS:
            self.flush_tlb()
        elif changed & (CR4_PKS | CR4_PKE):
            self.stale |= self.tlb
            rules.append("ARCH.TLB")
        return Outcome("ok", rules=tuple(rules))

    def wrpkru(self, ev: Event) -> Outcome:
        if not self.cr4 & CR4_PKE:
            return Outcome("ud", rules=("X86.PKRU",))
        value = ev.value or 0
        if value >> 32:
            return gp("X86.PKRU")
        self.pkru = value
        return Outcome("ok", rules=("X86.PKRU",))

    def rdpkru(self, ev: Event) -> Outcome:
        if not self.cr4 & CR4_PKE:
            return Outcome("ud", rules=("X86.PKRU",))
        return Outcome("ok", value=self.pkru, rules=("X86.PKRU",))

    # -- TLB and memory ------------------------------------------------------------------
    def flush_tlb(self) -> None:
        self.tlb.clear()
        self.stale.clear()

    def invlpg(self, ev: Event) -> Outcome:
        if (ev.cpl or 0) > 0:
            return gp("X86.CR.CPL")
        m = self.pages.lookup(ev.addr or 0)
        base = m.base if m else page_base(ev.addr or 0, "4k")
        self.tlb.discard(base)
        self.stale.discard(base)
        return Outcome("ok", rules=("ARCH.TLB",))

    def map(self, ev: Event) -> Outcome:
        size = ev.page_size or "4k"
        m = Mapping(
            base=page_base(ev.addr or 0, size), page_size=size, present=bool(ev.present),
            writable=ev.writable is not False, user=bool(ev.user), user_upper=ev.user_upper is not False,
            rsvd=bool(ev.rsvd), nx=bool(ev.nx), key=ev.key or 0,
        )
        self.pages.map(m)
        if m.base in self.tlb:
            self.stale.add(m.base)
        return Outcome("ok", rules=("ARCH.KEY",))

    def pkrs_for_access(self) -> int:
        """The PKRS value a hardware access is checked against (KVM: the physical register)."""
        return self.pkrs

    def access_inputs(self) -> AccessInputs:
        """The registers and TLB state an access here depends on (see :func:`classify_access`)."""
        return AccessInputs(self.cr0, self.cr4, self.efer, self.pkrs_for_access(), self.pkru, frozenset(self.stale))

    def access(self, ev: Event) -> Outcome:
        addr = ev.addr or 0
        out, fill = classify_access(self.pages.lookup(addr), addr, ev.access or "read", ev.cpl or 0,
                                    self.access_inputs())
        if fill is not None:
            self.tlb.add(fill)
        return out

    # -- SMM ----------------------------------------------------------------------------
    def enter_smm(self) -> None:
        """SMM entry (SDM 34.5.1, Table 34-4): CR0.PE/EM/TS/PG = 0, CR4 = 0, EFER = 0, so PKS is off
        in SMM; CR0, CR3, CR4 and EFER go to the SMRAM state-save area.  PKRS is not saved: it carries."""
        self.smram = (self.cr0, self.cr3, self.cr4, self.efer)
        old = self.cr4
        self.cr0 &= ~(CR0_PE | CR0_EM | CR0_TS | CR0_PG)
        self.cr4 = 0
        self.efer = 0
        self.flush_tlb()
        self.after_cr_write(old)
        self.after_efer_write()

    def leave_smm(self) -> None:
        """RSM restores what SMM entry saved (PKRS keeps the value the SMM handler left)."""
        assert self.smram is not None
        old = self.cr4
        self.cr0, self.cr3, self.cr4, self.efer = self.smram
        self.smram = None
        self.flush_tlb()
        self.after_cr_write(old)
        self.after_efer_write()

    # -- lifecycle -----------------------------------------------------------------------
    def _power_on_registers(self) -> None:
        self.cr0 = CR0_RESET
        self.cr3 = 0
        self.cr4 = 0
        self.efer = 0
        self.flush_tlb()

    def reset(self, ev: Event) -> Outcome:
        """ARCH.RESET: PKRS (and PKRU) = 0."""
        self._power_on_registers()
        self.pkrs = 0
        self.pkru = 0
        self.msrs.clear()
        return Outcome("ok", rules=("ARCH.RESET", "X86.INIT"))

    def init(self, ev: Event) -> Outcome:
        """ARCH.INIT: PKRS preserved; registers back to their power-up values."""
        self._power_on_registers()
        return Outcome("ok", rules=("ARCH.INIT", "X86.INIT"))

    # -- state ---------------------------------------------------------------------------
    def snapshot(self, name: str) -> int:
        """The value of architectural register ``name`` (KeyError if the CPU has no such state)."""
        if name == "pkrs":
            return self.pkrs
        if name in ("pkru", "cr0", "cr3", "cr4", "efer"):
            return int(getattr(self, name))
        if name == "cpuid.7.ecx":
            return self.cpuid_7_ecx
        raise KeyError(name)
