"""The ``difftest`` command line: thin wrappers over replay, corpus runs and the schema.

Exit codes: 0 no divergence, 1 divergence found, 2 bad input or usage.  Bad input is reported
as one line on stderr (file, event, column), never as a traceback.
"""

from __future__ import annotations

import functools
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from reference_model.host import DEFAULT_HOST, HostCpu, parse_features
from reference_model.policies import POLICIES, Policy, get_policy

from .errors import InputError
from .profiles import PROFILES, get_profile
from .render_text import render_replay
from .replay import replay_trace
from .schema import META_PREFIX, render_markdown
from .trace_io import TraceFile, find_traces, open_trace
from .variants import load_variant_file

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
DEFAULT_POLICY = "kvm-v7"


def _fail(message: str) -> None:
    click.echo(f"difftest: error: {message}", err=True)
    sys.exit(2)


def input_errors(fn: F) -> F:
    """Turn bad input into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            _fail(str(exc))
        except KeyError as exc:  # unknown policy or profile
            _fail(str(exc.args[0]) if exc.args else "unknown name")

    return wrapper  # type: ignore[return-value]


def resolve_policy(name: str) -> Policy:
    """A registered policy, or the user variant a TOML file describes."""
    if name.endswith(".toml") or "/" in name:
        return load_variant_file(name)
    return get_policy(name)


def parse_host_option(value: str | None) -> HostCpu | None:
    """``--host``: ``pks-host`` for every feature, or a comma-separated feature list (usage error otherwise)."""
    if value is None:
        return None
    if value == "pks-host":
        return DEFAULT_HOST
    try:
        return parse_features(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def from_metadata(tf: TraceFile, key: str, lookup: Callable[[str], T], name: str) -> T:
    """The policy or profile ``name`` a trace's metadata asks for; unknown, it is that file's error."""
    try:
        return lookup(name)
    except KeyError as exc:
        raise InputError(str(tf.path), f"metadata '{META_PREFIX}{key}': {exc.args[0] if exc.args else name}") from None
    except InputError as exc:  # a variant file the metadata names
        raise InputError(str(tf.path), f"metadata '{META_PREFIX}{key}': {exc}") from None


def default_policy_for(meta_policies: list[str]) -> str:
    if meta_policies:
        return meta_policies[0]
    return DEFAULT_POLICY if DEFAULT_POLICY in POLICIES else "hw"


class LazyGroup(click.Group):
    """A group whose commands live in their own modules, imported when one is run or listed.

    ``difftest replay`` should not pay for importing the KVM recorder, the QEMU compiler and the
    importers; ``lazy`` maps a command name to ``"module:attribute"`` of its click command.
    """

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, attr = self.lazy[cmd_name].split(":")
            command = getattr(importlib.import_module(module), attr)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]},
             lazy={"generate": "difftest.generate:generate_cmd", "shrink": "difftest.shrink:shrink_cmd",
                   "fuzz": "difftest.fuzz:fuzz_cmd"})
@click.version_option(package_name="pks-difftest")
@click.option("--reference", is_flag=True,
              help="replay row by row through the reference path only (slow; for debugging the fast path)")
def main(reference: bool) -> None:
    """Trace-driven differential tester for Intel PKS virtualization."""
    if reference:  # an environment variable, so `report --jobs N` workers inherit it
        import os

        os.environ["DIFFTEST_REFERENCE"] = "1"


def known_options(fn: F) -> F:
    """``--known FILE`` (repeatable) and ``--no-known``: which known-outcomes declarations judge the runs."""
    fn = click.option("--no-known", "no_known", is_flag=True,
                      help="ignore known-outcomes.toml files: every divergence is a FAIL")(fn)
    return click.option("--known", "known_files", multiple=True, type=click.Path(dir_okay=False),
                        help="a known-outcomes file (docs/known-outcomes.md) besides the known-outcomes.toml "
                             "found next to each trace and in its parent folders (repeatable)")(fn)  # type: ignore[return-value]


def known_outcomes(known_files: tuple[str, ...], no_known: bool) -> Any:
    from .known_outcomes import NO_KNOWN_OUTCOMES, KnownOutcomes

    return NO_KNOWN_OUTCOMES if no_known else KnownOutcomes(known_files)


@main.command()
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("--policy", "policy_name", default=None, help="policy name or variant file (default: the trace's, else kvm-v7)")
@click.option("--profile", "profile_name", default=None,
              help="comparison profile (default: the trace's metadata 'profile', else strict)")
@click.option("--host", "host_features", default=None, callback=lambda c, p, v: parse_host_option(v),
              help="replay on this host instead of the trace's: 'pks-host' (all features) or a feature list")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--verbose", "-v", is_flag=True, help="list every later divergence")
@known_options
@input_errors
def replay(trace: str, policy_name: str | None, profile_name: str | None, host_features: HostCpu | None,
           as_json: bool, verbose: bool, known_files: tuple[str, ...], no_known: bool) -> None:
    """Replay TRACE under a policy and diff every expectation and snapshot.

    Exit 0 when the run PASSes, is a declared known divergence (XFAIL) or is declared not
    applicable (SKIP); 1 on an undeclared divergence (FAIL) or a declared one that did not show (XPASS).
    """
    from .run_settings import settings_for

    tf = open_trace(trace)
    known = known_outcomes(known_files, no_known)
    run = settings_for(tf, policy_name, profile_name, host_features)
    res = replay_trace(tf, run.policy, run.profile)
    verdict = res.judge(known.lookup(tf.path, run.policy.name))
    if as_json:  # the JSON names its policy and profile
        click.echo(json.dumps(res.to_json(), indent=2, sort_keys=True))
    else:
        click.echo(run.describe())
        click.echo(render_replay(res, verbose=verbose))
    sys.exit(1 if verdict.status.bad else 0)


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), default=None,
              help="write index.html (the report page), report.txt and results.jsonl here")
@click.option("--policy", "policy_names", multiple=True,
              help="policy to run every trace under (repeatable; default kvm-v7, plus each trace's own)")
@click.option("--profile", "profile_name", default=None,
              help="comparison profile for every trace (default: each trace's metadata 'profile', else strict)")
@click.option("--junit", "junit", type=click.Path(dir_okay=False), default=None, help="write JUnit XML here")
@click.option("--jsonl", "jsonl", type=click.Path(dir_okay=False), default=None,
              help="write one JSON line per trace x policy here")
@click.option("--baseline", "baseline", default=None, help="a previous run's JSONL or -o folder: report what changed")
@click.option("--jobs", "-j", "jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="worker processes")
@known_options
@input_errors
def report(paths: tuple[str, ...], out_dir: str | None, policy_names: tuple[str, ...], profile_name: str | None,
           junit: str | None, jsonl: str | None, baseline: str | None, jobs: int, known_files: tuple[str, ...],
           no_known: bool) -> None:
    """Replay every trace under PATHS and summarise.

    Each run is judged against the known outcomes (docs/known-outcomes.md): PASS, FAIL, XFAIL
    (declared known divergence), XPASS (declared, did not show) or SKIP (not applicable).  Exit 1
    on any FAIL or XPASS; with --baseline, only on new failures (a moved first divergence counts)
    or XPASS.
    """
    from .corpus_run import ReportRequest, run_report

    outcome = run_report(ReportRequest(paths, policy_names, profile_name, out_dir, junit, jsonl, baseline, jobs,
                                       known_files=known_files, known=not no_known))
    click.echo(outcome.text)
    if out_dir:
        click.echo(f"report: {Path(out_dir) / 'index.html'}")
    sys.exit(outcome.exit_code)


@main.command()
@click.argument("traces", nargs=-1, required=True)
@click.option("--policy", "policy_a", default=None, help="policy A (name or variant file; default: each trace's, else kvm-v7)")
@click.option("--against", "policy_b", required=True, help="policy B (name or variant file)")
@click.option("--profile", "profile_name", default=None,
              help="comparison profile (default: each trace's metadata 'profile', else strict)")
@click.option("--host", "host_features", default=None, callback=lambda c, p, v: parse_host_option(v),
              help="replay on this host instead of the traces': 'pks-host' (all features) or a feature list")
@click.option("--json", "as_json", is_flag=True, help="print the results as JSON (a list, one per trace)")
@click.option("--html", "html_file", type=click.Path(dir_okay=False), default=None,
              help="also write the two policies side by side as a self-contained HTML page")
@known_options
@input_errors
def compare(traces: tuple[str, ...], policy_a: str | None, policy_b: str, profile_name: str | None,
            host_features: HostCpu | None, as_json: bool, html_file: str | None, known_files: tuple[str, ...],
            no_known: bool) -> None:
    """Replay each trace under two policies and show where they part (exit 1 if they differ).

    Each side is also judged against the trace's expectations and its known outcomes
    (docs/known-outcomes.md), so a difference that is a declared known bug says so.
    """
    from .compare import compare_trace, render_compare
    from .run_settings import settings_for

    b = resolve_policy(policy_b)
    paths = find_traces(traces)
    tfs = [open_trace(p) for p in paths]  # every file is checked before any output
    settings = [settings_for(tf, policy_a, profile_name, host_features) for tf in tfs]
    known = known_outcomes(known_files, no_known)
    results = []
    for tf, run in zip(tfs, settings, strict=True):
        res = compare_trace(tf, run.policy, b, run.profile)
        res.replay_a.judge(known.lookup(tf.path, res.policy_a))
        res.replay_b.judge(known.lookup(tf.path, res.policy_b))
        results.append(res)
    lines = sorted({run.describe() for run in settings})
    for line in lines if not as_json else ():  # the JSON names its policies
        click.echo(line + f"; against {b.name}")
    if as_json:
        click.echo(json.dumps([r.to_json() for r in results], indent=2, sort_keys=True))
    else:
        click.echo("\n\n".join(render_compare(r) for r in results))
        differ = sum(1 for r in results if r.differ)
        click.echo(f"\n{len(results)} trace(s): {differ} differ, {len(results) - differ} agree")
    if html_file:
        from .report_html import write_compare_page

        write_compare_page(html_file, results)
    sys.exit(1 if any(r.differ for r in results) else 0)


@main.command()
def schema() -> None:
    """Print the trace format (columns, event kinds, results, metadata)."""
    click.echo("# pks-difftest trace format v1\n")
    click.echo(render_markdown())


@main.command()
def policies() -> None:
    """List the registered policies with a one-line description and source."""
    width = max(len(n) for n in POLICIES)
    for name, p in POLICIES.items():
        click.echo(f"{name:<{width}}  {p.description}  [{p.source}]")


@main.command()
def profiles() -> None:
    """List the comparison profiles and what each masks, with reasons."""
    for name, prof in PROFILES.items():
        click.echo(f"{name}: {prof.description}")
        for m in prof.masks:
            click.echo(f"  - {m.name} ({m.rule}): {m.reason}")


# Subcommands defined in their own modules (each feature module defines its click command; registering
# it is one line in a ``lazy`` table).
@main.group(cls=LazyGroup, lazy={"kvm": "difftest.kvm.recorder:record_kvm", "qemu": "difftest.qemu.command:record_qemu"})
def record() -> None:
    """Record real behaviour (a KVM host, QEMU TCG) as a trace whose expectations are what happened."""


@main.group(name="import", cls=LazyGroup, lazy={"ftrace": "difftest.importers.ftrace:import_ftrace_cmd",
                                                "pkvm-vmexit-trace": "difftest.importers.pkvm_vmexit:import_pkvm_cmd"})
def import_() -> None:
    """Convert a foreign capture (tracefs text, pKVM vmexit_trace) into a trace."""

if __name__ == "__main__":  # pragma: no cover
    main()
