"""Field-by-field comparison of an expectation (or another policy's outcome) with an outcome."""

from __future__ import annotations

from dataclasses import dataclass

from difftest.trace.io import Expect
from reference_model.events import OUTCOME_FIELDS, Event, Outcome

from .profiles import Profile


@dataclass(frozen=True, slots=True)
class FieldDiff:
    """One field that differs; ``mask`` names the profile mask (or ``undefined``) that hid it."""

    field: str
    expected: object
    actual: object
    mask: str | None = None
    mask_reason: str | None = None

    def render(self) -> str:
        return f"{self.field}: expected {fmt(self.field, self.expected)}, got {fmt(self.field, self.actual)}"


DECIMAL_FIELDS = frozenset({"count", "key", "cpl", "vcpu", "src_vcpu", "reason", "cpuid_leaf", "cpuid_subleaf"})


def fmt(name: str, v: object) -> str:
    """Human form of an outcome field value."""
    if v is None:
        return "-"
    if isinstance(v, (bool, str)):
        return str(v)
    if isinstance(v, tuple):
        return "[" + ", ".join(fmt(name, x) for x in v) + "]"
    if name in DECIMAL_FIELDS or not isinstance(v, int):
        return str(v)
    return f"{v:#x}"


UNDEFINED_REASON = "ARCH.TLB: the architecture leaves this undefined without a flush after a CR4.PKS/PKE change or remap"


def diff_outcome(expect: Expect, out: Outcome, ev: Event, profile: Profile) -> tuple[list[FieldDiff], list[FieldDiff]]:
    """(divergences, masked differences) between what ``expect`` states and ``out``."""
    diffs: list[FieldDiff] = []
    masked: list[FieldDiff] = []
    for name in OUTCOME_FIELDS:
        e = getattr(expect, name)
        if e is None:
            continue
        a = getattr(out, name)
        if e == a:
            continue
        if name in out.undefined:
            masked.append(FieldDiff(name, e, a, "undefined", UNDEFINED_REASON))
            continue
        for mask in profile.masks:
            if mask.hides(name, e, a) and mask.applies(ev, out):
                masked.append(FieldDiff(name, e, a, mask.name, mask.reason))
                break
        else:
            diffs.append(FieldDiff(name, e, a))
    return diffs, masked


def diff_outcomes(a: Outcome, b: Outcome) -> list[FieldDiff]:
    """Fields where two policies' outcomes differ (``expected`` = A, ``actual`` = B)."""
    return [FieldDiff(n, getattr(a, n), getattr(b, n)) for n in OUTCOME_FIELDS if getattr(a, n) != getattr(b, n)]
