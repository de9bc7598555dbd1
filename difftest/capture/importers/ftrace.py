"""``difftest import ftrace``: tracefs ``trace``/``trace_pipe`` text or ``trace-cmd report`` output -> trace.

Line format and the kvm event messages: sources/kvm_recorder.md §3.3 and the tracepoints'
``print fmt``.  What a line says about an outcome becomes the row's expectation, so replaying
the import asks "would the model have done what this kernel did?":

* kvm_msr  -> wrmsr/rdmsr; ``(#GP)`` -> exp gp, else ok (a read also states the value read).
* kvm_cr   (write to CR0/3/4) -> mov_crN; a ``kvm_inj_exception #GP`` next on the same thread
  -> exp gp; otherwise ok if the capture traced kvm_inj_exception at all, else not compared.
* kvm_cpuid -> cpuid with the ECX returned; kvm_exit -> vm_exit (VMX reason number; an SVM
  exit keeps its code in the note); kvm_nested_vmexit_inject -> nested_exit.  Events between
  kvm_nested_vmenter and kvm_nested_vmexit_inject of a thread are at level l2.
* Everything else (kvm_entry, kvm_userspace_exit, kvm_pio, kvm_emulate_insn, kvm_nested_vmenter,
  kvm_nested_vmexit, unfolded kvm_inj_exception, markers, any other event) is a ``foreign``
  row: kept in order with its text, never compared.

The twelve kvm events above are parsed strictly: a message that does not match is a malformed
line (InputError naming the line, or counted and skipped with ``skip_bad``).  vCPU indices come
from the ``vcpu N`` of kvm_entry/kvm_exit lines of the same thread, else from the order threads
first appear.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from difftest.errors import InputError

from .exit_reasons import KVM_EXIT_BY_NAME, SVM_BY_NAME, VECTOR_BY_NAME, VMX_BY_NAME

LINE = re.compile(
    r"^\s*(?P<comm>.*?)-(?P<pid>\d+)\s+(?:\(\s*[\d-]+\)\s+)?\[(?P<cpu>\d+)\]\s+(?:(?P<flags>[.a-zA-Z0-9]{4,5})\s+)?"
    r"(?P<ts>\d+\.\d+):\s+(?P<event>\w+):\s*(?P<msg>.*)$"  # msg: trailing blanks stripped in code (a lazy
)                                                                 # match before \s*$ is quadratic in blank runs)
MAX_LINE = 65_536  # characters; a tracepoint line is a few hundred, anything longer is not one
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
    "kvm_inj_exception": re.compile(rf"^#(?P<vec>[A-Z]{{2}})(?: \((?P<err>0x{_HEX})\))?(?P<re> \[reinjected\])?$"),
    "kvm_userspace_exit": re.compile(r"^reason (?P<name>[A-Z0-9_]+|restart|error) \((?P<num>-?\d+)\)$"),
    "kvm_nested_vmenter": re.compile(rf"^rip: 0x{_HEX} (?:vmcs|vmcb): 0x{_HEX} nested_rip: 0x{_HEX}.*$"),
    "kvm_nested_vmexit": re.compile(rf"^vcpu (?P<vcpu>\d+) reason (?P<reason>[\w-]+)(?: FAILED_VMENTRY)? rip 0x{_HEX}.*$"),
    "kvm_nested_vmexit_inject": re.compile(r"^reason: (?P<reason>[\w-]+)(?: FAILED_VMENTRY)? ext_inf1: 0x[0-9a-f]+.*$"),
    "kvm_emulate_insn": re.compile(rf"^(?P<cs>{_HEX}):(?P<rip>{_HEX}):(?P<bytes>(?:[0-9a-f]{{2}} ?)*)"
                                   r"\((?P<mode>real|vm16|prot16|prot32|prot64)\)(?P<failed> failed)?$"),
    "kvm_cpuid": re.compile(rf"^func (?P<func>{_HEX}) idx (?P<idx>{_HEX}) rax (?P<rax>{_HEX}) rbx (?P<rbx>{_HEX}) "
                            rf"rcx (?P<rcx>{_HEX}) rdx (?P<rdx>{_HEX}), cpuid entry (?:found|not found)(?:, used max basic)?$"),
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
    lost: int = 0
    fmt: str = "tracefs"


def parse_lines(lines: Iterable[str], path: str, skip_bad: bool, res: ImportResult) -> list[Parsed]:
    out: list[Parsed] = []
    for n, raw in enumerate(lines, 1):
        line = raw.rstrip("\n")
        if IGNORED.match(line):
            if line.startswith(("cpus=", "version =")):
                res.fmt = "trace-cmd report"
            continue
        lost = LOST.match(line)
        if lost and len(lost.group(2)) <= MAX_DIGITS:
            res.lost += int(lost.group(2))
            continue
        m = None if len(line) > MAX_LINE else LINE.match(line)
        problem = None
        sub = None
        msg = ""
        if len(line) > MAX_LINE:
            problem = f"line longer than {MAX_LINE} characters (not a tracepoint line)"
        elif m is None:
            problem = "not a trace line (expected COMM-PID [CPU] FLAGS TIMESTAMP: EVENT: MESSAGE)"
        elif len(m.group("pid")) > MAX_DIGITS:
            problem = f"pid {m.group('pid')[:30]}... is too large"
        else:
            ev = m.group("event")
            msg = m.group("msg").rstrip()
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
                continue
            raise InputError(path, problem, line=n)
        assert m is not None
        if m.group("flags") is None:
            res.fmt = "trace-cmd report"
        out.append(Parsed(n, int(m.group("pid")), m.group("ts"), m.group("event"), msg, sub))
    return out


def bounded_lines(fh: TextIO) -> Iterator[str]:
    """The lines of ``fh``, each cut after MAX_LINE + 1 characters (the rest skipped): memory stays bounded."""
    while True:
        line = fh.readline(MAX_LINE + 1)
        if not line:
            return
        if len(line) > MAX_LINE and not line.endswith("\n"):
            while (rest := fh.readline(MAX_LINE)) and not rest.endswith("\n"):
                pass
        yield line


def _vcpu_map(parsed: list[Parsed]) -> dict[int, int]:
    named: dict[int, int] = {}
    for p in parsed:
        if p.event in ("kvm_entry", "kvm_exit") and p.m is not None and p.pid not in named:
            named[p.pid] = int(p.m.group("vcpu"))
    mapping = dict(named)
    nxt = max(named.values(), default=-1) + 1
    for p in parsed:
        if p.event.startswith("kvm_") and p.pid not in mapping:
            mapping[p.pid] = nxt
            nxt += 1
    return mapping


def _decode_insn(hexbytes: str) -> str:
    b = hexbytes.strip()
    for prefix in sorted(INSNS, key=len, reverse=True):
        if b.startswith(prefix):
            return INSNS[prefix]
    return "insn"


def convert(parsed: list[Parsed], res: ImportResult, path: str = "<capture>") -> None:
    """Turn parsed lines into rows (see the module docstring for the mapping)."""
    vcpus = _vcpu_map(parsed)
    if max(vcpus.values(), default=0) > VCPU_MAX:
        raise InputError(path, f"vcpu index {max(vcpus.values())} is larger than {VCPU_MAX}")
    traced_inj = any(p.event == "kvm_inj_exception" for p in parsed)
    level: dict[int, str] = {}
    last_guest: dict[int, dict[str, Any]] = {}  # pid -> its last guest-event row, while a #GP may still follow
    pending_cr: dict[int, dict[str, Any]] = {}
    rows = res.rows

    def add(p: Parsed, kind: str, note: str | None = None, lvl: str | None = None, **fields: Any) -> dict[str, Any]:
        row = {"seq": len(rows), "kind": kind, "vcpu": vcpus.get(p.pid, 0),
               "level": lvl or level.get(p.pid, "l1"), **fields}
        row["note"] = f"line {p.lineno} @{p.ts} pid {p.pid}" + (f": {note}" if note else "")
        rows.append(row)
        return row

    def hexfield(p: Parsed, group: str, bits: int) -> int:
        """A hex field of ``p``'s message; the kernel prints at most ``bits`` bits there."""
        assert p.m is not None
        text = p.m.group(group)
        value = int(text, 16)
        if value >> bits:
            raise InputError(path, f"{p.event} {group} 0x{text[:24]}... does not fit in {bits} bits", line=p.lineno)
        return value

    def settle_cr(pid: int) -> None:
        row = pending_cr.pop(pid, None)
        if row is not None and traced_inj:
            row["exp_result"] = "ok"

    for p in parsed:
        res.events[p.event] += 1
        m = p.m
        ev = p.event
        if ev == "kvm_inj_exception" and m is not None:
            gp_fold = m.group("vec") == "GP" and not m.group("re")
            cr = pending_cr.pop(p.pid, None)
            if gp_fold and cr is not None:
                cr["exp_result"] = "gp"
                cr["note"] += f"; line {p.lineno}: {p.msg}"
                continue
            if cr is not None and traced_inj:
                cr["exp_result"] = "ok"
            prev = last_guest.pop(p.pid, None)
            if gp_fold and prev is not None and prev.get("exp_result") == "gp":
                prev["note"] += f"; line {p.lineno}: {p.msg}"
                continue
            add(p, "foreign", f"kvm_inj_exception {p.msg} (vector {VECTOR_BY_NAME.get(m.group('vec'), '?')})")
            continue
        if ev.startswith("kvm_") and ev not in ("kvm_entry", "kvm_userspace_exit", "kvm_pio", "kvm_emulate_insn"):
            settle_cr(p.pid)
        last_guest.pop(p.pid, None)
        if ev == "kvm_msr" and m is not None:
            msr, val = hexfield(p, "msr", 32), hexfield(p, "val", 64)
            if m.group("rw") == "write":
                row = add(p, "wrmsr", p.msg, msr=msr, value=val, exp_result="gp" if m.group("gp") else "ok")
            elif m.group("gp"):
                row = add(p, "rdmsr", p.msg, msr=msr, exp_result="gp")
            else:
                row = add(p, "rdmsr", p.msg, msr=msr, exp_result="ok", exp_value=val)
            last_guest[p.pid] = row
        elif ev == "kvm_cr" and m is not None:
            cr, val = int(m.group("cr"), 16), hexfield(p, "val", 64)
            if m.group("rw") == "write" and cr in CR_KIND:
                pending_cr[p.pid] = add(p, CR_KIND[cr], p.msg, value=val)
            else:
                add(p, "foreign", f"kvm_cr {p.msg}")
        elif ev == "kvm_cpuid" and m is not None:
            add(p, "cpuid", p.msg, cpuid_leaf=hexfield(p, "func", 32), cpuid_subleaf=hexfield(p, "idx", 32),
                exp_result="ok", exp_value=int(m.group("rcx"), 16) & 0xFFFFFFFF)
        elif ev == "kvm_exit" and m is not None:
            name = m.group("reason")
            if name in VMX_BY_NAME:
                add(p, "vm_exit", f"VMX exit {name}" + (" FAILED_VMENTRY" if m.group("failed") else ""),
                    reason=VMX_BY_NAME[name])
            else:
                code = SVM_BY_NAME.get(name)
                if code is None and not re.fullmatch(r"0x[0-9a-f]+", name):
                    raise InputError(path, f"unknown kvm_exit reason {name!r}", line=p.lineno)
                add(p, "vm_exit", f"SVM exit {name} ({code if code is not None else name}); reason not a VMX number")
        elif ev == "kvm_nested_vmenter":
            add(p, "foreign", f"kvm_nested_vmenter {p.msg}")
            level[p.pid] = "l2"
        elif ev == "kvm_nested_vmexit_inject" and m is not None:
            name = m.group("reason")
            if name in VMX_BY_NAME:
                add(p, "nested_exit", f"reflected to L1: {name}", lvl="l2", reason=VMX_BY_NAME[name])
            else:
                add(p, "foreign", f"kvm_nested_vmexit_inject (SVM) {p.msg}")
            level[p.pid] = "l1"
        elif ev == "kvm_userspace_exit" and m is not None:
            num = KVM_EXIT_BY_NAME.get(m.group("name").removeprefix("KVM_EXIT_"))
            add(p, "foreign", f"kvm_userspace_exit {p.msg}" + ("" if num is not None or m.group("name") in
                                                               ("restart", "error") else " (unknown name)"))
        elif ev == "kvm_emulate_insn" and m is not None:
            add(p, "foreign", f"kvm_emulate_insn {_decode_insn(m.group('bytes'))}: {p.msg}")
        else:
            add(p, "foreign", f"{ev}: {p.msg}")
    for pid in list(pending_cr):
        settle_cr(pid)


