"""Plain-text rendering of replay results, written to read like a review comment."""

from __future__ import annotations

from collections.abc import Sequence

from difftest.verdict.compare import CompareResult
from difftest.verdict.diff import fmt
from difftest.verdict.results import ReplayResult, RowResult
from reference_model.rules import describe


def _row_line(r: RowResult, mark: str = " ") -> str:
    status = {"diverge": "DIVERGES", "masked": "masked", "pass": "ok", "uncompared": "",
              "not-modelled": "not modelled"}[r.status]
    line = f" {mark} {r.index:>6}  {r.describe_event()}"
    if r.status != "uncompared":
        line += f"  | expected {r.describe_expect()} | got {r.describe_actual()}"
    if status and status != "ok":
        line += f"  [{status}]"
    return line


def render_replay(res: ReplayResult, verbose: bool = False) -> str:
    """The text report of one replay."""
    out = [f"{res.trace}  (policy {res.policy}, profile {res.profile})"]
    out.append(
        f"  {res.events} events, {res.compared} compared ({res.snapshots} snapshots"
        + (f", {res.not_modelled} not modelled by {res.policy}" if res.not_modelled else "")
        + f"), {res.divergence_count} divergence{'s' if res.divergence_count != 1 else ''}, "
        + f"{res.masked_count} masked"
    )
    for name, n in sorted(res.masked_by.items()):
        out.append(f"    masked by {name}: {n}")
    first = res.first
    if first is not None:
        rule = first.primary_rule
        out.append(f"  first divergence at event {first.index} (seq {first.seq}): {first.describe_event()}")
        if rule:
            out.append(f"    {rule}: {describe(rule)}")
        for d in first.diffs:
            out.append(f"    {d.render()}")
        if first.rules:
            out.append(f"    rules: {', '.join(first.rules)}")
        if first.note:
            out.append(f"    note: {first.note}")
        out.append("  context:")
        for r in res.context:
            out.append(_row_line(r, ">" if r is first else " "))
        later = res.divergences[1:]
        if later:
            out.append(f"  {res.divergence_count - 1} later divergence(s), possibly consequential:")
            for r in later[: None if verbose else 10]:
                out.append(_row_line(r, "~"))
            if not verbose and len(later) > 10:
                out.append(f"    ... {len(later) - 10} more (use --verbose)")
    if res.counters:
        out.append("  counters: " + ", ".join(f"{k}={v}" for k, v in sorted(res.counters.items())))
    return "\n".join(out)


def render_summary(results: Sequence[ReplayResult]) -> str:
    """One line per trace x policy, then totals."""
    lines = []
    width = max((len(r.trace_name) for r in results), default=10)
    for r in results:
        verdict = "PASS" if r.passed else "FAIL"
        extra = ""
        if r.first is not None:
            extra = f"  first: event {r.first.index} {r.first.primary_rule or ''}"
        lines.append(f"{verdict}  {r.trace_name:<{width}}  {r.policy:<12} events={r.events:<6} "
                     f"divergences={r.divergence_count:<4} masked={r.masked_count}{extra}")
    failed = sum(1 for r in results if not r.passed)
    events = sum(r.events for r in results)
    lines.append(f"{len(results)} runs, {failed} failed, {len(results) - failed} passed; {events} events replayed")
    return "\n".join(lines)


def render_compare(res: CompareResult) -> str:
    """Text form of a comparison: verdict, first difference with context and rule, counters side by side."""
    a, b = res.policy_a, res.policy_b
    out = [f"{res.trace}  ({a} vs {b})"]
    out.append(f"  {res.events} events, {res.difference_count} differing row(s); "
               f"against the trace's expectations: {a} {res.replay_a.divergence_count} divergence(s), "
               f"{b} {res.replay_b.divergence_count}")
    first = res.first
    if first is not None:
        out.append(f"  first difference at event {first.index} (seq {first.a.seq}): {first.a.describe_event()}")
        if first.rule:
            out.append(f"    {first.rule}: {describe(first.rule)}")
        for d in first.diffs:
            out.append(f"    {d.field}: {a} {fmt(d.field, d.expected)}, {b} {fmt(d.field, d.actual)}")
        out.append("  context:")
        for r in res.context:
            mark = ">" if r is first else ("~" if r.diffs else " ")
            line = f" {mark} {r.index:>6}  {r.a.describe_event()}"
            if r.a.outcome is not None or r.a.snapshot is not None:
                line += f"  | {a}: {r.a.describe_actual()} | {b}: {r.b.describe_actual()}"
            out.append(line)
        if res.difference_count > 1:
            out.append(f"  {res.difference_count - 1} later difference(s), possibly consequential")
    keys = sorted(set(res.replay_a.counters) | set(res.replay_b.counters))
    if keys:
        width = max(len(k) for k in keys)
        out.append(f"  counters{'':<{width - 6}}  {a:>12} {b:>12}")
        for k in keys:
            out.append(f"    {k:<{width}}  {res.replay_a.counters.get(k, 0):>12} {res.replay_b.counters.get(k, 0):>12}")
    return "\n".join(out)
