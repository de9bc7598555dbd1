"""The status of one run (trace x policy) against its known outcome: PASS, FAIL, XFAIL, XPASS, SKIP.

========  =====================================================================================
PASS      no divergence, and none was declared
FAIL      a divergence nobody declared, or a declared one at another event or under another rule
XFAIL     the declared known divergence happened, first, at the declared event and rule
XPASS     a declared known divergence did not show: the model or the trace changed (flagged)
SKIP      the trace does not apply to the policy (declared ``na``, with the reason)
========  =====================================================================================

A run set is good (exit 0) iff it has no FAIL and no XPASS (:func:`exit_code`).  These names are
the ones TAP, JUnit, JSONL and the pytest plugin use.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from .known_outcomes import KnownOutcome


class Status(enum.Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    XFAIL = "XFAIL"
    XPASS = "XPASS"
    SKIP = "SKIP"

    @property
    def bad(self) -> bool:
        """Statuses that make a run set fail (exit 1)."""
        return self in (Status.FAIL, Status.XPASS)


ORDER = (Status.FAIL, Status.XPASS, Status.XFAIL, Status.SKIP, Status.PASS)  # worst first, for listings


@dataclass(frozen=True)
class Verdict:
    """A run's status and why (one line), with the declaration it was judged against."""

    status: Status
    reason: str = ""
    known: KnownOutcome | None = None


def judge(first_event: int | None, first_rule: str | None, known: KnownOutcome | None) -> Verdict:
    """Judge a run by its first divergence (``None``: it passed) against its declaration."""
    diverged = first_event is not None
    if known is None or known.verdict == "pass":
        if not diverged:
            return Verdict(Status.PASS, "", known)
        return Verdict(Status.FAIL, f"first divergence at event {first_event} {first_rule or ''}".rstrip(), known)
    if known.verdict == "na":
        return Verdict(Status.SKIP, f"not applicable: {known.why}", known)
    if not diverged:
        return Verdict(Status.XPASS, f"known {known.bug} (event {known.event} {known.rule}) did not show: "
                                     "the model or the trace changed", known)
    if (first_event, first_rule) == (known.event, known.rule):
        return Verdict(Status.XFAIL, f"known {known.bug} at event {known.event} {known.rule}", known)
    return Verdict(Status.FAIL, f"known {known.bug} is declared at event {known.event} {known.rule}, but the first "
                                f"divergence is at event {first_event} {first_rule or ''}".rstrip(), known)


def exit_code(statuses: Iterable[Status]) -> int:
    """0 when no run FAILed or XPASSed, else 1."""
    return 1 if any(s.bad for s in statuses) else 0


def count(statuses: Iterable[Status]) -> Counter[Status]:
    return Counter(statuses)


def render_counts(counts: Counter[Status]) -> str:
    """'3 failed, 1 xpass, 12 xfail (known), 5 skipped, 190 passed' (only the non-zero parts, worst first)."""
    words = {Status.FAIL: "failed", Status.XPASS: "xpass (known divergence gone)", Status.XFAIL: "xfail (known)",
             Status.SKIP: "skipped (not applicable)", Status.PASS: "passed"}
    parts = [f"{counts[s]} {words[s]}" for s in ORDER if counts[s]]
    return ", ".join(parts) or "nothing run"
