"""``difftest generate``, ``shrink`` and ``fuzz``: the command lines of :mod:`difftest.search`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click

from difftest.cli.options import input_errors
from difftest.search.campaign import CHUNK, Campaign, CampaignSpec, run_campaign
from difftest.search.fuzz import MIN_EVENTS, FuzzRun, ProgressFn, fuzz, render_summary
from difftest.search.generate import DEFAULT_DOMAIN, DEFAULT_GENERATION_POLICY, DOMAINS, generate, load_draft
from difftest.search.program import to_python
from difftest.search.shrink import DEFAULT_MAX_CANDIDATES, Goal, passing_policies, shrink
from difftest.variants import resolve_policy
from difftest.verdict.profiles import get_profile


@click.command(name="generate")
@click.option("--seed", type=int, required=True, help="random seed (the same seed gives the same trace)")
@click.option("--events", type=click.IntRange(min=1), required=True, help="number of events")
@click.option("--domain", type=click.Choice(DOMAINS), default=DEFAULT_DOMAIN, show_default=True)
@click.option("--policy", "policy_name", default=DEFAULT_GENERATION_POLICY, show_default=True,
              help="policy (name or variant file) whose outcomes become the expectations")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), required=True)
def generate_cmd(seed: int, events: int, domain: str, policy_name: str, output: str) -> None:
    """Write a random trace that respects preconditions, with the policy's outcomes as expectations."""

    @input_errors
    def run() -> None:
        draft = generate(seed, events, domain, resolve_policy(policy_name))
        path = draft.write(output)
        click.echo(f"{path}: {draft.events} events ({domain} domain, seed {seed}, expectations from {policy_name})")

    run()


@click.command(name="shrink")
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("--policy", "policy_a", required=True, help="policy A (name or variant file)")
@click.option("--against", "policy_b", default=None,
              help="policy B: keep A and B differing (without it: keep A diverging from the trace's expectations)")
@click.option("--profile", "profile_name", default="strict", show_default=True)
@click.option("--max-candidates", type=click.IntRange(min=1), default=DEFAULT_MAX_CANDIDATES, show_default=True)
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), required=True)
@click.option("-v", "--verbose", is_flag=True, help="print each shrink pass's statistics")
def shrink_cmd(trace: str, policy_a: str, policy_b: str | None, profile_name: str, max_candidates: int,
               output: str, verbose: bool) -> None:
    """Shrink TRACE while its first divergence keeps its rule id, event kind and triggering event (exit 1: kept, 0: none).

    Without --against, the policies of TRACE's ``policy`` metadata that pass it must go on passing.
    """

    @input_errors
    def run() -> int:
        goal = Goal(resolve_policy(policy_a), resolve_policy(policy_b) if policy_b else None, get_profile(profile_name))
        draft = load_draft(trace)
        if goal.first(draft) is None:
            click.echo(f"{trace}: no divergence ({goal.describe()}); nothing to shrink")
            return 0
        if goal.against is None:
            goal = Goal(goal.policy, None, goal.profile, passing_policies(draft, goal))
        res = shrink(draft, goal, max_candidates)
        res.draft.write(output)
        click.echo(f"{output}: {res.original_events} -> {res.draft.events} events; first divergence {res.kind} "
                   f"(event {res.index}); {res.tried} candidates tried" + (" (cap reached)" if res.capped else ""))
        if goal.keep_passing:
            click.echo(f"  kept passing: {', '.join(p.name for p in goal.keep_passing)}")
        if verbose:
            for p in res.passes:
                click.echo(f"  pass {p.describe()}")
        click.echo("")
        click.echo(to_python(res.draft, output), nl=False)
        return 1

    sys.exit(run())


@contextmanager
def progress_display(budget_seconds: float, iterations: int | None) -> Iterator[ProgressFn]:
    """A rich progress bar on stderr; silent when stderr is not a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(TextColumn("fuzz"), BarColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, disable=not console.is_terminal, transient=True) as bar:
        total = float(iterations) if iterations is not None else budget_seconds
        task = bar.add_task("", total=total)

        def update(run: FuzzRun) -> None:
            done = run.iterations if iterations is not None else min(run.seconds, budget_seconds)
            bar.update(task, completed=done, description=f"{run.iterations} traces, {run.differing} differing, "
                                                         f"{len(run.findings)} kept")

        yield update


@click.command(name="fuzz")
@click.option("--policy", "policy_a", required=True, help="policy A (name or variant file)")
@click.option("--against", "policy_b", required=True, help="policy B, the reference (its outcomes drive generation)")
@click.option("--budget-seconds", type=click.FloatRange(min=0), default=60.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-events", type=click.IntRange(min=MIN_EVENTS), default=30, show_default=True,
              help="longest generated trace")
@click.option("--iterations", type=click.IntRange(min=1), default=None,
              help="run exactly this many traces (ignores the budget; fully repeatable)")
@click.option("--profile", "profile_name", default="strict", show_default=True)
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), required=True)
@click.option("--campaign", is_flag=True,
              help="DIR is a resumable campaign: the seeds tried and the divergences kept live there, and a "
                   "second run (or node) continues it with nothing tried twice")
@click.option("--cluster", "cluster", default=None, metavar="ADDRESS",
              help="compare on a Ray cluster (ray://HOST:PORT, or auto for the one started here); implies --campaign")
def fuzz_cmd(policy_a: str, policy_b: str, budget_seconds: float, seed: int, max_events: int, iterations: int | None,
             profile_name: str, out_dir: str, campaign: bool, cluster: str | None) -> None:
    """Generate traces, compare A with B, shrink and keep each new kind of divergence in DIR (exit 1: some kept)."""

    @input_errors
    def run() -> int:
        a, b, prof = resolve_policy(policy_a), resolve_policy(policy_b), get_profile(profile_name)
        if campaign or cluster is not None:
            spec = CampaignSpec(a.name, b.name, seed, max_events, prof.name)
            chunks = None if iterations is None else -(-iterations // CHUNK)
            done = run_campaign(out_dir, spec, budget_seconds=budget_seconds, chunks=chunks, cluster=cluster)
            total = Campaign(out_dir, spec).tried()
            click.echo(f"{out_dir}: {done.iterations} traces compared in {done.seconds:.1f}s "
                       f"({done.iterations / max(done.seconds, 1e-9):.1f}/s), {done.differing} differing, "
                       f"{len(done.kept)} new divergence(s) kept; {total} tried by the whole campaign")
            for path in done.kept:
                click.echo(f"  kept {path}")
            return 1 if done.kept else 0
        with progress_display(budget_seconds, iterations) as update:
            result = fuzz(a, b, out_dir, budget_seconds=budget_seconds, seed=seed, max_events=max_events,
                          iterations=iterations, profile=prof, on_progress=update)
        click.echo(render_summary(result))
        return 1 if result.findings else 0

    sys.exit(run())
