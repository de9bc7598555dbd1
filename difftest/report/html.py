"""The HTML corpus report: one self-contained page rendered from result objects with Jinja2.

The page loads nothing: CSS and SVG are inline, fonts are the reader's own, so it opens offline
and can be mailed.  Its one inline script (the filters) is allowed by hash in the page's CSP and
only hides table rows; without it every row shows.  Templates live in ``templates/`` beside this
module, with autoescaping on; every string that comes from a trace reaches the page only through Jinja's
escaping.

Scale (issue 19): the first screen is the failures grouped by signature
(:mod:`difftest.report.failure_groups`) with counts; every run is one table row; only a few runs per
group are shown in detail (:data:`DETAILS_PER_GROUP`, :data:`MAX_DETAILS` in all), and only the
first of each group gets a timeline (:func:`timeline_runs`).  Passing runs carry no detail at all.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from dataclasses import field as dc_field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import markupsafe

from difftest.trace.io import write_text_atomic
from difftest.verdict.compare import CompareResult
from difftest.verdict.corpus import CorpusRun
from difftest.verdict.diff import FieldDiff, fmt
from difftest.verdict.results import ReplayResult, RowResult
from difftest.verdict.run_status import ORDER, Status, render_counts
from difftest.verdict.timeline import Timeline
from reference_model.policies import Policy
from reference_model.rules import RULES, describe, source_of

from .baseline import BaselineDiff
from .coverage import Coverage
from .failure_groups import Group, group_runs
from .state_decode import describe_value, field_kind, value_kind
from .timeline import RIGHTS_TEXT, SvgTimeline, layout, rights

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
MAX_DETAILS = 150  # runs shown in detail on one page (the rest are one table row each)
DETAILS_PER_GROUP = 3  # examples of one failure signature shown in detail
MATRIX_MAX_TRACES = 200  # the scenario x policy matrix is drawn up to this many traces
MAX_LATER = 10  # later divergences listed per run

# The filters: a few lines, no library.  The page's CSP allows exactly this text (by its hash).
FILTER_SCRIPT = """(function () {
  var f = document.getElementById("filters"), rows = document.querySelectorAll("tr[data-s]");
  var shown = document.getElementById("shown"), passing = document.getElementById("passing");
  f.hidden = false;
  function apply() {
    var s = f.elements.s.value, p = f.elements.p.value, r = f.elements.r.value, n = 0;
    for (var i = 0; i < rows.length; i++) {
      var d = rows[i].dataset;
      var ok = (!s || (s === "bad" ? d.s !== "PASS" : d.s === s)) && (!p || d.p === p) && (!r || d.r === r);
      rows[i].hidden = !ok;
      if (ok) n++;
    }
    shown.textContent = n + " run(s) shown";
    if (passing && (s === "PASS" || s === "")) passing.open = true;
  }
  f.addEventListener("change", apply);
  f.addEventListener("reset", function () { setTimeout(apply, 0); });
  apply();
})();"""
FILTER_SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(FILTER_SCRIPT.encode()).digest()).decode()


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The Jinja environment over ``templates/`` (autoescape on for every template)."""
    if not TEMPLATE_DIR.is_dir():
        raise FileNotFoundError(f"report templates not found in {TEMPLATE_DIR}")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["describe_rule"] = describe
    env.filters["rule_link"] = rule_link
    env.filters["thousands"] = lambda n: f"{n:,}"
    env.filters["id"] = id
    env.globals["fmt"] = fmt
    return env


def rule_link(rule_id: str) -> markupsafe.Markup:
    """A rule id as a link to its entry in the page's rule list (text as tooltip); unknown ids stay plain."""
    if rule_id not in RULES:
        return markupsafe.Markup("<span>{}</span>").format(rule_id)
    return markupsafe.Markup('<a class="rule-link" href="#rule-{0}" title="{1}">{0}</a>').format(rule_id, describe(rule_id))


@dataclass(frozen=True)
class RuleEntry:
    """One rule of the page's rule list: id (the link target), text and where it comes from."""

    rule: str
    text: str
    source: str


