"""Plain-text rendering of replay results, written to read like a review comment."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from difftest.printable import printable
from difftest.verdict.compare import CompareResult
from difftest.verdict.diff import fmt
from difftest.verdict.results import ReplayResult, RowResult
from difftest.verdict.run_status import Status, exit_code, render_counts
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
    if res.verdict is not None:
        out.append(f"  status: {res.status.value}" + (f" ({res.verdict.reason})" if res.verdict.reason else ""))
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
            out.append(f"    note: {printable(first.note, 1000)}")
        out.append("  context:")
        for r in res.context:
            out.append(_row_line(r, ">" if r is first else " "))
        later = res.divergences[1:]
        if later:
            out.append(f"  {res.divergence_count - 1} later divergence(s), possibly consequential:")
            for r in later[: None if verbose else 10]:
                out.append(_row_line(r, "~"))
            if not verbose and len(later) > 10:
                out.append(f"    ... {len(later) - 10} more (-v lists them all)")
    faults = [r for r in res.highlights if r.status != "masked" or (r.event is not None and r.event.kind == "emu_access")]
    if faults:
        out.append("  emulated accesses that fault (expected = the kernel's PFEC, got = the model's):")
        for r in faults[: None if verbose else 20]:
            out.append(_row_line(r) + ("  " + "; ".join(sorted({d.mask or "" for d in r.masked})) if r.masked else ""))
    judged = [r for r in res.highlights if r.status == "masked" and r not in faults]
    if judged:
        out.append("  rows a capture cannot settle (masked, with the reason):")
        for r in judged[: None if verbose else 20]:
            out.append(_row_line(r) + "  " + "; ".join(sorted({d.mask or "" for d in r.masked})))
    if res.counters:
        out.append("  counters: " + ", ".join(f"{k}={v}" for k, v in sorted(res.counters.items())))
    return "\n".join(out)


def run_line(r: ReplayResult, width: int = 0) -> str:
    """One run: status, trace, policy, counts, and why (the first divergence or the declaration)."""
    extra = ""
    if r.first is not None:
        extra = f"  first: event {r.first.index} {r.first.primary_rule or ''}".rstrip()
    if r.verdict is not None and r.verdict.known is not None and r.status is not Status.PASS:
        extra += f"  [{r.verdict.reason}]"
    return (f"{r.status.value:<5} {r.trace_name:<{width}}  {r.policy:<12} events={r.events:<6} "
            f"divergences={r.divergence_count:<4} masked={r.masked_count}{extra}")


def render_headline(results: Sequence[ReplayResult]) -> str:
    """The first lines of a corpus report: the verdict, then every run that is not a plain PASS.

    FAIL and XPASS first (what to look at), then the confirmed known divergences by bug id, then
    the runs skipped as not applicable with their reasons.
    """
    by: dict[Status, list[ReplayResult]] = {s: [] for s in Status}
    for r in results:
        by[r.status].append(r)
    counts = Counter({s: len(v) for s, v in by.items()})
    code = exit_code(counts.elements())
    lines = [f"{len(results)} runs: {render_counts(counts)} -> {'OK' if code == 0 else 'FAILED'}"]
    width = max((len(r.trace_name) for r in results if r.status is not Status.PASS), default=10)
    for st, title in ((Status.FAIL, "unexpected divergences"), (Status.XPASS, "known divergences that did not show")):
        if by[st]:
            lines.append(f"{title} ({len(by[st])}):")
            lines += [f"  {st.value:<5} {r.trace_name:<{width}}  {r.policy:<12} {r.verdict.reason if r.verdict else ''}"
                      .rstrip() for r in by[st]]
    if by[Status.XFAIL]:
        bugs = sorted({r.verdict.known.bug for r in by[Status.XFAIL] if r.verdict and r.verdict.known and r.verdict.known.bug})
        lines.append(f"known divergences confirmed ({len(by[Status.XFAIL])}): {', '.join(bugs)}")
        lines += [f"  XFAIL {r.trace_name:<{width}}  {r.policy:<12} {r.verdict.reason if r.verdict else ''}".rstrip()
                  for r in by[Status.XFAIL]]
    if by[Status.SKIP]:
        lines.append(f"not applicable ({len(by[Status.SKIP])}):")
        for r in by[Status.SKIP]:
            why = r.verdict.known.why if r.verdict and r.verdict.known else ""
            lines.append(f"  SKIP  {r.trace_name:<{width}}  {r.policy:<12} {_short(why)}".rstrip())
    return "\n".join(lines)


def _short(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_summary(results: Sequence[ReplayResult], lines: bool = True) -> str:
    """One line per trace x policy (``lines=False``: only the totals; the headline lists the rest)."""
    width = max((len(r.trace_name) for r in results), default=10)
    out = [run_line(r, width) for r in results] if lines else []
    counts = Counter(r.status for r in results)
    events = sum(r.events for r in results)
    extra = "".join(f", {counts[s]} {w}" for s, w in ((Status.XFAIL, "xfail (known)"), (Status.XPASS, "xpass"),
                                                     (Status.SKIP, "skipped")) if counts[s])
    out.append(f"{len(results)} runs, {counts[Status.FAIL]} failed, {counts[Status.PASS]} passed{extra}; "
               f"{events} events replayed")
    return "\n".join(out)


def render_compare(res: CompareResult) -> str:
    """Text form of a comparison: verdict, first difference with context and rule, counters side by side."""
    a, b = res.policy_a, res.policy_b
    out = [f"{res.trace}  ({a} vs {b})"]
    out.append(f"  {res.events} events, {res.difference_count} differing row(s); "
               f"against the trace's expectations: {a} {res.replay_a.divergence_count} divergence(s), "
               f"{b} {res.replay_b.divergence_count}")
    for rep in (res.replay_a, res.replay_b):
        if rep.verdict is not None and rep.verdict.known is not None:
            out.append(f"  {rep.policy}: {rep.status.value}" + (f" ({rep.verdict.reason})" if rep.verdict.reason else ""))
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
