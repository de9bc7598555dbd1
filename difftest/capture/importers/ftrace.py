"""``difftest import ftrace``: tracefs ``trace``/``trace_pipe`` text or ``trace-cmd report`` output -> trace.

Every kvm and kvmmmu tracepoint of the kernel is either turned into compared rows, used as context,
or classified with the reason it cannot be compared (:mod:`.tracepoints`); the import counts each.
What a line says about an outcome becomes the row's expectation, so replaying the import asks
"would the model have done what this kernel did?":

* kvm_msr -> wrmsr/rdmsr (``(#GP)`` -> gp; a read states its value); a #GP may be a filter's
  denial, which tracefs does not show: such rows are listed as depending on setup not captured.
* kvm_mmu_pagetable_walk + its kvm_mmu_paging_element lines + kvm_mmu_walker_error (or none: the
  walk succeeded) -> one ``map`` row (the leaf's P, R/W, U/S, NX, key; uncompared) and one
  ``emu_access`` with the kernel's result and PFEC; the #PF injection that follows folds into it.
* kvm_cr writes -> mov_crN (#GP if a kvm_inj_exception #GP follows); kvm_cpuid -> cpuid (leaf 7.0
  ECX compared; the first answer per vCPU is also the CPUID table, an inferred ``set_cpuid``);
  kvm_exit -> vm_exit; kvm_nested_vmexit_inject -> nested_exit; a failed RDPKRU emulation followed
  by KVM_EXIT_INTERNAL_ERROR -> rdpkru internal_error.
* A walk's paging levels imply the paging mode: an inferred, uncompared ``set_sregs`` per vCPU.
  CR0.WP, CR4.SMEP/SMAP/PKE/PKS, EFER.NXE, PKRU/PKRS and MSR filters are not in any line: the rows
  whose outcome depends on them are named in metadata ``capture.setup_unknown`` (see
  :mod:`difftest.verdict.capture_gaps`).
* vCPU ids come from the lines' own fields (kvm_entry/kvm_exit/kvm_page_fault) or the recorder's
  ``pksdt vcpu N`` markers, never from thread order; rows of a thread that never names its vCPU
  are vCPU 0 and counted.

Messages of the compared events are parsed strictly: a message that does not match is a malformed
line (InputError naming the line, or counted and skipped with ``skip_bad``).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from difftest.errors import InputError
from difftest.progress import advance as advance_progress
from difftest.verdict.capture_gaps import RUN_DEPENDENT_MSRS, SETUP_KEY, format_setup_unknown
from reference_model.host import DEFAULT_HOST, HOST_FEATURES, parse_features
from reference_model.registers import (
    COUNTER_MSRS,
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    EFER_LMA,
    EFER_LME,
    MSR_EFER,
    MSR_IA32_PKRS,
    PF_ID,
    PF_U,
    PF_W,
    PLAIN_MSRS,
)

from .exit_reasons import EXCEPTION_VECTORS, KVM_EXIT_BY_NAME, SVM_BY_NAME, VMX_BY_NAME
from .text_lines import numbered_lines
from .tracepoints import (
    CLASSIFIED,
    COMPARED,
    CONTEXT,
    OTHER_USERSPACE_EXIT,
    USERSPACE_EXIT_REASONS,
    disposition,
)

# A line is "COMM-PID [CPU] FLAGS TIMESTAMP: EVENT: MESSAGE"; COMM may hold blanks and dashes.  One
# pattern anchored at the start (a lazy COMM before "-PID") backtracked quadratically: 64,000 blanks
# took 37 s.  So the head "-PID [CPU]" is searched for (each try is bounded by the digit and blank
# runs after one dash, and those do not overlap), and the rest is matched from its end, in linear time.
HEAD = re.compile(r"-(?P<pid>\d+)\s+(?:\(\s*[\d-]+\)\s+)?\[(?P<cpu>\d+)\]")
TAIL = re.compile(r"\s+(?:(?P<flags>[.a-zA-Z0-9]{4,5})\s+)?(?P<ts>\d+\.\d+):\s+(?P<event>\w+):[ \t]*(?P<msg>.*)\Z",
                  re.DOTALL)


@dataclass(frozen=True)
class LineMatch:
    """The fields of a trace line (what the one pattern's groups were)."""

    comm: str
    pid: str
    cpu: str
    flags: str | None
    ts: str
    event: str
    msg: str

    def group(self, name: str) -> Any:
        return getattr(self, name)


def match_line(line: str) -> LineMatch | None:
    """The fields of a trace line, or None; linear in the line's length."""
    for head in HEAD.finditer(line):
        tail = TAIL.match(line, head.end())
        if tail is not None:
            return LineMatch(line[: head.start()].lstrip(), head.group("pid"), head.group("cpu"), tail.group("flags"),
                             tail.group("ts"), tail.group("event"), tail.group("msg"))
    return None


MAX_LINE = 65_536  # characters; a tracepoint line is a few hundred, anything longer is not one
SHOW_SKIPPED = 5  # skipped lines named on stderr (all are counted)
MAX_DIGITS = 20  # a decimal pid, vCPU or count longer than this is no kernel's (and int() refuses > 4300)
IGNORED = re.compile(r"^\s*(?:#.*|cpus=\d+|version = .*|CPU \d+ is empty|)$")
LOST = re.compile(r"^\s*CPU:(\d+) \[LOST (\d+) EVENTS\]\s*$")

_HEX = r"[0-9a-f]+"
MSG = {
    "kvm_msr": re.compile(rf"^msr_(?P<rw>read|write) (?P<msr>{_HEX}) = 0x(?P<val>{_HEX})(?P<gp> \(#GP\))?$"),
    "kvm_cr": re.compile(rf"^cr_(?P<rw>read|write) (?P<cr>{_HEX}) = 0x(?P<val>{_HEX})$"),
    "kvm_exit": re.compile(rf"^vcpu (?P<vcpu>\d+) reason (?P<reason>[\w-]+)(?P<failed> FAILED_VMENTRY)? rip 0x(?P<rip>{_HEX})"
                           rf" info1 0x{_HEX} info2 0x{_HEX}(?: intr_info 0x{_HEX} error_code 0x{_HEX})?"
                           rf"(?: requests 0x{_HEX})?$"),
    "kvm_entry": re.compile(rf"^vcpu (?P<vcpu>\d+), rip 0x(?P<rip>{_HEX})(?: intr_info 0x{_HEX} error_code 0x{_HEX})?"
                            r"(?:\[immediate exit\])?$"),
    # tracefs: "#GP (0x0)"; trace-cmd report (libtraceevent cannot parse this print fmt): raw fields, decimal
    "kvm_inj_exception": re.compile(rf"^(?:#(?P<vec>[A-Z]{{2}})(?: \((?P<err>0x{_HEX})\))?(?P<re> \[reinjected\])?"
                                    r"|\[FAILED TO PARSE\] exception=(?P<vecnum>\d{1,3}) has_error=(?P<has>[01]) "
                                    r"error_code=(?P<errnum>\d{1,10}|0x[0-9a-f]{1,8}) reinjected=(?P<renum>[01]))$"),
    "kvm_userspace_exit": re.compile(r"^reason (?P<name>[A-Z0-9_]+|restart|error) \((?P<num>-?\d+)\)$"),
    "kvm_nested_vmenter": re.compile(rf"^rip: 0x{_HEX} (?:vmcs|vmcb): 0x{_HEX} nested_rip: 0x{_HEX}.*$"),
    "kvm_nested_vmexit": re.compile(rf"^vcpu (?P<vcpu>\d+) reason (?P<reason>[\w-]+)(?: FAILED_VMENTRY)? rip 0x{_HEX}.*$"),
    "kvm_nested_vmexit_inject": re.compile(r"^reason: (?P<reason>[\w-]+)(?: FAILED_VMENTRY)? ext_inf1: 0x[0-9a-f]+.*$"),
    # tracefs: "0:101c:0f 30 (prot64) failed"; trace-cmd report's kvm plugin: "0:101c: 0f 30 FAIL"
    "kvm_emulate_insn": re.compile(rf"^(?P<cs>{_HEX}):(?P<rip>{_HEX}):(?P<bytes>(?: ?[0-9a-f]{{2}})*) ?"
                                   r"(?:\((?P<mode>real|vm16|prot16|prot32|prot64)\))?(?P<failed> failed| FAIL)?$"),
    "kvm_cpuid": re.compile(rf"^func (?P<func>{_HEX}) idx (?P<idx>{_HEX}) rax (?P<rax>{_HEX}) rbx (?P<rbx>{_HEX}) "
                            rf"rcx (?P<rcx>{_HEX}) rdx (?P<rdx>{_HEX}), cpuid entry (?:found|not found)(?:, used max basic)?$"),
    "kvm_mmu_pagetable_walk": re.compile(rf"^addr (?P<addr>{_HEX}) pferr (?P<pferr>{_HEX})(?: [A-Z|]*)?$"),
    "kvm_mmu_paging_element": re.compile(rf"^pte (?P<pte>{_HEX}) level (?P<level>[1-5])$"),
    "kvm_mmu_walker_error": re.compile(rf"^pferr (?P<pferr>{_HEX})(?: [A-Z|]*)?$"),
    "kvm_page_fault": re.compile(rf"^vcpu (?P<vcpu>\d+) rip 0x{_HEX} address 0x{_HEX} error_code 0x{_HEX}$"),
    "kvm_pio": re.compile(rf"^pio_(?P<rw>read|write) at 0x(?P<port>{_HEX}) size (?P<size>\d+) count (?P<count>\d+) "
                          rf"val 0x(?P<val>{_HEX})(?: \(\.\.\.\))?$"),
}
INSNS = {"0f 30": "wrmsr", "0f 32": "rdmsr", "0f 22": "mov to cr", "0f 20": "mov from cr", "0f 01 ee": "rdpkru",
         "0f 01 ef": "wrpkru", "0f a2": "cpuid", "f4": "hlt"}
CR_KIND = {0: "mov_cr0", 3: "mov_cr3", 4: "mov_cr4"}
VCPU_MAX = 0xFFFF  # the trace's vcpu column is uint16


@dataclass
class Parsed:
    lineno: int
    pid: int
    ts: str
    event: str
    msg: str
    m: re.Match[str] | None


@dataclass
class ImportResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    events: Counter[str] = field(default_factory=Counter)
    skipped: list[int] = field(default_factory=list)
    skip_reasons: list[str] = field(default_factory=list)  # the first few skipped lines' problems
    lost: int = 0
    fmt: str = "tracefs"
    uses: Counter[tuple[str, str]] = field(default_factory=Counter)  # (tracepoint, how) -> lines
    reasons: dict[tuple[str, str], str] = field(default_factory=dict)
    msr_classes: Counter[str] = field(default_factory=Counter)
    inferred: Counter[str] = field(default_factory=Counter)  # setup rows the capture implies
    setup_unknown: dict[int, str] = field(default_factory=dict)  # seq -> setup its outcome needs, not captured
    vcpu_unknown: int = 0
    walks_without_entries: int = 0

    def compared(self) -> int:
        return sum(1 for r in self.rows if r.get("exp_result"))


def parse_lines(lines: Iterable[tuple[int, str, bool]], path: str, skip_bad: bool, res: ImportResult) -> list[Parsed]:
    """Parse numbered lines (:func:`~difftest.importers.text_lines.numbered_lines`)."""
    out: list[Parsed] = []
    for n, line, cut in lines:
        advance_progress(len(line) + 1, unit="bytes")
        if not cut and IGNORED.match(line):
            if line.startswith(("cpus=", "version =")):
                res.fmt = "trace-cmd report"
            continue
        lost = None if cut else LOST.match(line)
        if lost and len(lost.group(2)) <= MAX_DIGITS:
            res.lost += int(lost.group(2))
            continue
        m = None if cut else match_line(line)
        problem = None
        sub = None
        msg = ""
        if cut:
            problem = f"line longer than {MAX_LINE} characters (not a tracepoint line)"
        elif m is None:
            problem = "not a trace line (expected COMM-PID [CPU] FLAGS TIMESTAMP: EVENT: MESSAGE)"
        elif len(m.pid) > MAX_DIGITS:
            problem = f"pid {m.pid[:30]}... is too large"
        else:
            ev = m.event
            msg = m.msg.rstrip()
            rx = MSG.get(ev)
            if rx is not None:
                sub = rx.match(msg)
                if sub is None:
                    problem = f"malformed {ev} message {msg[:80]!r}"
                elif "vcpu" in rx.groupindex and len(sub.group("vcpu")) > 5:
                    problem = f"vcpu {sub.group('vcpu')[:30]} is too large"
        if problem:
            if skip_bad:
                res.skipped.append(n)
                if len(res.skip_reasons) < SHOW_SKIPPED:
                    res.skip_reasons.append(f"line {n}: {problem}")
                continue
            raise InputError(path, problem, line=n)
        assert m is not None
        if m.flags is None:
            res.fmt = "trace-cmd report"
        out.append(Parsed(n, int(m.pid), m.ts, m.event, msg, sub))
    return out




def _decode_insn(hexbytes: str) -> str:
    b = hexbytes.strip()
    for prefix in sorted(INSNS, key=len, reverse=True):
        if b.startswith(prefix):
            return INSNS[prefix]
    return "insn"


MODELLED_MSRS = frozenset(PLAIN_MSRS | COUNTER_MSRS | {MSR_IA32_PKRS, MSR_EFER})
RUN_CONTEXT_VCPU = ("kvm_entry", "kvm_exit", "kvm_page_fault", "kvm_nested_vmexit")  # lines with a vcpu field
VCPU_MARK = re.compile(r"^pksdt vcpu (\d{1,5})$")  # written by `difftest record kvm` when it switches vCPU
PTE_PHYS_HIGH = ((1 << 52) - 1) & ~((1 << 36) - 1)  # bits 51:36: reserved or not, by the guest's MAXPHYADDR
PAGE_BY_LEVEL = {1: "4k", 2: "2m", 3: "1g"}


@dataclass
class Walk:
    """One emulated page walk of a thread: kvm_mmu_pagetable_walk and its kvm_mmu_paging_element lines."""

    p: Parsed
    addr: int
    pferr: int
    elems: list[tuple[int, int]] = field(default_factory=list)  # (pte, level), top level first


@dataclass
class Thread:
    vcpu: int | None = None
    level: str = "l1"
    walk: Walk | None = None
    fault_row: dict[str, Any] | None = None  # last gp/pf row an injected exception may belong to
    pending_cr: dict[str, Any] | None = None
    insn: str = ""  # the last kvm_emulate_insn, for the notes of the rows it causes
    failed_rdpkru: Parsed | None = None


class Converter:
    """Parsed tracepoint lines -> rows, classification counts and the setup the capture implies."""

    def __init__(self, res: ImportResult, path: str, host_features: frozenset[str]) -> None:
        self.res = res
        self.path = path
        self.host_features = host_features
        self.threads: dict[int, Thread] = {}
        self.modes: dict[int, int] = {}  # vcpu -> paging levels of the setup row emitted for it
        self.cpuid_set: set[int] = set()
        self.maps: dict[tuple[int, int], tuple[Any, ...]] = {}  # (vcpu, base) -> the mapping's fields
        self.known_cr: dict[tuple[int, int], int] = {}  # (vcpu, cr) -> value written (kvm_cr)
        self.traced_inj = False

    # -- bookkeeping ---------------------------------------------------------------------
    def use(self, p: Parsed, how: str, reason: str) -> None:
        self.res.uses[(p.event, how)] += 1
        self.res.reasons.setdefault((p.event, how), reason)

    def thread(self, pid: int) -> Thread:
        t = self.threads.get(pid)
        if t is None:
            t = self.threads[pid] = Thread()
        return t

    def add(self, p: Parsed, kind: str, note: str | None = None, lvl: str | None = None,
            **fields: Any) -> dict[str, Any]:
        t = self.thread(p.pid)
        if t.vcpu is None:
            self.res.vcpu_unknown += 1
        row = {"seq": len(self.res.rows), "kind": kind, "vcpu": t.vcpu or 0, "level": lvl or t.level, **fields}
        row["note"] = f"line {p.lineno} @{p.ts} pid {p.pid}" + (f": {note}" if note else "")
        self.res.rows.append(row)
        return row

    def hexfield(self, p: Parsed, group: str, bits: int) -> int:
        assert p.m is not None
        text = p.m.group(group)
        value = int(text, 16)
        if value >> bits:
            raise InputError(self.path, f"{p.event} {group} 0x{text[:24]}... does not fit in {bits} bits", line=p.lineno)
        return value

    def needs(self, row: dict[str, Any], what: list[str]) -> None:
        if what:
            self.res.setup_unknown[row["seq"]] = ",".join(what)

    # -- the walk ------------------------------------------------------------------------
    def close_walk(self, t: Thread, error: Parsed | None) -> None:
        w, t.walk = t.walk, None
        if w is None:
            return
        if not w.elems:
            self.res.walks_without_entries += 1
            return
        vcpu = t.vcpu or 0
        levels = w.elems[0][1]
        top_pte, leaf_pte, leaf_level = w.elems[0][0], w.elems[-1][0], w.elems[-1][1]
        present = all(pte & 1 for pte, _ in w.elems)
        is_leaf = leaf_level == 1 or bool(leaf_pte & 0x80)
        size = PAGE_BY_LEVEL.get(leaf_level, "4k") if present and is_leaf and levels >= 3 else "4k"
        writable = all(pte & 2 for pte, _ in w.elems)
        user = bool(leaf_pte & 4)
        user_upper = all(pte & 4 for pte, _ in w.elems[:-1])
        nx = any(pte >> 63 for pte, _ in w.elems) and levels >= 3
        key = (leaf_pte >> 59) & 0xF if present and is_leaf and levels >= 4 else 0
        rsvd = bool(levels >= 4 and top_pte & 0x80)  # PS in a PML4E
        if present and is_leaf and leaf_level == 2:
            rsvd |= bool(leaf_pte & 0x1FE000)  # 2 MiB leaf: bits 20:13
        if present and is_leaf and leaf_level == 3:
            rsvd |= bool(leaf_pte & 0x3FFFE000)  # 1 GiB leaf: bits 29:13
        base = w.addr & ~((1 << {"4k": 12, "2m": 21, "1g": 30}[size]) - 1)
        access = "fetch" if w.pferr & PF_ID else "write" if w.pferr & PF_W else "read"
        cpl = 3 if w.pferr & PF_U else 0
        p = w.p
        if self.modes.get(vcpu) != levels:
            self.modes[vcpu] = levels
            self.setup_row(p, levels)
        fields = (base, size, present, writable, user, user_upper, rsvd, nx, key)
        if self.maps.get((vcpu, base)) != fields:
            self.maps[(vcpu, base)] = fields
            self.add(p, "map", "inferred from the walk's kvm_mmu_paging_element lines: "
                     + " ".join(f"L{lvl}={pte:#x}" for pte, lvl in w.elems),
                     addr=base, page_size=size, present=present, writable=writable, user=user,
                     user_upper=user_upper, rsvd=rsvd, nx=nx, key=key)
        note = f"walk {p.msg}" + (f" -> kvm_mmu_walker_error {error.msg}" if error else " -> ok") + (
            f"; insn {t.insn}" if t.insn else "")
        if error is not None:
            pfec = self.hexfield(error, "pferr", 32)
            row = self.add(p, "emu_access", note, addr=w.addr, access=access, cpl=cpl, exp_result="pf",
                           exp_pfec=pfec, exp_cr2=w.addr)
            t.fault_row = row
        else:
            row = self.add(p, "emu_access", note, addr=w.addr, access=access, cpl=cpl, exp_result="ok")
        what = []
        if present and is_leaf:
            user_addr = user and user_upper
            if cpl < 3 and access == "write" and not writable and not self.cr_known(vcpu, 0, CR0_WP):
                what.append("CR0.WP")
            if cpl < 3 and access == "fetch" and user_addr:
                what.append("CR4.SMEP")
            if cpl < 3 and access != "fetch" and user_addr:
                what.append("CR4.SMAP/EFLAGS.AC")
            if levels >= 4 and access != "fetch" and user_addr:
                what.append("CR4.PKE/PKRU")
            if levels >= 4 and access != "fetch" and not user_addr and "pks" in self.host_features:
                what.append("CR4.PKS/PKRS")
        if nx:
            what.append("EFER.NXE")
        if any(pte & PTE_PHYS_HIGH for pte, _ in w.elems):
            what.append("guest MAXPHYADDR")
        if levels == 5:
            what.append("CR4.LA57 (5-level paging)")
        self.needs(row, what)

    def cr_known(self, vcpu: int, cr: int, bit: int) -> bool:
        return (vcpu, cr) in self.known_cr

    def setup_row(self, p: Parsed, levels: int) -> None:
        """The paging mode a walk with ``levels`` levels implies, as an uncompared KVM_SET_SREGS row."""
        cr0, cr4, efer = CR0_PE | CR0_PG, 0, 0
        if levels >= 3:
            cr4 |= CR4_PAE
        if levels >= 4:
            efer |= EFER_LME | EFER_LMA
        vcpu = self.thread(p.pid).vcpu or 0
        cr0 = self.known_cr.get((vcpu, 0), cr0)
        cr4 = self.known_cr.get((vcpu, 4), cr4)
        self.add(p, "set_sregs", f"inferred setup: a {levels}-level walk means CR0.PG=1"
                 + (", CR4.PAE=1" if levels >= 3 else "") + (", EFER.LMA=1" if levels >= 4 else "")
                 + "; CR0.WP, CR4.SMEP/SMAP/PKE/PKS and EFER.NXE are not in the capture: taken as 0",
                 lvl="host", cr0=cr0, cr4=cr4, efer=efer)
        self.res.inferred[f"paging mode ({levels}-level walks)"] += 1

    # -- the lines -----------------------------------------------------------------------
    def line(self, p: Parsed) -> None:
        self.res.events[p.event] += 1
        t = self.thread(p.pid)
        ev, m = p.event, p.m
        if ev == "kvm_mmu_paging_element" and m is not None:
            if t.walk is None:
                self.use(p, "classified", "a paging element without its kvm_mmu_pagetable_walk line (capture began mid-walk)")
            else:
                t.walk.elems.append((self.hexfield(p, "pte", 64), int(m.group("level"))))
                self.use(p, "compared", COMPARED[ev])
            return
        if ev == "kvm_mmu_walker_error" and m is not None:
            if t.walk is None:
                self.use(p, "classified", "a walker error without its kvm_mmu_pagetable_walk line")
            else:
                self.use(p, "compared", COMPARED[ev])
                self.close_walk(t, p)
            return
        if ev in ("kvm_mmu_set_accessed_bit", "kvm_mmu_set_dirty_bit"):
            self.use(p, "classified", CLASSIFIED[ev])  # part of a walk that succeeded: closed below
        self.close_walk(t, None)
        if ev in RUN_CONTEXT_VCPU and m is not None:
            t.vcpu = int(m.group("vcpu"))
        if ev == "kvm_inj_exception" and m is not None:
            self.injection(p, t)
            return
        if ev.startswith("kvm_") and ev not in ("kvm_entry", "kvm_userspace_exit", "kvm_pio", "kvm_emulate_insn",
                                                "kvm_fpu"):
            self.settle_cr(t)
        if ev not in ("kvm_fpu", "kvm_mmu_set_accessed_bit", "kvm_mmu_set_dirty_bit"):
            t.fault_row = None
        if ev == "kvm_msr" and m is not None:
            self.msr(p, t)
        elif ev == "kvm_mmu_pagetable_walk" and m is not None:
            t.walk = Walk(p, self.hexfield(p, "addr", 64), self.hexfield(p, "pferr", 32))
            self.use(p, "compared", COMPARED[ev])
        elif ev == "kvm_cr" and m is not None:
            cr, val = int(m.group("cr"), 16), self.hexfield(p, "val", 64)
            if m.group("rw") == "write" and cr in CR_KIND:
                t.pending_cr = self.add(p, CR_KIND[cr], p.msg, value=val)
                self.known_cr[(t.vcpu or 0, cr)] = val
                self.use(p, "compared", COMPARED[ev])
            else:
                self.use(p, "classified", "CR read or a CR the model has no register for (CR2/CR8): nothing to judge")
        elif ev == "kvm_cpuid" and m is not None:
            self.cpuid(p, t)
        elif ev == "kvm_exit" and m is not None:
            self.vm_exit(p)
        elif ev == "kvm_nested_vmenter":
            self.use(p, "context", CONTEXT[ev])
            t.level = "l2"
        elif ev == "kvm_nested_vmexit_inject" and m is not None:
            name = m.group("reason")
            if name in VMX_BY_NAME:
                self.add(p, "nested_exit", f"reflected to L1: {name}", lvl="l2", reason=VMX_BY_NAME[name])
                self.use(p, "compared", COMPARED[ev])
            else:
                self.use(p, "classified", "SVM nested exit: the model's nested exits are VMX reasons")
            t.level = "l1"
        elif ev == "kvm_userspace_exit" and m is not None:
            self.userspace_exit(p, t)
        elif ev == "kvm_emulate_insn" and m is not None:
            name = _decode_insn(m.group("bytes"))
            t.insn = f"{name} ({m.group('bytes').strip()}) at {m.group('cs')}:{m.group('rip')} {m.group('mode') or ''}" + (
                " failed" if m.group("failed") else "")
            t.failed_rdpkru = p if name == "rdpkru" and m.group("failed") else None
            self.use(p, "context", CONTEXT[ev])
        elif ev == "tracing_mark_write":
            mark = VCPU_MARK.match(p.msg)
            if mark:
                t.vcpu = int(mark.group(1))
                self.use(p, "context", "vCPU switch written by the recorder")
            else:
                self.add(p, "foreign", f"marker: {p.msg}")
                self.use(p, "context", "a userspace marker, kept as an uncompared row")
        elif ev in ("kvm_mmu_set_accessed_bit", "kvm_mmu_set_dirty_bit"):
            pass
        else:
            how, reason = disposition(ev)
            if how == "unclassified" and not ev.startswith("kvm"):
                reason = "not a kvm tracepoint"
            self.use(p, how if how != "compared" else "classified", reason)

    def injection(self, p: Parsed, t: Thread) -> None:
        assert p.m is not None
        vec, err, re_inj = p.m.group("vec"), p.m.group("err"), p.m.group("re")
        if vec is None:  # trace-cmd report's raw fields
            vec = EXCEPTION_VECTORS.get(int(p.m.group("vecnum")), p.m.group("vecnum"))
            raw = p.m.group("errnum")
            err = hex(int(raw, 0)) if p.m.group("has") == "1" else None
            re_inj = p.m.group("renum") == "1" or None
        cr = t.pending_cr
        t.pending_cr = None
        if vec == "GP" and not re_inj and cr is not None:
            cr["exp_result"] = "gp"
            cr["note"] += f"; line {p.lineno}: {p.msg}"
            self.use(p, "compared", "folded into the kvm_cr write it faults")
            return
        if cr is not None:
            cr["exp_result"] = "ok"
        row, t.fault_row = t.fault_row, None
        want = {"GP": "gp", "PF": "pf"}.get(vec)
        if row is not None and not re_inj and want == row.get("exp_result"):
            if want == "pf" and err is not None and int(err, 16) != row.get("exp_pfec"):
                row["note"] += f"; line {p.lineno}: injected {p.msg} (error code differs from the walk's)"
            else:
                row["note"] += f"; line {p.lineno}: {p.msg}"
            self.use(p, "compared", f"folded into the faulting row (#{vec})")
            return
        self.use(p, "classified", "an injected exception whose cause has no traced line (e.g. MOV CR on a backend "
                 "without kvm_cr; the model would need the instruction and its operands)" + (
                     "; last emulated insn " + t.insn.split(" ")[0] if t.insn else ""))

    def settle_cr(self, t: Thread) -> None:
        row, t.pending_cr = t.pending_cr, None
        if row is not None and self.traced_inj:
            row["exp_result"] = "ok"

    def msr(self, p: Parsed, t: Thread) -> None:
        assert p.m is not None
        msr, val = self.hexfield(p, "msr", 32), self.hexfield(p, "val", 64)
        gp = bool(p.m.group("gp"))
        note = p.msg + (f"; insn {t.insn}" if t.insn else "")
        if p.m.group("rw") == "write":
            row = self.add(p, "wrmsr", note, msr=msr, value=val, exp_result="gp" if gp else "ok")
        elif gp:
            row = self.add(p, "rdmsr", note, msr=msr, exp_result="gp")
        else:
            row = self.add(p, "rdmsr", note, msr=msr, exp_result="ok", exp_value=val)
        if gp:
            t.fault_row = row
            # a filter set by userspace denies silently as far as tracefs goes
            self.needs(row, ["MSR filter"])
        name = f"{msr:#x}" + (f" {RUN_DEPENDENT_MSRS[msr]}" if msr in RUN_DEPENDENT_MSRS else "")
        if msr in RUN_DEPENDENT_MSRS and not gp and p.m.group("rw") == "read":
            self.res.msr_classes[f"run-dependent value, result compared: {name}"] += 1
        elif msr not in MODELLED_MSRS and not gp:
            self.res.msr_classes[f"not modelled, kernel accepted (cannot judge): {name}"] += 1
        elif msr not in MODELLED_MSRS:
            self.res.msr_classes[f"not modelled, kernel #GP (compared): {name}"] += 1
        else:
            self.res.msr_classes[f"modelled: {name}"] += 1
        self.use(p, "compared", COMPARED["kvm_msr"])

    def cpuid(self, p: Parsed, t: Thread) -> None:
        assert p.m is not None
        leaf, sub = self.hexfield(p, "func", 32), self.hexfield(p, "idx", 32)
        ecx = int(p.m.group("rcx"), 16) & 0xFFFFFFFF
        vcpu = t.vcpu or 0
        if leaf == 7 and sub == 0:
            if vcpu not in self.cpuid_set:
                self.cpuid_set.add(vcpu)
                self.add(p, "set_cpuid", "inferred setup: the CPUID table's leaf 7.0 ECX is this answer's "
                         "(OSPKE cleared: it follows CR4.PKE)", lvl="host", cpuid_7_ecx=ecx & ~(1 << 4))
                self.res.inferred["CPUID leaf 7.0 (from the first answer per vCPU)"] += 1
            row = self.add(p, "cpuid", p.msg, cpuid_leaf=leaf, cpuid_subleaf=sub, exp_result="ok", exp_value=ecx)
            if (vcpu, 4) not in self.known_cr:  # OSPKE (bit 4) follows CR4.PKE, which no kvm_cr line showed
                self.needs(row, ["CR4.PKE (OSPKE follows it)"])
        else:
            self.add(p, "cpuid", p.msg + "; value not compared (the model holds leaf 7.0 only)",
                     cpuid_leaf=leaf, cpuid_subleaf=sub, exp_result="ok")
        self.use(p, "compared", COMPARED["kvm_cpuid"])

    def vm_exit(self, p: Parsed) -> None:
        assert p.m is not None
        name = p.m.group("reason")
        if name in VMX_BY_NAME:
            self.add(p, "vm_exit", f"VMX exit {name}" + (" FAILED_VMENTRY" if p.m.group("failed") else ""),
                     reason=VMX_BY_NAME[name])
            self.use(p, "context", "a VMX exit handled in L0: drives the model (PKRS save/restore), no outcome")
            return
        code = SVM_BY_NAME.get(name)
        if code is None and not re.fullmatch(r"0x[0-9a-f]+", name):
            raise InputError(self.path, f"unknown kvm_exit reason {name!r}", line=p.lineno)
        self.use(p, "context", "an SVM exit: vCPU id only (the model's exits are VMX reasons)")

    def userspace_exit(self, p: Parsed, t: Thread) -> None:
        assert p.m is not None
        name = p.m.group("name").removeprefix("KVM_EXIT_")
        if name == "INTERNAL_ERROR" and t.failed_rdpkru is not None:
            q, t.failed_rdpkru = t.failed_rdpkru, None
            self.add(q, "rdpkru", f"{t.insn} -> {p.msg}", exp_result="internal_error")
            self.use(p, "compared", "KVM_EXIT_INTERNAL_ERROR of a failed RDPKRU emulation (rdpkru row)")
            return
        if name not in KVM_EXIT_BY_NAME and name not in ("restart", "error"):
            raise InputError(self.path, f"unknown kvm_userspace_exit reason {p.msg!r}", line=p.lineno)
        self.use(p, f"classified: {name}", USERSPACE_EXIT_REASONS.get(name, OTHER_USERSPACE_EXIT))

    def finish(self) -> None:
        for t in self.threads.values():
            self.close_walk(t, None)
            self.settle_cr(t)


def convert(parsed: list[Parsed], res: ImportResult, path: str = "<capture>",
            host_features: frozenset[str] = frozenset()) -> None:
    """Turn parsed lines into rows (see the module docstring for the mapping)."""
    conv = Converter(res, path, host_features)
    conv.traced_inj = any(p.event == "kvm_inj_exception" for p in parsed)
    for p in parsed:
        conv.line(p)
    conv.finish()
    if max((r["vcpu"] for r in res.rows), default=0) > VCPU_MAX:
        raise InputError(path, f"vcpu index larger than {VCPU_MAX}")


def import_ftrace(path: str, *, skip_bad: bool = False, host_features: frozenset[str] = frozenset()) -> ImportResult:
    p = Path(path)
    if not p.is_file():
        raise InputError(path, "no such file")
    res = ImportResult()
    try:
        with p.open(encoding="utf-8", errors="replace", newline="") as fh:
            parsed = parse_lines(numbered_lines(fh, MAX_LINE), path, skip_bad, res)
    except OSError as exc:
        raise InputError(path, f"cannot read the capture ({exc.strerror or exc})") from None
    convert(parsed, res, path, host_features)
    if not res.compared():
        raise InputError(path, "nothing comparable: no kvm_msr, kvm_cr write, kvm_cpuid or kvm_mmu_pagetable_walk "
                         f"line ({len(res.rows)} rows, {sum(res.events.values())} lines parsed)")
    return res


def classification(res: ImportResult) -> list[str]:
    """One line per (tracepoint, how it was used): lines, and why."""
    out = []
    for (ev, how), n in sorted(res.uses.items(), key=lambda kv: (-kv[1], kv[0])):
        out.append(f"{ev} {n} {how}: {res.reasons[(ev, how)]}")
    return out


def summary(res: ImportResult) -> str:
    """The counts the import prints: rows, compared, and lines per use."""
    by_how: Counter[str] = Counter()
    for (_ev, how), n in res.uses.items():
        by_how[how.split(":")[0]] += n
    lines = sum(res.events.values())
    return (f"{lines} lines: " + ", ".join(f"{n} {how}" for how, n in by_how.most_common())
            + f"; {len(res.rows)} rows, {res.compared()} compared"
            + (f", {len(res.setup_unknown)} depending on setup not captured" if res.setup_unknown else ""))


@dataclass(frozen=True)
class CaptureHost:
    """Where a capture was made: host features, backend, and the policy and profile that fit it."""

    features: str  # comma-separated reference_model.host names
    backend: str
    policy: str
    profile: str
    origin: str  # how this was decided


def this_host() -> CaptureHost:
    """The host this import runs on (its capture is assumed to come from it unless --host says otherwise)."""
    from ..kvm import host_facts

    backend = next((b for b in host_facts.BACKENDS if Path("/sys/module", b).is_dir()), "unknown")
    params = host_facts.module_params(("kvm", backend))
    _model, flags = host_facts.cpu_info()
    feats = host_facts.derive_features(backend, params, flags, 0, None, None)
    policy, profile = ("upstream-pvm", "pvm") if backend == "kvm_pvm" else ("upstream", "strict")
    return CaptureHost(",".join(feats), backend, policy, profile, f"this host ({backend}, {os.uname().release})")


def metadata(path: str, res: ImportResult, host: CaptureHost | None = None) -> dict[str, str]:
    """The trace metadata of an import (``host``: where the capture was made; default this host)."""
    if host is None:
        host = this_host()
    counts = ", ".join(f"{e} {n}" for e, n in res.events.most_common())
    notes = f"format: {res.fmt}; events: {counts}; {summary(res)}"
    if res.skipped:
        notes += f"; {len(res.skipped)} malformed lines skipped (first at line {res.skipped[0]})"
    if res.lost:
        notes += f"; the ring buffer lost {res.lost} events"
    if res.vcpu_unknown:
        notes += (f"; {res.vcpu_unknown} rows on threads that never named their vCPU (no kvm_entry/kvm_exit/"
                  "kvm_page_fault line, no recorder marker): vcpu 0")
    if res.walks_without_entries:
        notes += f"; {res.walks_without_entries} walks without paging-element lines (not compared)"
    meta = {"producer": "imported-ftrace", "name": Path(path).stem, "source": f"ftrace capture {Path(path).name}",
            "description": f"kvm tracepoint capture {Path(path).name}, imported", "notes": notes,
            "cpu.features": host.features, "policy": host.policy, "profile": host.profile,
            "capture.host": host.origin,
            "capture.classified": "; ".join(classification(res)),
            "capture.msrs": "; ".join(f"{k} x{n}" for k, n in sorted(res.msr_classes.items())),
            "capture.setup_inferred": "; ".join(f"{k} x{n}" for k, n in sorted(res.inferred.items())),
            "capture.setup_not_captured": "CR0.WP, CR4.SMEP/SMAP/PKE/PKS, EFER.NXE, PKRU/PKRS, MSR filters, "
                                          "userspace MSR exits, guest MAXPHYADDR (taken as 0/absent)"}
    if host.backend != "unknown":
        meta["host.backend"] = host.backend
    if res.setup_unknown:
        meta[SETUP_KEY] = format_setup_unknown(res.setup_unknown)
    return meta


def features_option(value: str | None) -> str | None:
    """``--host``/``--cpu-features``: 'pks-host', 'none' or a feature list -> the metadata text (ValueError if unknown)."""
    if value is None:
        return None
    if value == "pks-host":
        return DEFAULT_HOST.describe()
    return ",".join(sorted(parse_features(value if value != "none" else "").features, key=list(HOST_FEATURES).index))


def short_classification(res: ImportResult) -> list[str]:
    """Per tracepoint: lines and how they were used (reasons with -v)."""
    per: dict[str, list[str]] = {}
    for (ev, how), n in sorted(res.uses.items(), key=lambda kv: (-kv[1], kv[0])):
        per.setdefault(ev, []).append(f"{n} {how}")
    return [f"{ev}: {', '.join(parts)}" for ev, parts in per.items()]


def resolve_host(host: str | None, cpu_features: str | None, profile: str | None, policy: str | None) -> CaptureHost:
    """This host, overridden by ``--host``/``--cpu-features``/``--profile``/``--policy`` (ValueError naming the bad one)."""
    from difftest.verdict.profiles import PROFILES
    from reference_model.policies import POLICIES

    def feats(value: str | None, what: str) -> str | None:
        try:
            return features_option(value)
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None

    given, older = feats(host, "--host"), feats(cpu_features, "--cpu-features")
    if given is not None and older is not None and given != older:
        raise ValueError("--host and --cpu-features disagree; give one")
    if profile is not None and profile not in PROFILES:
        raise ValueError(f"--profile: unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    if policy is not None and policy not in POLICIES:
        raise ValueError(f"--policy: unknown policy {policy!r}")
    out = this_host()
    chosen = given if given is not None else older
    if chosen is not None:
        out = replace(out, features=chosen, origin=f"given on the command line ({chosen or 'none'})")
    if profile is not None:
        out = replace(out, profile=profile)
    if policy is not None:
        out = replace(out, policy=policy)
    return out