def rules_cited(ids: Any) -> list[RuleEntry]:
    """The catalogue entries of ``ids`` (catalogue order), for the rule list every rule link points to."""
    wanted = set(ids)
    return [RuleEntry(r, RULES[r], source_of(r)) for r in RULES if r in wanted]


def _result_rules(results: Sequence[ReplayResult]) -> set[str]:
    ids: set[str] = set()
    for r in results:
        ids.update(r.rule_hits)
        for rr in (*r.context, *r.divergences):
            ids.update(rr.rules)
    return ids


@dataclass
class KeyChange:
    key: int
    expected: str
    actual: str


@dataclass
class DiffRow:
    """A differing field, decoded by what it names: per-key rights for a PKRS/PKRU image, the bit's
    meaning for a control or intercept bit, plain hex otherwise."""

    field: str
    expected: str
    actual: str
    mask: str | None = None
    reason: str | None = None
    keys: list[KeyChange] = dc_field(default_factory=list)  # (this class has a member named field)


def _diff_rows(rr: RowResult, diffs: Sequence[FieldDiff]) -> list[DiffRow]:
    out = []
    for d in diffs:
        if rr.snapshot is not None:
            name, what = rr.snapshot.path, value_kind(rr.snapshot.path)
        else:
            ev = rr.event
            name, what = d.field, field_kind(ev.kind if ev else None, ev.msr if ev else None, d.field)
        row = DiffRow(name, describe_value(what, d.expected, d.field), describe_value(what, d.actual, d.field),
                      d.mask, d.mask_reason)
        if what == "rights" and isinstance(d.expected, int) and isinstance(d.actual, int):
            row.keys = [KeyChange(k, RIGHTS_TEXT[rights(d.expected, k)], RIGHTS_TEXT[rights(d.actual, k)])
                        for k in range(16) if rights(d.expected, k) != rights(d.actual, k)]
        out.append(row)
    return out


def _masked_rows(res: ReplayResult) -> list[DiffRow]:
    rows: list[DiffRow] = []
    for rr in [*res.context, *res.divergences]:
        rows += _diff_rows(rr, rr.masked)
    return rows


@dataclass
class RunView:
    """One trace x policy shown in detail."""

    anchor: str
    res: ReplayResult
    group: Group | None
    timeline: SvgTimeline | None
    timeline_note: str
    first_diffs: list[DiffRow]
    masked: list[DiffRow]
    later: list[RowResult]
    masked_by: list[tuple[str, int]]
    meta: list[tuple[str, str]]


def detail_runs(groups: Sequence[Group], limit: int = MAX_DETAILS, per_group: int = DETAILS_PER_GROUP) -> list[ReplayResult]:
    """The runs shown in detail: round-robin over the groups (one example of each before a second), up
    to ``per_group`` per group and ``limit`` in all; runs skipped as not applicable get none."""
    picked: list[ReplayResult] = []
    shown = [g for g in groups if g.signature.status is not Status.SKIP]
    for turn in range(per_group):
        for g in shown:
            if turn < len(g.runs) and len(picked) < limit:
                picked.append(g.runs[turn])
    return picked


def timeline_runs(groups: Sequence[Group]) -> list[ReplayResult]:
    """The runs that get a timeline: the first example of each signature (each one is a replay more)."""
    return detail_runs(groups, per_group=1)


def _run_view(anchor: str, res: ReplayResult, group: Group | None, timelines: dict[tuple[str, str], Timeline],
              timeline_notes: dict[tuple[str, str], str]) -> RunView:
    key = (res.trace, res.policy)
    tl = timelines.get(key)
    default = ("timeline drawn for the first run of this signature only"
               if group is not None and group.runs[0] is not res else "timeline not recorded")
    svg, note = None, timeline_notes.get(key, default)
    if tl is not None:
        svg = layout(tl)
        note = (f"{tl.rows:,} rows, one pixel column per {tl.bucket} rows (state changes inside a column are merged)"
                if tl.bucket > 1 else "")
    first = res.first
    meta = [(k, v) for k, v in sorted(res.meta.items()) if k not in ("name", "description", "schema_version")]
    return RunView(anchor, res, group, svg, note, _diff_rows(first, first.diffs) if first else [], _masked_rows(res),
                   res.divergences[1:1 + MAX_LATER], sorted(res.masked_by.items()), meta)


