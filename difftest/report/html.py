"""The HTML corpus report: one self-contained page rendered from result objects with Jinja2.

The page has no script and loads nothing: CSS and SVG are inline, fonts are the reader's own,
so it opens offline and can be mailed.  Templates live in ``templates/`` beside this module, with autoescaping on;
every string that comes from a trace (names, metadata, notes) reaches the page only through
Jinja's escaping.  This module only shapes result objects into what the templates show.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from difftest.trace.io import write_text_atomic
from difftest.verdict.compare import CompareResult
from difftest.verdict.corpus import CorpusRun
from difftest.verdict.diff import FieldDiff, fmt
from difftest.verdict.results import ReplayResult, RowResult
from reference_model.registers import MSR_IA32_PKRS
from reference_model.rules import describe

from .baseline import BaselineDiff
from .coverage import Coverage
from .timeline import RIGHTS_TEXT, SvgTimeline, layout, rights

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
MAX_TIMELINES = 300  # beyond this many runs, only failing runs get a timeline (page size)
MAX_LATER = 10  # later divergences listed per run


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The Jinja environment over ``templates/`` (autoescape on for every template)."""
    if not TEMPLATE_DIR.is_dir():
        raise FileNotFoundError(f"report templates not found in {TEMPLATE_DIR}")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["describe_rule"] = describe
    env.filters["thousands"] = lambda n: f"{n:,}"
    env.globals["fmt"] = fmt
    return env


@dataclass
class KeyChange:
    key: int
    expected: str
    actual: str


@dataclass
class DiffRow:
    """A differing field, with per-key rights when the value is a PKRS/PKRU image."""

    field: str
    expected: str
    actual: str
    mask: str | None = None
    reason: str | None = None
    keys: list[KeyChange] = field(default_factory=list)


@dataclass
class RunView:
    """One trace x policy as the page shows it."""

    anchor: str
    res: ReplayResult
    timeline: SvgTimeline | None
    timeline_note: str
    first_diffs: list[DiffRow]
    masked: list[DiffRow]
    later: list[RowResult]
    masked_by: list[tuple[str, int]]


@dataclass
class TraceView:
    anchor: str
    name: str
    path: str
    meta: list[tuple[str, str]]
    description: str
    runs: list[RunView]

    @property
    def failed(self) -> bool:
        return any(not r.res.passed for r in self.runs)


def _is_rights_image(rr: RowResult, field_name: str) -> bool:
    if rr.snapshot is not None:
        return rr.snapshot.path.endswith(("pkrs", "pkru"))
    ev = rr.event
    if ev is None or field_name != "value":
        return False
    return ev.kind == "rdpkru" or (ev.kind == "rdmsr" and ev.msr == MSR_IA32_PKRS)


def _diff_rows(rr: RowResult, diffs: Sequence[FieldDiff]) -> list[DiffRow]:
    out = []
    for d in diffs:
        name = rr.snapshot.path if rr.snapshot is not None else d.field
        row = DiffRow(name, fmt(d.field, d.expected), fmt(d.field, d.actual), d.mask, d.mask_reason)
        if isinstance(d.expected, int) and isinstance(d.actual, int) and _is_rights_image(rr, d.field):
            row.keys = [KeyChange(k, RIGHTS_TEXT[rights(d.expected, k)], RIGHTS_TEXT[rights(d.actual, k)])
                        for k in range(16) if rights(d.expected, k) != rights(d.actual, k)]
        out.append(row)
    return out


def _masked_rows(res: ReplayResult) -> list[DiffRow]:
    rows: list[DiffRow] = []
    for rr in [*res.context, *res.divergences]:
        rows += _diff_rows(rr, rr.masked)
    return rows


