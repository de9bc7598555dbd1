"""The hypervisor matrix: every trace under every policy, one cell each, departures from ``hw`` judged.

A cell is what one policy makes of one trace: ``agrees`` (no divergence from the trace's
expectations), ``n/a`` (the first divergence is an event the policy has no meaning for, X86.NA:
a KVM ioctl under Xen, a nested event under PVM's model without VMX), or the rule id of the first
divergence: the policy's own hypervisor rule the model cited there if any (most specific = last),
else the model's last rule, else the trace's citation.

A cell that differs from the ``hw`` cell of the same trace (another first divergent row, another
outcome there, or a verdict where ``hw`` agrees) is a *departure* of that hypervisor from the
architecture.  It is *explained* when its rule belongs to the policy's own documented family
(``Policy.family``: PKVM, PVM, XEN, KVM): the model says the hypervisor departs there, and why.
Any other departure is a *finding*.  ``n/a`` cells are neither.  Events whose outcome the host
could not observe (``Outcome.host_visible`` False, e.g. a #GP pKVM delivers inside a pVM) are
counted per cell.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from difftest.engine import replay_trace
from difftest.trace.io import TraceFile, TraceRow, write_text_atomic
from difftest.verdict.diff import diff_outcomes
from difftest.verdict.profiles import get_profile
from difftest.verdict.results import ReplayResult, RowResult
from reference_model.machine import Machine
from reference_model.policies import Policy
from reference_model.rules import describe

# hw, then one policy per hypervisor that virtualizes PKS (KVM with the series, pKVM, PVM, Xen).
DEFAULT_POLICIES = ("hw", "kvm-v7", "pkvm-pvm", "pvm", "xen-hvm")
REFERENCE = "hw"
NA_RULE = "X86.NA"


@dataclass
class Cell:
    """One trace under one policy."""

    verdict: str  # agrees | n/a | diverges
    rule: str | None = None
    row: int | None = None  # index of the first divergent row
    actual: str | None = None  # the policy's outcome there (brief form)
    events: int = 0
    divergences: int = 0
    hidden: int = 0  # outcomes the host could not observe (Outcome.host_visible False)
    departure: bool = False
    explained: bool = False

    @property
    def label(self) -> str:
        return self.rule or self.verdict if self.verdict == "diverges" else self.verdict

    def same_as(self, other: Cell) -> bool:
        """Same verdict, at the same row, with the same outcome there."""
        return (self.verdict, self.row, self.actual) == (other.verdict, other.row, other.actual)


@dataclass
class MatrixRow:
    trace: str
    path: str
    cells: dict[str, Cell] = field(default_factory=dict)


@dataclass
class Finding:
    trace: str
    policy: str
    rule: str | None
    row: int | None
    actual: str | None

    def render(self) -> str:
        where = f"row {self.row}" if self.row is not None else "the trace"
        return f"{self.trace} under {self.policy}: {where}: {self.rule or '(no rule cited)'} -> {self.actual or 'agrees'}"


@dataclass
class Matrix:
    policies: list[str]
    families: dict[str, str | None]
    rows: list[MatrixRow]

    @property
    def departures(self) -> list[tuple[MatrixRow, str, Cell]]:
        return [(r, p, c) for r in self.rows for p, c in r.cells.items() if c.departure]

    @property
    def findings(self) -> list[Finding]:
        return [Finding(r.trace, p, c.rule, c.row, c.actual) for r, p, c in self.departures if not c.explained]

    @property
    def exit_code(self) -> int:
        return 1 if self.findings else 0


def first_rule(rr: RowResult, family: str | None) -> str | None:
    """The rule a divergent row names: the policy family's most specific one, else the model's last."""
    rules = rr.outcome.rules if rr.outcome is not None else ()
    if family:
        own = [r for r in rules if r.split(".", 1)[0] == family]
        if own:
            return own[-1]
    if rules:
        return rules[-1]
    return rr.primary_rule


def cell_for(result: ReplayResult, family: str | None, hidden: int) -> Cell:
    """The cell of one replay."""
    first = result.first
    if first is None:
        return Cell("agrees", events=result.events, hidden=hidden)
    rule = first_rule(first, family)
    out = first.outcome
    actual = out.brief() if out is not None else f"{first.snapshot.path if first.snapshot else '?'}={first.actual_state}"
    na = out is not None and out.result == "unsupported" and rule == NA_RULE
    return Cell("n/a" if na else "diverges", rule=rule, row=first.index, actual=actual, events=result.events,
                divergences=result.divergence_count, hidden=hidden)


def replay_cell(tf: TraceFile, policy: Policy) -> Cell:
    """Replay ``tf`` under ``policy`` (the trace's own profile) and count host-invisible outcomes."""
    hidden = 0
    first_na: list[RowResult] = []

    def observe(row: TraceRow, rr: RowResult, machine: Machine) -> None:
        nonlocal hidden
        out = rr.outcome
        if out is not None:
            hidden += not out.host_visible
            if not first_na and out.result == "unsupported" and out.rules == (NA_RULE,):
                first_na.append(rr)

    profile = get_profile(tf.meta.get("profile", "strict"))
    result = replay_trace(tf, policy, profile, observer=observe)
    cell = cell_for(result, policy.family, hidden)
    if cell.verdict == "diverges" and first_na and cell.row is not None and first_na[0].index <= cell.row:
        # the policy could not run the trace's premise (an earlier event meant nothing to it)
        na = first_na[0]
        cell.verdict, cell.rule, cell.row, cell.actual = "n/a", NA_RULE, na.index, f"{na.event.kind if na.event else '?'}: X86.NA"
    return cell


@dataclass
class Departure:
    """The first row where a policy's outcome (or state) differs from ``hw``'s on the same trace."""

    row: int
    rule: str | None
    actual: str


def first_departure(tf: TraceFile, policy: Policy, reference: Policy) -> Departure | None:
    """Step ``reference`` and ``policy`` in lockstep; the first row their outcomes or snapshots differ.

    Rows the reference has no meaning for (X86.NA: host ioctls on the bare CPU), rows the policy
    has no meaning for without a rule of its own, and fields the architecture leaves undefined
    (ARCH.TLB) are not differences.
    """
    host = tf.host()
    a, b = reference.build(host), policy.build(host)
    for row in tf.rows(with_notes=False):
        if row.snapshot is not None:
            try:
                va, vb = a.snapshot(row.snapshot.path), b.snapshot(row.snapshot.path)
            except KeyError:
                continue
            if va != vb:
                return Departure(row.index, row.snapshot.rule, f"{row.snapshot.path}={vb:#x}")
            continue
        ev = row.event
        assert ev is not None
        oa, ob = a.step(ev), b.step(ev)
        if oa.result == "unsupported" or (ob.result == "unsupported" and ob.rules == (NA_RULE,)):
            continue  # no meaning for one of them; a hypervisor's documented refusal (PVM.NOVMX) does count
        skip = set(oa.undefined) | set(ob.undefined)
        if any(d.field not in skip for d in diff_outcomes(oa, ob)):
            rr = RowResult(row.index, row.seq, ev, row.expect, ob)
            return Departure(row.index, first_rule(rr, policy.family), ob.brief())
    return None


def judge(cell: Cell, ref: Cell, departure: Departure | None, family: str | None) -> None:
    """Mark a cell's departure from the ``hw`` cell and whether the policy's own family explains it.

    No departure where either cell is ``n/a``: a trace the bare CPU cannot run states some
    hypervisor's behaviour, not the architecture's, and a policy without meaning for an event has no
    verdict there.  The rule of a departure is the one the policy cited at the first row where its
    outcome differs from ``hw``'s (its own family's rule where it cited one).
    """
    if cell.verdict == "n/a" or ref.verdict == "n/a" or cell.same_as(ref) or departure is None:
        return  # departure None: the policy behaves as hw on every row; only a profile mask told them apart
    cell.departure = True
    cell.rule, cell.row, cell.actual = departure.rule, departure.row, departure.actual
    cell.explained = bool(family and cell.rule and cell.rule.split(".", 1)[0] == family)


def build_matrix(traces: Sequence[TraceFile], policies: Sequence[Policy]) -> Matrix:
    """Every trace under every policy, judged against the ``hw`` column (policy ``hw`` must be among them)."""
    rows: list[MatrixRow] = []
    families = {p.name: p.family for p in policies}
    reference = next((p for p in policies if p.name == REFERENCE), None)
    if reference is None:
        raise ValueError(f"the matrix needs policy {REFERENCE!r} as its reference column")
    for tf in traces:
        row = MatrixRow(tf.name, str(tf.path), {p.name: replay_cell(tf, p) for p in policies})
        ref = row.cells[REFERENCE]
        for p in policies:
            cell = row.cells[p.name]
            if p is reference or cell.verdict == "n/a" or ref.verdict == "n/a" or cell.same_as(ref):
                continue
            judge(cell, ref, first_departure(tf, p, reference), p.family)
        rows.append(row)
    return Matrix([p.name for p in policies], families, rows)


# ---------------------------------------------------------------------------------------------- text
def _mark(cell: Cell) -> str:
    if not cell.departure:
        return cell.label
    rule = f" departs at {cell.rule}" if cell.verdict == "agrees" and cell.rule else ""
    return f"{cell.label}{rule} {'(explained)' if cell.explained else '(FINDING)'}"


def render_text(m: Matrix) -> str:
    """The table (rows: traces; columns: policies), then the departures' tally and the findings."""
    header = ["trace", *m.policies]
    body = [[r.trace, *(_mark(r.cells[p]) for p in m.policies)] for r in m.rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in body]
    lines.append("")
    lines += summary_lines(m)
    return "\n".join(lines)


def summary_lines(m: Matrix) -> list[str]:
    deps = m.departures
    lines = [f"{len(m.rows)} traces x {len(m.policies)} policies; {len(deps)} departures from {REFERENCE}, "
             f"{sum(1 for *_, c in deps if c.explained)} explained by the hypervisor's own rules, "
             f"{len(m.findings)} findings"]
    for name in m.policies:
        if name == REFERENCE:
            continue
        cells = [r.cells[name] for r in m.rows]
        lines.append(f"  {name} [{m.families.get(name) or '-'}]: "
                     f"{sum(c.verdict == 'agrees' for c in cells)} agree, {sum(c.verdict == 'n/a' for c in cells)} n/a, "
                     f"{sum(c.departure and c.explained for c in cells)} explained, "
                     f"{sum(c.departure and not c.explained for c in cells)} findings, "
                     f"{sum(c.hidden for c in cells)} host-invisible outcomes")
    if m.findings:
        lines.append("findings:")
        lines += [f"  {f.render()}" for f in m.findings]
    return lines


def render_markdown(m: Matrix) -> str:
    """The table as Markdown (docs/hypervisors.md), departures in bold, findings marked."""
    lines = ["| trace | " + " | ".join(f"`{p}`" for p in m.policies) + " |",
             "|---|" + "---|" * len(m.policies)]
    for r in m.rows:
        cells = []
        for p in m.policies:
            c = r.cells[p]
            text = f"`{c.rule}`" if c.verdict == "diverges" and c.rule else c.verdict
            if c.departure:
                at = f" (departs at `{c.rule}`)" if c.verdict == "agrees" and c.rule else ""
                text = f"**{text}**{at}" + ("" if c.explained else " **finding**")
            cells.append(text)
        lines.append(f"| {r.trace} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- HTML
def render_html(m: Matrix, title: str = "pks-difftest matrix") -> str:
    """A self-contained page in the report's look (its stylesheet), one table, the findings."""
    from difftest.report.html import environment

    return environment().get_template("matrix.html.j2").render(
        title=title, m=m, reference=REFERENCE, summary=summary_lines(m), describe=describe, esc=html.escape,
    )


def write_html(path: str | os.PathLike[str], m: Matrix) -> Path:
    return write_text_atomic(path, render_html(m))


def to_json(m: Matrix) -> dict[str, Any]:
    return {
        "policies": m.policies,
        "families": m.families,
        "rows": [{"trace": r.trace, "path": r.path,
                  "cells": {p: {"verdict": c.verdict, "rule": c.rule, "row": c.row, "actual": c.actual,
                                "departure": c.departure, "explained": c.explained, "hidden": c.hidden}
                            for p, c in r.cells.items()}} for r in m.rows],
        "findings": [f.__dict__ for f in m.findings],
    }