@dataclass
class PolicySummary:
    name: str
    statuses: Counter[Status] = field(default_factory=Counter)
    events: int = 0
    compared: int = 0
    divergences: int = 0
    masked: int = 0

    @property
    def runs(self) -> int:
        return sum(self.statuses.values())

    @property
    def bad(self) -> int:
        return self.statuses[Status.FAIL] + self.statuses[Status.XPASS]

    def count(self, status: str) -> int:
        return self.statuses[Status(status)]


def summarise(results: Sequence[ReplayResult]) -> dict[str, Any]:
    """Totals, status counts and per-policy counts for the summary block."""
    pols: dict[str, PolicySummary] = {}
    masked_by: Counter[str] = Counter()
    statuses: Counter[Status] = Counter()
    for r in results:
        p = pols.setdefault(r.policy, PolicySummary(r.policy))
        p.statuses[r.status] += 1
        statuses[r.status] += 1
        p.events += r.events
        p.compared += r.compared
        p.divergences += r.divergence_count
        p.masked += r.masked_count
        masked_by.update(r.masked_by)
    return {
        "traces": len({r.trace for r in results}),
        "runs": len(results),
        "statuses": statuses,
        "counts": render_counts(statuses),
        "bad": statuses[Status.FAIL] + statuses[Status.XPASS],
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


@dataclass
class RunRow:
    """One run as a table row (every run gets one; the filters act on these)."""

    res: ReplayResult
    detail: str | None  # anchor of its detail section
    group: Group | None


def render_report(run: CorpusRun, coverage: Coverage, baseline: BaselineDiff | None = None, *,
                  profile: str = "strict", title: str = "pks-difftest report",
                  timeline_notes: dict[tuple[str, str], str] | None = None) -> str:
    """The whole page as one HTML string."""
    results = run.results
    groups = group_runs(results)
    group_of = {id(r): g for g in groups for r in g.runs}
    details = detail_runs(groups)
    views = [_run_view(f"r{n}", r, group_of.get(id(r)), run.timelines, timeline_notes or {})
             for n, r in enumerate(details)]
    anchor_of = {id(v.res): v.anchor for v in views}
    rows = [RunRow(r, anchor_of.get(id(r)), group_of.get(id(r))) for r in results]
    summary = summarise(results)
    policies = [p.name for p in summary["policies"]]
    rules = sorted({r.first.primary_rule for r in results if r.first and r.first.primary_rule})
    matrix = _matrix(rows, policies) if summary["traces"] <= MATRIX_MAX_TRACES else None
    return environment().get_template("report.html.j2").render(
        title=title, profile=profile, summary=summary, policies=policies, groups=groups,
        bad_rows=[r for r in rows if r.res.status is not Status.PASS],
        pass_rows=[r for r in rows if r.res.status is Status.PASS], details=views, rules=rules,
        statuses=[s.value for s in ORDER], matrix=matrix, coverage=coverage, baseline=baseline, jobs=run.jobs,
        script=FILTER_SCRIPT, script_hash=FILTER_SCRIPT_HASH, max_details=MAX_DETAILS, per_group=DETAILS_PER_GROUP,
        rule_list=rules_cited(_result_rules(run.results) | {c.rule for c in coverage.rules}),
    )


@dataclass
class MatrixRow:
    name: str
    description: str
    cells: list[RunRow | None]
    bad: bool


def _matrix(rows: Sequence[RunRow], policies: Sequence[str]) -> list[MatrixRow]:
    by_trace: dict[str, dict[str, RunRow]] = {}
    for row in rows:
        by_trace.setdefault(row.res.trace, {})[row.res.policy] = row
    out = []
    for cells in by_trace.values():
        any_row = next(iter(cells.values()))
        out.append(MatrixRow(any_row.res.trace_name, any_row.res.meta.get("description", ""),
                             [cells.get(p) for p in policies],
                             any(c.res.status is not Status.PASS for c in cells.values())))
    return sorted(out, key=lambda m: (not m.bad, m.name))


# --- difftest compare --html: two policies side by side ------------------------------------


@dataclass
class CounterRow:
    name: str
    a: int
    b: int


def counter_rows(a: Counter[str], b: Counter[str]) -> list[CounterRow]:
    """Every counter either policy has, with both values (0 where one lacks it)."""
    return [CounterRow(k, a.get(k, 0), b.get(k, 0)) for k in sorted(set(a) | set(b))]


COMPARE_TIMELINES = 50  # compare sections (most differences first) that get both policies' timelines
COMPARE_TIMELINE_MAX_ROWS = 200_000


@dataclass
class StateDiffCell:
    """A differing field of a compare row, with both sides' values decoded."""

    field: str
    a: str
    b: str


def _compare_cells(row: Any) -> list[StateDiffCell]:
    out = []
    for d in row.diffs:
        if row.a.snapshot is not None:
            what = value_kind(row.a.snapshot.path)
        elif "." in d.field:  # observed state (vcpuN.pkrs, host...)
            what = value_kind(d.field)
        else:
            ev = row.a.event
            what = field_kind(ev.kind if ev else None, ev.msr if ev else None, d.field)
        out.append(StateDiffCell(d.field, describe_value(what, d.expected, d.field), describe_value(what, d.actual, d.field)))
    return out


def compare_timelines(results: Sequence[CompareResult], policy_a: Policy, policy_b: Policy,
                      limit: int = COMPARE_TIMELINES, max_rows: int = COMPARE_TIMELINE_MAX_ROWS
                      ) -> dict[str, tuple[Timeline, Timeline]]:
    """Both policies' timelines for the ``limit`` traces with the most differences (one more replay each)."""
    from difftest.engine import replay_trace
    from difftest.trace.io import open_trace
    from difftest.verdict.profiles import get_profile
    from difftest.verdict.timeline import TimelineRecorder

    out: dict[str, tuple[Timeline, Timeline]] = {}
    for r in sorted(results, key=lambda r: -r.difference_count)[:limit]:
        tf = open_trace(r.trace)
        if tf.num_rows > max_rows:
            continue
        pair = []
        for pol in (policy_a, policy_b):
            rec = TimelineRecorder(tf.num_rows)
            replay_trace(open_trace(r.trace), pol, get_profile(r.replay_a.profile), rec)
            pair.append(rec.timeline)
        out[r.trace] = (pair[0], pair[1])
    return out


def render_compare_page(results: Sequence[CompareResult], *, title: str = "pks-difftest compare",
                        timelines: dict[str, tuple[Timeline, Timeline]] | None = None) -> str:
    """The side-by-side page of ``difftest compare``: one section per trace, most differences first,
    the first difference with both sides' values, both policies' timelines one above the other."""
    a = results[0].policy_a if results else "A"
    b = results[0].policy_b if results else "B"
    timelines = timelines or {}
    ordered = sorted(results, key=lambda r: (-r.difference_count, r.trace_name))
    sections = []
    for n, r in enumerate(ordered):
        pair = timelines.get(r.trace)
        sections.append({
            "anchor": f"c{n}", "res": r, "counters": counter_rows(r.replay_a.counters, r.replay_b.counters),
            "cells": {id(row): _compare_cells(row) for row in [*r.context, *r.differences[:1]]},
            "timelines": (layout(pair[0]), layout(pair[1])) if pair else None,
        })
    return environment().get_template("compare.html.j2").render(
        title=title, a=a, b=b, sections=sections, differ=sum(1 for r in results if r.differ),
        events=sum(r.events for r in results), differences=sum(r.difference_count for r in results),
        rule_list=rules_cited(_result_rules([x for r in results for x in (r.replay_a, r.replay_b)])
                              | {x for r in results for row in (*r.context, *r.differences)
                                 for x in (*row.a.rules, *row.b.rules)}),
    )


def write_compare_page(path: str | os.PathLike[str], results: Sequence[CompareResult],
                       timelines: dict[str, tuple[Timeline, Timeline]] | None = None) -> Path:
    """Write the compare page atomically."""
    return write_text_atomic(path, render_compare_page(results, timelines=timelines))