def build_views(run: CorpusRun) -> list[TraceView]:
    """Group runs by trace and prepare what each section shows."""
    traces: dict[str, TraceView] = {}
    budget_all = len(run.results) <= MAX_TIMELINES
    shown = 0
    for res in run.results:
        tv = traces.get(res.trace)
        if tv is None:
            meta = [(k, v) for k, v in sorted(res.meta.items()) if k not in ("name", "description", "schema_version")]
            tv = traces[res.trace] = TraceView(f"t{len(traces)}", res.trace_name, res.trace, meta,
                                               res.meta.get("description", ""), [])
        tl = run.timelines.get((res.trace, res.policy))
        svg, note = None, ""
        if tl is None:
            note = "timeline not recorded"
        elif budget_all or (not res.passed and shown < MAX_TIMELINES):
            svg = layout(tl)
            shown += 1
            if tl.bucket > 1:
                note = f"{tl.rows:,} rows, one pixel column per {tl.bucket} rows (state changes inside a column are merged)"
        else:
            note = f"timeline omitted: {len(run.results)} runs in this report (run `difftest report` on this trace alone)"
        first = res.first
        tv.runs.append(RunView(
            f"{tv.anchor}-p{len(tv.runs)}", res, svg, note,
            _diff_rows(first, first.diffs) if first else [],
            _masked_rows(res),
            res.divergences[1:1 + MAX_LATER],
            sorted(res.masked_by.items()),
        ))
    return list(traces.values())


@dataclass
class PolicySummary:
    name: str
    runs: int = 0
    failed: int = 0
    events: int = 0
    compared: int = 0
    divergences: int = 0
    masked: int = 0

    @property
    def passed(self) -> int:
        return self.runs - self.failed


def summarise(results: Sequence[ReplayResult]) -> dict[str, Any]:
    """Totals and per-policy counts for the summary block."""
    pols: dict[str, PolicySummary] = {}
    masked_by: Counter[str] = Counter()
    for r in results:
        p = pols.setdefault(r.policy, PolicySummary(r.policy))
        p.runs += 1
        p.failed += 0 if r.passed else 1
        p.events += r.events
        p.compared += r.compared
        p.divergences += r.divergence_count
        p.masked += r.masked_count
        masked_by.update(r.masked_by)
    return {
        "traces": len({r.trace for r in results}),
        "runs": len(results),
        "failed": sum(1 for r in results if not r.passed),
        "events": sum(r.events for r in results),
        "compared": sum(r.compared for r in results),
        "snapshots": sum(r.snapshots for r in results),
        "not_modelled": sum(r.not_modelled for r in results),
        "divergences": sum(r.divergence_count for r in results),
        "masked": sum(r.masked_count for r in results),
        "masked_by": sorted(masked_by.items()),
        "policies": list(pols.values()),
    }


def render_report(run: CorpusRun, coverage: Coverage, baseline: BaselineDiff | None = None, *,
                  profile: str = "strict", title: str = "pks-difftest report") -> str:
    """The whole page as one HTML string."""
    views = build_views(run)
    policies = [p.name for p in summarise(run.results)["policies"]]
    matrix = sorted(views, key=lambda t: (not t.failed, t.name))
    return environment().get_template("report.html.j2").render(
        title=title, profile=profile, summary=summarise(run.results), policies=policies, traces=views,
        matrix=matrix, coverage=coverage, baseline=baseline, jobs=run.jobs,
    )


# --- difftest compare --html: two policies side by side ------------------------------------


@dataclass
class CounterRow:
    name: str
    a: int
    b: int


def counter_rows(a: Counter[str], b: Counter[str]) -> list[CounterRow]:
    """Every counter either policy has, with both values (0 where one lacks it)."""
    return [CounterRow(k, a.get(k, 0), b.get(k, 0)) for k in sorted(set(a) | set(b))]


def render_compare_page(results: Sequence[CompareResult], *, title: str = "pks-difftest compare") -> str:
    """The side-by-side page of ``difftest compare`` (one section per trace)."""
    a = results[0].policy_a if results else "A"
    b = results[0].policy_b if results else "B"
    sections = [{"anchor": f"c{n}", "res": r, "counters": counter_rows(r.replay_a.counters, r.replay_b.counters)}
                for n, r in enumerate(results)]
    return environment().get_template("compare.html.j2").render(
        title=title, a=a, b=b, sections=sections, differ=sum(1 for r in results if r.differ),
        events=sum(r.events for r in results), differences=sum(r.difference_count for r in results),
    )


def write_compare_page(path: str | os.PathLike[str], results: Sequence[CompareResult]) -> Path:
    """Write the compare page atomically."""
    return write_text_atomic(path, render_compare_page(results))