def import_ftrace(path: str, *, skip_bad: bool = False) -> ImportResult:
    p = Path(path)
    if not p.is_file():
        raise InputError(path, "no such file")
    res = ImportResult()
    with p.open(encoding="utf-8", errors="replace") as fh:
        parsed = parse_lines(bounded_lines(fh), path, skip_bad, res)
    convert(parsed, res, path)
    if not any(k.startswith("exp_") and v is not None for r in res.rows for k, v in r.items()):
        raise InputError(path, "nothing comparable: no kvm_msr, kvm_cr write, or kvm_cpuid line "
                         f"({len(res.rows)} events, {sum(res.events.values())} lines parsed)")
    return res


def metadata(path: str, res: ImportResult, cpu_features: str | None) -> dict[str, str]:
    counts = ", ".join(f"{e} {n}" for e, n in res.events.most_common())
    notes = f"format: {res.fmt}; events: {counts}"
    if res.skipped:
        notes += f"; {len(res.skipped)} malformed lines skipped (first at line {res.skipped[0]})"
    if res.lost:
        notes += f"; the ring buffer lost {res.lost} events"
    meta = {"producer": "imported-ftrace", "name": Path(path).stem, "source": f"ftrace capture {Path(path).name}",
            "description": f"kvm tracepoint capture {Path(path).name}, imported", "notes": notes}
    if cpu_features is not None:
        meta["cpu.features"] = cpu_features
    return meta


