"""Compile a trace's architectural events into guest code, one probe per event.

The guest always runs in IA-32e mode (it needs paging for its own code), so the compiler follows
the mode the *trace* puts the CPU in and only sends an event whose outcome does not depend on the
difference: register writes are executed for real (CR0 with PG, CR4 with PAE kept, EFER with LME
kept), accesses only while the trace is in IA-32e paging.  Anything the guest cannot express, or
must not send (a CR4 bit QEMU would livelock on, pks_semantics §4.5), becomes a "not recorded"
row with the reason: it keeps its event, loses its expectations, and is never guessed.

Mode events the compiler had to assume an outcome for (to know the trace's mode afterwards) are
marked; the recorder checks QEMU agreed, and otherwise stops trusting the rest of the trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from difftest.capture.qemu.layout import (
    LDT_DATA_SELECTOR,
    LDT_SELECTOR,
    canonical,
    cpu_string,
    cr4_safe_bits,
    in_guest_region,
    window,
)
from difftest.capture.qemu.pagetables import GuestTables, Page, TracePages, alias_of, same_page
from difftest.trace.io import TraceRow
from reference_model.events import PAGE_BYTES, Event
from reference_model.registers import (
    CPUID7_ECX_PKS,
    CPUID7_ECX_PKU,
    CR0_PE,
    CR0_PG,
    CR0_RESET,
    CR0_WP,
    CR4_PAE,
    CR4_PKE,
    CR4_PKS,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
    EFER_SCE,
    MSR_EFER,
    MSR_IA32_PKRS,
    MSR_IA32_XSS,
    PLAIN_MSRS,
)

SENDABLE_MSRS = frozenset(PLAIN_MSRS - {MSR_IA32_XSS}) | {MSR_IA32_PKRS, MSR_EFER}
EFER_SENDABLE = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE
UD2 = 0x0B0F  # little-endian 0F 0B
# LDT data descriptors (base 0, 4 GiB, DPL 3): accessed (a pure read) and not accessed (the CPU
# then writes the accessed bit: an implicit supervisor write at descriptor + 4).
DESC_ACCESSED = 0x00CFF3000000FFFF
DESC_NOT_ACCESSED = 0x00CFF2000000FFFF


@dataclass
class RowPlan:
    """What the guest does for one trace row, and how its output line becomes expectations."""

    row: TraceRow
    probe: int | None = None  # probe id printed by the guest ("@id ...")
    reason: str | None = None  # not recorded, and why
    decode: str = "result"  # result | value | cpuid7 | phase | boot | snapshot
    phase: int | None = None  # reset/init: the phase whose start proves it happened
    assumed: str | None = None  # mode events: the result the compiler assumed
    implicit_write_addr: int | None = None  # the address the accessed-bit write really goes to


@dataclass
class Unit:
    """One trace compiled: its guest code, its CPL3 snippets, its phases and per-row plans."""

    name: str
    cpuid_7_ecx: int
    code: list[str] = field(default_factory=list)
    user: list[str] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)  # labels, local to the unit
    plans: list[RowPlan] = field(default_factory=list)
    tables: int = 0
    uses_1g: bool = False
    key: int = 0  # protection key of the guest's own pages while this trace runs

    @property
    def cpu(self) -> str:
        return cpu_string(self.cpuid_7_ecx)

    def not_recorded(self) -> list[RowPlan]:
        return [p for p in self.plans if p.reason is not None]


def keys_by_preference(rows: Sequence[TraceRow]) -> list[int]:
    """Keys for the guest's own pages, those the trace's PKRS values deny least first."""
    values = [r.event.value or 0 for r in rows
              if r.event is not None and r.event.kind == "wrmsr" and r.event.msr == MSR_IA32_PKRS]
    return sorted(range(16), key=lambda k: (sum(1 for v in values if (v >> (2 * k)) & 3), -k))


def _hex(v: int) -> str:
    return f"{v:#x}"


class _Compiler:
    """Compiles one trace (``rows``) with probe ids starting at ``first_probe``."""

    def __init__(self, name: str, rows: Sequence[TraceRow], first_probe: int, prefix: str, key: int,
                 first_phase: int) -> None:
        self.rows = rows
        self.next_probe = first_probe
        self.prefix = prefix
        self.phase_base = first_phase
        cpuid7 = next((r.event.cpuid_7_ecx or 0 for r in rows
                       if r.event is not None and r.event.kind == "set_cpuid" and r.event.vcpu == 0), 0)
        self.unit = Unit(name, cpuid7 & (CPUID7_ECX_PKS | CPUID7_ECX_PKU), key=key)
        self.cpuid_exact = not cpuid7 & ~(CPUID7_ECX_PKS | CPUID7_ECX_PKU | 0x10)
        self.cr0 = CR0_RESET
        self.cr4 = 0
        self.efer = 0
        # what the guest's CPU really holds (the trace's mode may differ, see the module doc)
        self.real_cr0 = self.boot_cr0 = 0x80000011
        self.real_cr4 = self.boot_cr4 = CR4_PAE
        self.real_efer = self.boot_efer = EFER_LME | EFER_LMA
        self.pkrs = 0
        self.poison: str | None = None
        self.guest = GuestTables()
        self.trace_pages = TracePages()
        self.seen_cpuid = False
        self.start_phase()

    # -- emission helpers ------------------------------------------------------------------
    def emit(self, *lines: str) -> None:
        self.unit.code.extend(lines)

    def start_phase(self) -> int:
        label = f"{self.prefix}_ph{len(self.unit.phases)}"
        self.unit.phases.append(label)
        self.emit(f"{label}:")
        return self.phase_base + len(self.unit.phases) - 1

    def new_probe(self, plan: RowPlan) -> int:
        plan.probe = self.next_probe
        self.next_probe += 1
        return plan.probe

    def probe(self, plan: RowPlan, insn: Sequence[str], *, cpl: int = 0, setup: Sequence[str] = (),
              regs: Sequence[str] = (), value: Sequence[str] = (), fetch_addr: int | None = None,
              tail: Sequence[str] = ()) -> None:
        """Run ``insn`` at ``cpl`` with fault recovery; ``value`` stores what it read (rax/rdx)."""
        n = self.new_probe(plan)
        rec, nf = f".Lr{n}", f".Ln{n}"
        self.emit(f"    movq ${n}, cur_event(%rip)", *setup, f"    lea {rec}(%rip), %rax", "    call arm")
        if cpl == 0:
            self.emit(*regs, "    mov %rsp, saved_krsp(%rip)", *insn, *value, f"{rec}:",
                      "    movq $0, recover_rip(%rip)")
        else:
            ud = f".Lud{n}"
            self.emit("    mov %rsp, saved_krsp(%rip)", *regs,
                      "    pushq $UDS", "    pushq $user_stack_top", "    pushq $2", "    pushq $UCS",
                      f"    pushq $.Lu{n}", "    iretq", f"{rec}:", "    movq $0, recover_rip(%rip)",
                      f"    lea {ud}(%rip), %rax", "    cmp %rax, ex_rip(%rip)", f"    jne {nf}",
                      "    cmpq $6, ex_vec(%rip)", f"    jne {nf}", "    movq $0xff, ex_vec(%rip)",
                      "    movq $0, ex_err(%rip)")
            if value:
                self.emit("    mov ex_rax(%rip), %rax", "    mov ex_rdx(%rip), %rdx", *value)
            self.emit(f"{nf}:")
            self.unit.user.extend([f".Lu{n}:", *insn, f"{ud}:", "    ud2"])
        if fetch_addr is not None:
            ff = f".Lf{n}"
            self.emit(f"    movabs ${_hex(fetch_addr)}, %rax", "    cmp %rax, ex_rip(%rip)", f"    jne {ff}",
                      "    cmpq $6, ex_vec(%rip)", f"    jne {ff}", "    movq $0xff, ex_vec(%rip)",
                      "    movq $0, ex_err(%rip)", f"{ff}:")
        self.emit(*tail, "    call report")

    # -- state of the trace's CPU ----------------------------------------------------------
    @property
    def ia32e(self) -> bool:
        return bool(self.cr0 & CR0_PG and self.efer & EFER_LMA)

    def power_on(self) -> None:
        self.cr0, self.cr4, self.efer = CR0_RESET, 0, 0
        self.real_cr0, self.real_cr4, self.real_efer = self.boot_cr0, self.boot_cr4, self.boot_efer

    def guest_would_fault(self, cr0: int, cr4: int, pkrs: int) -> bool:
        """True if these values make PKS deny the guest's own pages (its IDT, stacks, GDT)."""
        if not cr4 & CR4_PKS:
            return False
        bits = (pkrs >> (2 * self.unit.key)) & 3
        return bool(bits & 1 or (bits & 2 and cr0 & CR0_WP))

    def unsurvivable(self, plan: RowPlan, cr0: int, cr4: int, pkrs: int) -> bool:
        if not self.guest_would_fault(cr0, cr4, pkrs):
            return False
        self.skip(plan, f"with these values PKS would deny key {self.unit.key}, which the guest's own "
                        "pages use: no key was free for them in this trace")
        self.poison = f"after seq {plan.row.seq}: no key was free for the guest's own pages"
        return True

    def skip(self, plan: RowPlan, reason: str) -> RowPlan:
        plan.reason = reason
        return plan

    # -- the rows ------------------------------------------------------------------------------
    def compile(self) -> Unit:
        for row in self.rows:
            plan = RowPlan(row)
            self.unit.plans.append(plan)
            if self.poison is not None:
                self.skip(plan, self.poison)
            elif row.snapshot is not None:
                self.snapshot(plan)
            else:
                self.event(plan, row.event)  # type: ignore[arg-type]
        self.unit.tables = self.guest.tables_used
        return self.unit

    def event(self, plan: RowPlan, ev: Event) -> None:
        if ev.vcpu != 0:
            return void(self.skip(plan, "only vCPU 0 runs in the guest (the second vCPU is the INIT sender)"))
        if ev.kind == "set_cpuid":
            if self.seen_cpuid:
                self.skip(plan, "CPUID changes mid-trace: QEMU's CPUID is fixed for a boot")
                self.poison = "after a mid-trace CPUID change"
                return
            self.seen_cpuid = True
            plan.decode = "boot"
            return
        if ev.level != "l1":
            return void(self.skip(plan, f"{ev.kind} at level {ev.level}: not an architectural CPU event"))
        handler = getattr(self, f"ev_{ev.kind}", None)
        if handler is None:
            return void(self.skip(plan, f"{ev.kind}: not an architectural event the guest can execute"))
        cpl = ev.cpl or 0
        if cpl in (1, 2):
            return void(self.skip(plan, "CPL1/2: the guest runs events at CPL0 or CPL3 only"))
        handler(plan, ev, cpl)

    # registers ---------------------------------------------------------------------------------
    def ev_cpuid(self, plan: RowPlan, ev: Event, cpl: int) -> None:
        if ev.cpuid_leaf != 7 or ev.cpuid_subleaf:
            return void(self.skip(plan, "only CPUID.(7,0) is enumerated the same way in QEMU and the trace"))
        if not self.cpuid_exact:
            return void(self.skip(plan, "the trace's CPUID.(7,0).ECX has bits the -cpu choice cannot give"))
        self.probe(plan, ["    mov $7, %eax", "    xor %ecx, %ecx", "    cpuid"],
                   value=["    mov %ecx, %eax", "    mov %rax, ex_val(%rip)"])
        plan.decode = "value"

    def ev_wrpkru(self, plan: RowPlan, ev: Event, cpl: int) -> None:
        v = ev.value or 0
        self.probe(plan, ["    wrpkru"], regs=[f"    mov ${_hex(v & 0xFFFFFFFF)}, %eax",
                                              f"    mov ${_hex(v >> 32)}, %edx", "    xor %ecx, %ecx"])

    def ev_rdpkru(self, plan: RowPlan, ev: Event, cpl: int) -> None:
        self.probe(plan, ["    xor %ecx, %ecx", "    rdpkru"],
                   value=["    mov %eax, %eax", "    mov %rax, ex_val(%rip)"])
        plan.decode = "value"

    def ev_invlpg(self, plan: RowPlan, ev: Event, cpl: int) -> None:
        addr = ev.addr or 0
        if not canonical(addr):
            return void(self.skip(plan, "non-canonical address"))
        self.probe(plan, ["    invlpg (%rdi)"], cpl=cpl, regs=[f"    movabs ${_hex(addr)}, %rdi"])

    def ev_mov_cr3(self, plan: RowPlan, ev: Event, cpl: int) -> None:
        # The guest reloads its own CR3: same flush, and the trace's value is not an address here.
        self.probe(plan, ["    mov %rax, %cr3"], cpl=cpl, regs=["    mov %cr3, %rax"])

    def ev_mov_cr0(self, plan: RowPlan, ev: Event, cpl: int) -> None:
        value = ev.value or 0
        if cpl == 3:
            return self.probe(plan, ["    mov %rax, %cr0"], cpl=3, regs=[f"    movabs ${_hex(value)}, %rax"])
        if value >> 32:
            self.skip(plan, "CR0 bits 63:32 are not sent (the guest could not recover from a write)")
            return
        if not value & CR0_PG or not value & CR0_PE:
            # Paging off in the trace: the guest keeps paging; the trace's accesses are skipped.
            self.skip(plan, "turns paging off: the guest always runs in IA-32e mode")
            if value & CR0_PG:
                return  # PG without PE: #GP, nothing changes
            self.cr0 = value
            self.efer &= ~EFER_LMA
            return
        was_paging = bool(self.cr0 & CR0_PG)
        if not was_paging and not (self.efer & EFER_LME and self.cr4 & CR4_PAE):
            self.skip(plan, "enables 32-bit or PAE paging: the guest runs IA-32e paging only")
            if self.efer & EFER_LME:
                return  # LME without PAE: #GP
            self.cr0 = value
            return
        if self.unsurvivable(plan, value, self.real_cr4, self.pkrs):
            return
        self.probe(plan, ["    mov %rax, %cr0"], regs=[f"    mov ${_hex(value)}, %eax"],
                   tail=["    mov %cr3, %rax", "    mov %rax, %cr3"] if not was_paging else [])
        plan.assumed = "ok"
        self.cr0 = self.real_cr0 = value
        if self.efer & EFER_LME:
            self.efer |= EFER_LMA

    def ev_mov_cr4(self, plan: RowPlan, ev: Event, cpl: int) -> None:
        value = ev.value or 0
        if cpl == 3:
            return self.probe(plan, ["    mov %rax, %cr4"], cpl=3, regs=[f"    movabs ${_hex(value)}, %rax"])
        safe = cr4_safe_bits(self.unit.cpuid_7_ecx)
        if value & ~safe:
            extra = value & ~safe
            arch_reserved = (extra & CR4_PKS and not self.unit.cpuid_7_ecx & CPUID7_ECX_PKS) or \
                (extra & CR4_PKE and not self.unit.cpuid_7_ecx & CPUID7_ECX_PKU)
            if arch_reserved and not extra & ~(CR4_PKS | CR4_PKE):
                self.skip(plan, f"CR4 {_hex(value)} sets a bit reserved for this CPUID: QEMU livelocks instead "
                                "of #GP (pks_semantics §4.5); the model alone answers it")
                return  # architecturally #GP: the trace's CPU keeps its CR4
            self.skip(plan, f"CR4 {_hex(value)} has bits {_hex(extra)} the guest does not send to QEMU")
            self.poison = f"after CR4 write {_hex(value)} that could not be sent (the trace's CR4 is then unknown)"
            return
        if self.ia32e and not value & CR4_PAE:
            self.skip(plan, "clears CR4.PAE in IA-32e mode: the guest could not recover if QEMU accepted it")
            return
        if self.unsurvivable(plan, self.real_cr0, value, self.pkrs):
            return
        self.probe(plan, ["    mov %rax, %cr4"], regs=[f"    mov ${_hex(value | CR4_PAE)}, %eax"])
        plan.assumed = "ok"
        self.cr4 = value
        self.real_cr4 = value | CR4_PAE

    def ev_wrmsr(self, plan: RowPlan, ev: Event, cpl: int) -> None:
        msr, value = ev.msr or 0, ev.value or 0
        regs = [f"    mov ${_hex(msr)}, %ecx", f"    mov ${_hex(value & 0xFFFFFFFF)}, %eax",
                f"    mov ${_hex(value >> 32)}, %edx"]
        if cpl == 3:
            return self.probe(plan, ["    wrmsr"], cpl=3, regs=regs)
        if msr not in SENDABLE_MSRS:
            return void(self.skip(plan, f"MSR {_hex(msr)} is not one the guest sends"))
        if msr == MSR_EFER:
            if value & ~EFER_SENDABLE:
                return void(self.skip(plan, "EFER value with bits the guest does not send"))
            if self.cr0 & CR0_PG and (value ^ self.efer) & EFER_LME:
                return void(self.skip(plan, "changes EFER.LME with paging on (#GP): the guest keeps long mode"))
            if not self.cr0 & CR0_PG and not value & EFER_LME and self.efer & EFER_LME:
                pass  # the trace leaves LME; the guest keeps it (paging is off in the trace, no effect)
            regs[1] = f"    mov ${_hex((value | EFER_LME) & 0xFFFFFFFF)}, %eax"
            self.probe(plan, ["    wrmsr"], regs=regs)
            plan.assumed = "ok"
            self.efer = (value & (EFER_SCE | EFER_LME | EFER_NXE)) | (self.efer & EFER_LMA)
            self.real_efer = (value & (EFER_SCE | EFER_NXE)) | EFER_LME | EFER_LMA
            return
        if msr == MSR_IA32_PKRS and not value >> 32:
            if self.unsurvivable(plan, self.real_cr0, self.real_cr4, value):
                return
            self.pkrs = value
        self.probe(plan, ["    wrmsr"], regs=regs)

    def ev_rdmsr(self, plan: RowPlan, ev: Event, cpl: int) -> None:
        msr = ev.msr or 0
        value = ["    shl $32, %rdx", "    mov %eax, %eax", "    or %rdx, %rax", "    mov %rax, ex_val(%rip)"]
        regs = [f"    mov ${_hex(msr)}, %ecx"]
        if cpl == 3:
            self.probe(plan, ["    rdmsr"], cpl=3, regs=regs, value=value)
        elif msr not in SENDABLE_MSRS:
            return void(self.skip(plan, f"MSR {_hex(msr)} is not one the guest sends"))
        elif msr == MSR_EFER and not self.ia32e:
            return void(self.skip(plan, "EFER read while the trace is not in IA-32e mode (the guest is)"))
        else:
            self.probe(plan, ["    rdmsr"], regs=regs, value=value)
        plan.decode = "value"

    # lifecycle -----------------------------------------------------------------------------------
    def ev_reset(self, plan: RowPlan, ev: Event, cpl: int) -> None:
        self.emit(*reset_code(self.phase_base + len(self.unit.phases), fresh=False))
        plan.phase = self.start_phase()
        plan.decode = "phase"
        self.power_on()
        self.pkrs = 0

    def ev_init(self, plan: RowPlan, ev: Event, cpl: int) -> None:
        phase = self.phase_base + len(self.unit.phases)
        self.emit("    movabs $WCB, %rdx", f"    movl ${phase}, 8(%rdx)", "    movl $1, 20(%rdx)", "    jmp ap_park")
        plan.phase = self.start_phase()
        plan.decode = "phase"
        self.power_on()

    # memory --------------------------------------------------------------------------------------
    def ev_map(self, plan: RowPlan, ev: Event, cpl: int) -> None:
        size = ev.page_size or "4k"
        base = (ev.addr or 0) & ~(PAGE_BYTES[size] - 1)
        page = Page(bool(ev.present), size, ev.writable is not False, bool(ev.user), ev.user_upper is not False,
                    bool(ev.rsvd), bool(ev.nx), ev.key or 0)
        self.trace_pages.map(base, page)
        if not canonical(base) or in_guest_region(base, PAGE_BYTES[size]):
            return void(self.skip(plan, "the page overlaps the guest's own address range"))
        writes = self.guest.map(base, page)
        if writes is None:
            return void(self.skip(plan, "needs U/S=0 in an upper entry the guest's own pages share"))
        if size == "1g":
            self.unit.uses_1g = True
        code = []
        for addr, value in writes:
            code += [f"    movabs ${_hex(value)}, %rax", f"    movabs ${_hex(window(addr))}, %rdx",
                     "    mov %rax, (%rdx)"]
        self.probe(plan, code)

    def ev_access(self, plan: RowPlan, ev: Event, cpl: int) -> None:
        addr, kind = ev.addr or 0, ev.access or "read"
        if not self.ia32e:
            return void(self.skip(plan, "the trace is not in IA-32e paging here; the guest always is"))
        if not canonical(addr) or in_guest_region(addr & ~0xFFF, 0x1000):
            return void(self.skip(plan, "address in the guest's own range or non-canonical"))
        want = self.trace_pages.lookup(addr)
        have = self.guest.walk(addr)
        if not same_page(want, have):
            return void(self.skip(plan, "the guest's paging structures cannot give this page the trace's "
                                        "attributes (an upper entry is shared with another page)"))
        alias = alias_of(addr, have.page_size) if have.present else None
        room = PAGE_BYTES[have.page_size] - (addr & (PAGE_BYTES[have.page_size] - 1))
        setup: list[str] = []
        regs = [f"    movabs ${_hex(addr)}, %rdi"]
        tail: list[str] = []
        fetch_addr = None
        if kind == "read":
            insn = ["    movb (%rdi), %al"]
        elif kind == "write":
            insn = ["    movb %al, (%rdi)"]
            # write back the byte that is there, so the guest's frames keep their content
            regs.append(f"    movabs ${_hex(alias)}, %rax" if alias is not None else "    xor %eax, %eax")
            if alias is not None:
                regs.append("    movb (%rax), %al")
        elif kind == "rmw":
            insn = ["    addb $0, (%rdi)"]
        elif kind == "fetch":
            if room < 2:
                return void(self.skip(plan, "fetch at the last byte of a page"))
            if alias is not None:
                setup = [f"    movabs ${_hex(alias)}, %rax", f"    movw ${UD2:#x}, (%rax)"]
            insn = ["    jmp *%rdi"]
            fetch_addr = addr
        elif kind in ("implicit", "implicit_write"):
            if room < 8:
                return void(self.skip(plan, "descriptor would cross the page"))
            desc = DESC_ACCESSED if kind == "implicit" else DESC_NOT_ACCESSED
            if alias is not None:
                setup = [f"    movabs ${_hex(alias)}, %rax", f"    movabs ${_hex(desc)}, %rdx", "    mov %rdx, (%rax)"]
            lo = 0xFFFF | ((addr & 0xFFFFFF) << 16) | (0x82 << 40) | (((addr >> 24) & 0xFF) << 56)
            hi = addr >> 32
            setup += [f"    movabs ${_hex(lo)}, %rax", "    mov %rax, gdt + 0x40(%rip)",
                      f"    movabs ${_hex(hi)}, %rax", "    mov %rax, gdt + 0x48(%rip)",
                      f"    mov ${LDT_SELECTOR:#x}, %ax", "    lldt %ax"]
            regs.append(f"    mov ${LDT_DATA_SELECTOR:#x}, %eax")
            insn = ["    mov %ax, %ds"]
            tail = ["    xor %eax, %eax", "    mov %ax, %ds"]
            if kind == "implicit_write":
                plan.implicit_write_addr = addr + 4
        else:
            return void(self.skip(plan, f"access kind {kind}"))
        self.probe(plan, insn, cpl=cpl, setup=setup, regs=regs, fetch_addr=fetch_addr, tail=tail)

    ev_emu_access = ev_access

    # snapshots -----------------------------------------------------------------------------------
    def snapshot(self, plan: RowPlan) -> None:
        snap = plan.row.snapshot
        assert snap is not None
        plan.decode = "snapshot"
        name = snap.path.split(".", 1)[1] if snap.path.startswith("vcpu0.") else None
        read_rax = ["    mov %rax, ex_val(%rip)"]
        if name == "pkrs":
            self.probe(plan, ["    mov $0x6e1, %ecx", "    rdmsr", "    shl $32, %rdx", "    mov %eax, %eax",
                              "    or %rdx, %rax"], value=read_rax)
        elif name == "pkru" and self.cr4 & CR4_PKE:
            self.probe(plan, ["    xor %ecx, %ecx", "    rdpkru", "    mov %eax, %eax"], value=read_rax)
        elif (name == "cr0" and self.cr0 == self.real_cr0) or (name == "cr4" and self.cr4 == self.real_cr4):
            self.probe(plan, [f"    mov %{name}, %rax"], value=read_rax)
        elif name == "efer" and self.efer == self.real_efer:
            self.probe(plan, ["    mov $0xc0000080, %ecx", "    rdmsr", "    shl $32, %rdx", "    mov %eax, %eax",
                              "    or %rdx, %rax"], value=read_rax)
        elif name == "cpuid.7.ecx" and self.cpuid_exact:
            self.probe(plan, ["    mov $7, %eax", "    xor %ecx, %ecx", "    cpuid", "    mov %ecx, %eax",
                              "    and $~0x10, %eax"], value=read_rax)
        else:
            self.skip(plan, f"snapshot {snap.path} is not state the guest can read here")


def void(_: object) -> None:
    """Discard a value (lets a handler ``return void(self.skip(...))`` in one line)."""
    return None


def reset_code(phase: int, *, fresh: bool) -> list[str]:
    """RESET through port 0xCF9, resuming at ``phase`` (``fresh``: with cleared trace tables)."""
    return ["    movabs $WCB, %rdx", f"    movl ${phase}, 8(%rdx)", f"    movl ${int(fresh)}, 12(%rdx)",
            "    movl $1, 16(%rdx)", "    mov $0xcf9, %dx", "    mov $0x06, %al", "    out %al, %dx",
            "    jmp ap_park"]


def compile_unit(name: str, rows: Sequence[TraceRow], *, first_probe: int = 0, prefix: str = "u",
                 first_phase: int = 0) -> Unit:
    """Compile one trace's rows into a :class:`Unit` (probe ids from ``first_probe``), with the
    first key for the guest's own pages that lets the whole trace run."""
    first: Unit | None = None
    for key in keys_by_preference(rows):
        unit = _Compiler(name, rows, first_probe, prefix, key, first_phase).compile()
        first = first or unit
        if not any("no key was free" in (p.reason or "") for p in unit.plans):
            return unit
    assert first is not None
    return first
