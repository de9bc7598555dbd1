"""``difftest generate``, ``shrink`` and ``fuzz``: the command lines of :mod:`difftest.search`.

All three exit 0 when they did their job (a kept divergence is a result, not a failure); their
traces go to ``-o`` (``-`` = stdout, the messages then go to stderr).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click

import difftest.progress as progress
from difftest.cli.options import input_errors
from difftest.cli.output_options import writable_dir, writable_file
from difftest.cli.vocabulary import echo_json, info
from difftest.search.campaign import CHUNK, Campaign, CampaignSpec, run_campaign
from difftest.search.fuzz import MIN_EVENTS, FuzzRun, ProgressFn, fuzz, render_summary
from difftest.search.generate import DEFAULT_DOMAIN, DEFAULT_GENERATION_POLICY, DOMAINS, generate, load_draft
from difftest.search.program import to_python
from difftest.search.shrink import DEFAULT_MAX_CANDIDATES, Goal, passing_policies, shrink
from difftest.trace.io import open_trace
from difftest.trace.outputs import to_stdout, write_trace_output
from difftest.variants import resolve_policy
from difftest.verdict.profiles import get_profile
from difftest.verdict.run_settings import settings_for


@click.command(name="generate")
@click.option("--seed", type=int, required=True, help="random seed (the same seed gives the same trace)")
@click.option("--events", type=click.IntRange(min=1), required=True, help="number of events")
@click.option("--domain", type=click.Choice(DOMAINS), default=DEFAULT_DOMAIN, show_default=True)
@click.option("--policy", "policy_name", default=DEFAULT_GENERATION_POLICY, show_default=True,
              help="policy (name or variant file) whose outcomes become the expectations")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), required=True, callback=writable_file,
              help="the trace file to write ('-' = stdout)")
@click.option("--json", "as_json", is_flag=True, help="print what was written as JSON")
def generate_cmd(seed: int, events: int, domain: str, policy_name: str, output: str, as_json: bool) -> None:
    """Write a random trace that respects preconditions, with the policy's outcomes as expectations (exit 0: written)."""

    @input_errors
    def run() -> None:
        policy = resolve_policy(policy_name)
        with progress.task(f"generating ({domain})", total=events, unit="events"):
            draft = generate(seed, events, domain, policy)
        path = write_trace_output(output, draft.numbered(), draft.meta)
        where = str(path) if path else "stdout"
        if as_json and not to_stdout(output):
            echo_json({"output": where, "events": draft.events, "rows": len(draft.rows), "domain": domain, "seed": seed,
                       "policy": policy_name})
        else:
            info(f"{where}: {draft.events} events ({domain} domain, seed {seed}, expectations from {policy_name})",
                 err=to_stdout(output))

    run()


@click.command(name="shrink")
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("--policy", "policy_a", default=None,
              help="policy A (name or variant file; default: the trace's metadata policy, else kvm-v7)")
@click.option("--against", "policy_b", default=None,
              help="policy B: keep A and B differing (without it: keep A diverging from the trace's expectations)")
@click.option("--profile", "profile_name", default=None,
              help="comparison profile (default: the trace's metadata 'profile', else strict)")
@click.option("--max-candidates", type=click.IntRange(min=1), default=DEFAULT_MAX_CANDIDATES, show_default=True)
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), required=True, callback=writable_file,
              help="the shrunk trace to write ('-' = stdout)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON (no builder code)")
@click.option("-v", "--verbose", is_flag=True, help="print each shrink pass's statistics")
def shrink_cmd(trace: str, policy_a: str | None, policy_b: str | None, profile_name: str | None, max_candidates: int,
               output: str, as_json: bool, verbose: bool) -> None:
    """Shrink TRACE while its first divergence keeps its rule id, event kind and triggering event (exit 0: done).

    Without --against, the policies of TRACE's ``policy`` metadata that pass it must go on passing.

    Policy, profile and host default to the trace's metadata, as in ``replay``, so the divergence
    kept is the one ``replay`` shows.
    """
    err = to_stdout(output)  # the trace goes to stdout: messages to stderr

    @input_errors
    def run() -> int:
        settings = settings_for(open_trace(trace), policy_a, profile_name)  # the same defaults as replay
        if not as_json:
            click.echo(settings.describe(), err=err)
        goal = Goal(settings.policy, resolve_policy(policy_b) if policy_b else None, settings.profile)
        draft = load_draft(trace)
        if goal.first(draft) is None:
            if as_json:
                echo_json({"trace": trace, "diverged": False, "goal": goal.describe()})
            else:
                click.echo(f"{trace}: no divergence ({goal.describe()}); nothing to shrink", err=err)
            return 0
        if goal.against is None:
            goal = Goal(goal.policy, None, goal.profile, passing_policies(draft, goal))
        with progress.task("shrinking", total=max_candidates, unit="candidates"):
            res = shrink(draft, goal, max_candidates)
        path = write_trace_output(output, res.draft.numbered(), res.draft.meta)
        where = str(path) if path else "stdout"
        if as_json and not err:
            echo_json({"trace": trace, "diverged": True, "goal": goal.describe(), "output": where,
                       "original_events": res.original_events, "events": res.draft.events, "first_divergence":
                       {"kind": str(res.kind), "index": res.index}, "tried": res.tried, "capped": res.capped,
                       "kept_passing": [p.name for p in goal.keep_passing],
                       "passes": [p.describe() for p in res.passes]})
            return 0
        click.echo(f"{where}: {res.original_events} -> {res.draft.events} events; first divergence {res.kind} "
                   f"(event {res.index}); {res.tried} candidates tried" + (" (cap reached)" if res.capped else ""), err=err)
        if goal.keep_passing:
            click.echo(f"  kept passing: {', '.join(p.name for p in goal.keep_passing)}", err=err)
        if verbose:
            for p in res.passes:
                click.echo(f"  pass {p.describe()}", err=err)
        if not progress.is_quiet() and not err:
            click.echo("")
            click.echo(to_python(res.draft, output), nl=False)
        return 0

    sys.exit(run())


