"""Every KVM knob changes the outcome of some trace of the bundled corpus (issue 16).

A knob that no trace can tell apart from its other values is either dead (read nowhere, as
``value_check_first`` was) or untested; both are defects.  For each knob and each value it can
take, the test looks for a trace of traces/bugs/, rebase/, real/, pkvm/, pvm/ or xen/ whose replay differs (some
event's outcome or some snapshot's state) between a registered KVM policy and the same policy with
only that knob changed.  The expectations in the traces play no part: only the two replays are
compared, so the test cannot be satisfied by the model agreeing with itself.
"""

from __future__ import annotations

from dataclasses import fields
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from difftest.engine import replay_trace
from difftest.trace.io import TraceRow, open_trace
from difftest.verdict.profiles import get_profile
from reference_model.kvm import KvmMachine
from reference_model.kvm2026 import CHOICES_2026, DEFAULTS_2026, Kvm2026Knobs, Kvm2026Machine
from reference_model.kvm_knobs import CHOICES, V7_DEFAULTS, KvmKnobs
from reference_model.machine import Machine
from reference_model.policies import POLICIES, Policy

ROOT = Path(__file__).resolve().parents[2]
# The scenario corpora of every hypervisor the KVM-derived policies model (pKVM, PVM and Xen are KVM machines too).
TRACES = [p for sub in ("bugs", "rebase", "real", "pkvm", "pvm", "xen")
          for p in sorted((ROOT / "traces" / sub).glob("*.parquet"))]
KNOBS = [f.name for f in fields(KvmKnobs)] + [f.name for f in fields(Kvm2026Knobs)]
ALL_CHOICES = {**CHOICES, **CHOICES_2026}
# Values a non-choice, non-bool knob is tried with besides the ones registered policies use.
OTHER_VALUES: dict[str, tuple[Any, ...]] = {"cpuid7_ecx_keep": (0,), "pvm_supervisor_keys": (0xFFFF_FFFF,)}


@cache
def kvm_policies() -> tuple[Policy, ...]:
    """The registered policies whose machine reads the KVM knobs."""
    return tuple(p for p in POLICIES.values() if isinstance(p.build(), KvmMachine))


def knobs_of(policy: Policy) -> dict[str, Any] | None:
    """Every knob ``policy``'s machine reads, with its value (None: not a KVM policy)."""
    machine = policy.build()
    if not isinstance(machine, KvmMachine):
        return None
    extra = DEFAULTS_2026 if isinstance(machine, Kvm2026Machine) else {}
    return {**V7_DEFAULTS, **extra, **policy.knobs}


def values_of(knob: str) -> set[Any]:
    """Every value worth trying: its choices, both booleans, and what any registered policy sets."""
    default = {**V7_DEFAULTS, **DEFAULTS_2026}[knob]
    vals: set[Any] = {default, *OTHER_VALUES.get(knob, ())}
    if isinstance(default, bool):
        vals |= {True, False}
    vals |= set(ALL_CHOICES.get(knob, ()))
    vals |= {p.knobs[knob] for p in kvm_policies() if knob in p.knobs}
    return vals


_SEEN: dict[tuple[str, Path], tuple[tuple[int, str], ...]] = {}


def observed(policy: Policy, trace: Path) -> tuple[tuple[int, str], ...]:
    """What each row of ``trace`` gave under ``policy``: the outcome, or the snapshot's state."""
    key = (policy.name, trace)
    if key in _SEEN:
        return _SEEN[key]
    rows: list[tuple[int, str]] = []

    def observe(row: TraceRow, rr: Any, _m: Machine) -> None:
        rows.append((row.index, rr.describe_actual()))

    replay_trace(open_trace(trace), policy, get_profile("strict"), observe)
    _SEEN[key] = tuple(rows)
    return _SEEN[key]


def witness(knob: str) -> str | None:
    """A (policy, value, trace) whose replay the knob changes, or None."""
    # Policies that set the knob away from its default first: that is where it is most likely to matter.
    default = {**V7_DEFAULTS, **DEFAULTS_2026}[knob]
    bases = [p for p in kvm_policies() if knob in (knobs_of(p) or {})]
    bases.sort(key=lambda p: (knobs_of(p) or {})[knob] == default)
    for base in bases:
        current = (knobs_of(base) or {})[knob]
        for value in sorted(values_of(knob) - {current}, key=repr):
            alt = Policy(f"{base.name}+{knob}={value!r}", "", "", base.machine, {**base.knobs, knob: value})
            for trace in TRACES:
                if observed(base, trace) != observed(alt, trace):
                    return f"{base.name} with {knob}={value!r} on {trace.stem}"
    return None


def test_kvm_policies_are_found() -> None:
    names = {p.name for p in kvm_policies()}
    assert {"kvm-v4", "kvm-v7", "kvm-v7r", "upstream", "pkvm-pvm-compare"} <= names
    assert all(issubclass(type(p.build()), KvmMachine) for p in kvm_policies())


@pytest.mark.parametrize("knob", KNOBS)
def test_every_knob_changes_some_trace(knob: str) -> None:
    assert witness(knob) is not None, (
        f"knob {knob} changes no outcome of any scenario trace under any KVM policy: "
        "it is dead or untested")
