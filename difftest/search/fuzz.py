"""The fuzz loop: generate, compare two policies, shrink, keep each new kind of divergence.

Iteration ``i`` of a run with seed ``S`` generates its trace from its own seed (``S``, ``i``) in a
domain chosen by ``i``, so what iteration ``i`` finds never depends on time; the budget only
decides how many iterations run (``iterations`` fixes that number for fully repeatable runs).
A divergence is *new* when its kind (first-difference rule id and event kind) has not been kept
yet in this run; it is shrunk and written as ``<rule>-<kind>.parquet``.  The engine
(:func:`fuzz`) reports progress through a callback; :func:`render_summary` and
:func:`progress_display` are the reporting side.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from difftest.verdict.profiles import Profile, get_profile
from reference_model.policies import Policy

from .generate import DOMAINS, generate
from .shrink import DivergenceKind, Goal, shrink

SEED_STRIDE = 1_000_003  # iteration seeds: seed * SEED_STRIDE + i (distinct for every (seed, i) with i < stride)
MIN_EVENTS = 4


@dataclass
class Finding:
    """One kept divergence."""

    kind: DivergenceKind
    path: Path
    events: int
    original_events: int
    iteration: int
    domain: str
    shrink_tries: int


@dataclass
class FuzzRun:
    """What a fuzz run did."""

    policy_a: str
    policy_b: str
    seed: int
    iterations: int = 0
    differing: int = 0  # iterations whose trace showed a difference
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0


ProgressFn = Callable[[FuzzRun], None]


def iteration_plan(seed: int, i: int, max_events: int) -> tuple[int, str, int]:
    """(trace seed, domain, number of events) of iteration ``i``: a pure function of its inputs."""
    trace_seed = seed * SEED_STRIDE + i
    domain = DOMAINS[i % len(DOMAINS)]
    events = MIN_EVENTS + (trace_seed * 7919) % max(1, max_events - MIN_EVENTS + 1)
    return trace_seed, domain, events


def fuzz(policy_a: Policy, policy_b: Policy, out_dir: str | Path, *, budget_seconds: float = 60.0, seed: int = 0,
         max_events: int = 30, iterations: int | None = None, profile: Profile | None = None,
         on_progress: ProgressFn | None = None) -> FuzzRun:
    """Run the loop until the budget (or ``iterations``) is spent; B's outcomes drive generation."""
    out = Path(out_dir)
    prof = profile or get_profile("strict")
    goal = Goal(policy_a, policy_b, prof)
    run = FuzzRun(policy_a.name, policy_b.name, seed)
    kept: set[DivergenceKind] = set()
    t0 = time.monotonic()
    i = 0
    while (iterations is None or i < iterations) and (iterations is not None or time.monotonic() - t0 < budget_seconds):
        trace_seed, domain, events = iteration_plan(seed, i, max_events)
        draft = generate(trace_seed, events, domain, policy_b)
        found = goal.first(draft)
        run.iterations += 1
        if found is not None:
            run.differing += 1
            if found[0] not in kept:
                kept.add(found[0])
                res = shrink(draft, goal)
                small = res.draft
                small.meta.update({
                    "name": res.kind.slug(),
                    "description": f"{policy_a.name} and {policy_b.name} differ first on {res.kind}",
                    "source": f"difftest fuzz --policy {policy_a.name} --against {policy_b.name} --seed {seed} "
                              f"(iteration {i}, {domain} domain, {res.original_events} events shrunk to "
                              f"{small.events})",
                    "policy": policy_b.name,
                    "notes": f"expectations are {policy_b.name}'s outcomes; {policy_a.name} diverges from them",
                })
                path = small.write(out / f"{res.kind.slug()}.parquet")
                run.findings.append(Finding(res.kind, path, small.events, res.original_events, i, domain, res.tried))
        i += 1
        run.seconds = time.monotonic() - t0
        if on_progress is not None:
            on_progress(run)
    run.seconds = time.monotonic() - t0
    return run


# --------------------------------------------------------------------------- reporting


def render_summary(run: FuzzRun) -> str:
    """The summary table (plain text when not on a terminal)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"fuzz {run.policy_a} vs {run.policy_b} (seed {run.seed})")
    for col in ("rule", "event kind", "events", "from", "iteration", "domain", "trace"):
        table.add_column(col, justify="right" if col in ("events", "from", "iteration") else "left")
    for f in run.findings:
        table.add_row(f.kind.rule, f.kind.kind, str(f.events), str(f.original_events), str(f.iteration), f.domain,
                      str(f.path))
    console = Console(width=160, record=True, force_terminal=False, color_system=None)
    with console.capture() as cap:
        console.print(table)
        console.print(f"{run.iterations} traces in {run.seconds:.1f}s, {run.differing} differing, "
                      f"{len(run.findings)} distinct divergence(s) kept")
    return cap.get().rstrip()


# --------------------------------------------------------------------------- command line