@contextmanager
def progress_display(budget_seconds: float, iterations: int | None) -> Iterator[ProgressFn]:
    """A rich progress bar on stderr; silent when stderr is not a terminal, and under --quiet."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(TextColumn("fuzz"), BarColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, disable=not console.is_terminal or progress.is_quiet(), transient=True) as bar:
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
@click.option("--profile", "profile_name", default=None,
              help="comparison profile (default: strict; generated traces hold no recording quirks to mask)")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), required=True, callback=writable_dir,
              help="a directory: each kept (shrunk) divergence is written there as a trace")
@click.option("--json", "as_json", is_flag=True, help="print the findings as JSON instead of the table")
@click.option("--campaign", is_flag=True,
              help="DIR is a resumable campaign: the seeds tried and the divergences kept live there, and a "
                   "second run (or node) continues it with nothing tried twice")
@click.option("--cluster", "cluster", default=None, metavar="ADDRESS",
              help="compare on a Ray cluster (ray://HOST:PORT, or auto for the one started here); implies --campaign")
def fuzz_cmd(policy_a: str, policy_b: str, budget_seconds: float, seed: int, max_events: int, iterations: int | None,
             profile_name: str | None, out_dir: str, as_json: bool, campaign: bool, cluster: str | None) -> None:
    """Generate traces, compare A with B, shrink and keep each new kind of divergence in DIR (exit 0: done)."""

    @input_errors
    def run() -> int:
        a, b, prof = resolve_policy(policy_a), resolve_policy(policy_b), get_profile(profile_name or "strict")
        if not as_json:
            click.echo(f"using policy {a.name} against {b.name} (options), profile {prof.name} "
                       f"({'option' if profile_name else 'default'}), host: each generated trace's own (its metadata)")
        if campaign or cluster is not None:
            spec = CampaignSpec(a.name, b.name, seed, max_events, prof.name)
            chunks = None if iterations is None else -(-iterations // CHUNK)
            done = run_campaign(out_dir, spec, budget_seconds=budget_seconds, chunks=chunks, cluster=cluster)
            total = Campaign(out_dir, spec).tried()
            if as_json:
                echo_json({"campaign": out_dir, "iterations": done.iterations, "seconds": round(done.seconds, 3),
                           "differing": done.differing, "kept": [str(p) for p in done.kept], "tried_by_campaign": total})
                return 0
            info(f"{out_dir}: {done.iterations} traces compared in {done.seconds:.1f}s "
                 f"({done.iterations / max(done.seconds, 1e-9):.1f}/s), {done.differing} differing, "
                 f"{len(done.kept)} new divergence(s) kept; {total} tried by the whole campaign")
            for path in done.kept:
                info(f"  kept {path}")
            return 0  # the job was done; what it found is in DIR
        with progress_display(budget_seconds, iterations) as update:
            result = fuzz(a, b, out_dir, budget_seconds=budget_seconds, seed=seed, max_events=max_events,
                          iterations=iterations, profile=prof, on_progress=update)
        if as_json:
            echo_json({"policy_a": result.policy_a, "policy_b": result.policy_b, "seed": result.seed,
                       "iterations": result.iterations, "seconds": round(result.seconds, 3), "differing": result.differing,
                       "findings": [{"rule": f.kind.rule, "kind": f.kind.kind, "events": f.events,
                                     "original_events": f.original_events, "iteration": f.iteration, "domain": f.domain,
                                     "trace": str(f.path)} for f in result.findings]})
        elif progress.is_quiet():
            click.echo(render_summary(result).splitlines()[-1])
        else:
            click.echo(render_summary(result))
        return 0  # the job was done; what it found is in DIR and the summary

    sys.exit(run())
