"""TAP version 13 for replay and report results, in the dialect kvm-unit-tests' ``run_tests.sh -t`` writes.

That script prints ``TAP version 13``, one ``ok N - test: summary`` / ``not ok N - test: summary``
line per test (``# skip`` after skipped ones) and the plan ``1..N`` last, so a KVM developer's TAP
consumer (prove, tappy, a CI's TAP plugin) reads our results the same way.  One test point is
one trace under one policy.  On top of that dialect we use what TAP13 defines and run_tests.sh
does not need:

- a known divergence that happened as declared (XFAIL) is ``not ok ... # TODO <bug>``, so
  harnesses count it as expected, not as a failure;
- a declared known divergence that did not show (XPASS) is ``not ok``: the model or the trace
  changed, and someone has to look;
- not applicable (SKIP) is ``ok ... # SKIP <reason>``;
- every ``not ok`` carries a YAML block (``---`` .. ``...``, indented two spaces) with the first
  divergence: event, rule id and text, and each field that differs.

Known-outcome statuses come from the caller (:class:`PointStatus`), or from a ``status`` attribute
on the result (``PASS``/``FAIL``/``XFAIL``/``XPASS``/``SKIP``) when the result carries one;
without either, a run is PASS when it has no divergence and FAIL otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from difftest.verdict.diff import fmt
from difftest.verdict.results import ReplayResult
from reference_model.rules import RULES, describe

STATUSES = ("PASS", "FAIL", "XFAIL", "XPASS", "SKIP")


@dataclass(frozen=True)
class PointStatus:
    """A run's verdict against the known outcomes: one of :data:`STATUSES`, and why (bug id, reason)."""

    status: str
    reason: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}; known: {', '.join(STATUSES)}")


StatusSource = Mapping[tuple[str, str], PointStatus] | Callable[[ReplayResult], PointStatus | None]


def status_of(res: ReplayResult, statuses: StatusSource | None = None) -> PointStatus:
    """The verdict of one run: the caller's, else the result's own ``status``, else pass/fail."""
    got: PointStatus | None = None
    if callable(statuses):
        got = statuses(res)
    elif statuses is not None:
        got = statuses.get((res.trace, res.policy))
    if got is None:
        own = getattr(res, "status", None)
        own = getattr(own, "value", own)  # a verdict's Status enum, or its name
        verdict = getattr(res, "verdict", None)
        if isinstance(own, PointStatus):
            got = own
        elif isinstance(own, str) and own.upper() in STATUSES:
            reason = getattr(verdict, "reason", None) or getattr(res, "status_reason", "") or ""
            got = PointStatus(own.upper(), str(reason))
    return got or PointStatus("PASS" if res.passed else "FAIL")


def _escape(text: str) -> str:
    """A description on one line without ``#``: TAP13 allows ``\\#``, but consumers such as tap.py split
    at the first ``#`` whatever precedes it, which would turn a trace named "x # SKIP" into a skip."""
    return " ".join(text.split()).replace("#", "%23")


def _scalar(v: object) -> str:
    """A YAML scalar: numbers as they are, everything else a double-quoted (JSON) string."""
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, int):
        return str(v)
    return json.dumps(str(v), ensure_ascii=False)


def _summary(res: ReplayResult) -> str:
    first = res.first
    if first is None:
        return f"{res.events} events, {res.compared} compared, 0 divergences"
    rule = f" {first.primary_rule}" if first.primary_rule else ""
    return f"{res.divergence_count} divergence(s), first at event {first.index}{rule}"


def yaml_block(res: ReplayResult, status: PointStatus) -> list[str]:
    """The TAP13 diagnostic block of a run that is reported ``not ok``."""
    first = res.first
    lines = ["  ---"]

    def put(key: str, value: object, indent: str = "  ") -> None:
        lines.append(f"{indent}{key}: {_scalar(value)}")

    if first is None:
        put("message", f"expected known divergence did not show{': ' + status.reason if status.reason else ''}")
    else:
        put("message", f"first divergence at event {first.index} (seq {first.seq}): {first.describe_event()}")
    put("severity", {"XFAIL": "todo", "XPASS": "xpass"}.get(status.status, "fail"))
    put("status", status.status)
    put("trace", res.trace)
    put("policy", res.policy)
    put("profile", res.profile)
    put("divergences", res.divergence_count)
    if first is not None:
        put("event", first.index)
        put("seq", first.seq)
        rule = first.primary_rule
        if rule:
            put("rule", rule)
            put("rule_text", describe(rule) if rule in RULES else "(not in the rule catalogue)")
        put("expected", first.describe_expect())
        put("got", first.describe_actual())
        if first.diffs:
            lines.append("  diffs:")
            for d in first.diffs:
                put("- field", d.field, "  ")
                put("expected", fmt(d.field, d.expected), "    ")
                put("actual", fmt(d.field, d.actual), "    ")
    if status.reason:
        put("known", status.reason)
    lines.append("  ...")
    return lines


def tap_document(results: Sequence[ReplayResult], statuses: StatusSource | None = None) -> str:
    """The TAP13 text of ``results``: version line, one test point per run, YAML for ``not ok``, plan last."""
    out = ["TAP version 13"]
    for n, res in enumerate(results, 1):
        st = status_of(res, statuses)
        name = _escape(f"{res.trace_name} [{res.policy}]: {_summary(res)}")
        reason = _escape(st.reason)
        if st.status == "PASS":
            out.append(f"ok {n} - {name}")
        elif st.status == "SKIP":
            out.append(f"ok {n} - {name} # SKIP {reason or 'not applicable'}")
        elif st.status == "XFAIL":
            out.append(f"not ok {n} - {name} # TODO known divergence{' ' + reason if reason else ''}")
            out += yaml_block(res, st)
        elif st.status == "XPASS":
            out.append(f"not ok {n} - {name}: declared known divergence did not show (XPASS)")
            out += yaml_block(res, st)
        else:
            out.append(f"not ok {n} - {name}")
            out += yaml_block(res, st)
    out.append(f"1..{len(results)}")
    return "\n".join(out) + "\n"
