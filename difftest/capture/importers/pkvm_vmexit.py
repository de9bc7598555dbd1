"""``difftest import pkvm-vmexit-trace``: pKVM's debugfs vmexit_trace cost lines, and a comparison of two.

Format (seed 004, SPEC PKVM.COST): ``Host: NAME COUNT cycles TOTAL each-handler-cycle AVG``, one
line per handler (a VM exit reason such as CPUID/VMCALL, or a host PV call such as
interrupt_allowed).  These are aggregate counters, not events, so the import is a cost table
(JSON), not a Parquet trace.  Lines that are not ``Host:`` lines (a shell prompt, other debugfs
sections) are counted and ignored; a malformed ``Host:`` line is an InputError naming its line.
AVG should be TOTAL // COUNT: lines where it is not are listed as inconsistent.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from difftest.errors import InputError

HOST_LINE = re.compile(r"^\s*Host:\s+(?P<name>\S+)\s+(?P<count>\d+)\s+cycles\s+(?P<total>\d+)\s+"
                       r"each-handler-cycle\s+(?P<avg>\d+)\s*$")
U64_MAX = (1 << 64) - 1


@dataclass(frozen=True)
class HandlerCost:
    name: str
    count: int
    cycles: int
    avg: int
    line: int


@dataclass
class CostTable:
    path: str
    handlers: dict[str, HandlerCost] = field(default_factory=dict)
    ignored_lines: int = 0
    inconsistent: list[str] = field(default_factory=list)

    @property
    def total_count(self) -> int:
        return sum(h.count for h in self.handlers.values())

    @property
    def total_cycles(self) -> int:
        return sum(h.cycles for h in self.handlers.values())

    def to_json(self) -> dict[str, object]:
        return {"source": self.path, "total_count": self.total_count, "total_cycles": self.total_cycles,
                "ignored_lines": self.ignored_lines, "inconsistent": self.inconsistent,
                "handlers": [asdict(h) for h in self.handlers.values()]}


def parse_vmexit_trace(path: str) -> CostTable:
    p = Path(path)
    if not p.is_file():
        raise InputError(path, "no such file")
    table = CostTable(path)
    for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.lstrip().startswith("Host:"):
            table.ignored_lines += bool(line.strip())
            continue
        m = HOST_LINE.match(line)
        if m is None:
            raise InputError(path, "malformed line (expected 'Host: NAME COUNT cycles TOTAL each-handler-cycle AVG')",
                             line=n)
        for key in ("count", "total", "avg"):  # pKVM's counters are u64; longer numbers are not from it
            if len(m.group(key)) > 20 or int(m.group(key)) > U64_MAX:
                raise InputError(path, f"{key} {m.group(key)[:30]}... does not fit the 64-bit counter", line=n)
        name, count, total, avg = m.group("name"), int(m.group("count")), int(m.group("total")), int(m.group("avg"))
        if name in table.handlers:
            raise InputError(path, f"handler {name!r} appears twice (first on line {table.handlers[name].line})", line=n)
        if count == 0 and total:
            raise InputError(path, f"{name}: cycles without any count", line=n)
        if count and avg != total // count:
            table.inconsistent.append(f"{name} (line {n}): {total} // {count} = {total // count}, file says {avg}")
        table.handlers[name] = HandlerCost(name, count, total, avg, n)
    if not table.handlers:
        raise InputError(path, "no 'Host: NAME COUNT cycles TOTAL each-handler-cycle AVG' lines")
    return table


def _ratio(b: int, a: int) -> str:
    return f"{b / a:.2f}x" if a else ("-" if not b else "new")


def compare(a: CostTable, b: CostTable) -> tuple[str, dict[str, object]]:
    """A text table and its JSON form: per handler, A vs B counts and cycles (B relative to A)."""
    names = list(a.handlers) + [n for n in b.handlers if n not in a.handlers]
    head = (f"{'handler':<22} {'count A':>9} {'count B':>9} {'B/A':>7} {'avg A':>8} {'avg B':>8} "
            f"{'cycles A':>13} {'cycles B':>13} {'B/A':>7}")
    lines = [f"A = {a.path}", f"B = {b.path}", head]
    rows = []
    for n in names:
        ha, hb = a.handlers.get(n), b.handlers.get(n)
        ca, cb = (ha.count if ha else 0), (hb.count if hb else 0)
        ya, yb = (ha.cycles if ha else 0), (hb.cycles if hb else 0)
        va, vb = (ha.avg if ha else 0), (hb.avg if hb else 0)
        lines.append(f"{n:<22} {ca:>9} {cb:>9} {_ratio(cb, ca):>7} {va:>8} {vb:>8} {ya:>13} {yb:>13} {_ratio(yb, ya):>7}")
        rows.append({"name": n, "count_a": ca, "count_b": cb, "cycles_a": ya, "cycles_b": yb, "avg_a": va, "avg_b": vb,
                     "only_in": "a" if hb is None else "b" if ha is None else None})
    lines.append(f"{'total':<22} {a.total_count:>9} {b.total_count:>9} {_ratio(b.total_count, a.total_count):>7} "
                 f"{'':>8} {'':>8} {a.total_cycles:>13} {b.total_cycles:>13} {_ratio(b.total_cycles, a.total_cycles):>7}")
    only_a = [n for n in a.handlers if n not in b.handlers]
    only_b = [n for n in b.handlers if n not in a.handlers]
    if only_a:
        lines.append("only in A: " + ", ".join(only_a))
    if only_b:
        lines.append("only in B: " + ", ".join(only_b))
    return "\n".join(lines), {"a": a.to_json(), "b": b.to_json(), "handlers": rows}


def render(table: CostTable) -> str:
    lines = [f"{table.path}: {len(table.handlers)} handlers, {table.total_count} calls, {table.total_cycles} cycles"]
    for h in sorted(table.handlers.values(), key=lambda h: -h.cycles):
        share = 100 * h.cycles / table.total_cycles if table.total_cycles else 0
        lines.append(f"  {h.name:<22} {h.count:>9} x {h.avg:>8} = {h.cycles:>13} cycles ({share:4.1f} %)")
    for text in table.inconsistent:
        lines.append(f"  inconsistent: {text}")
    if table.ignored_lines:
        lines.append(f"  ({table.ignored_lines} non-Host lines ignored)")
    return "\n".join(lines)


