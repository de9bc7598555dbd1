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
from .output_options import writable_dir, writable_file
from .policy_names import resolve_cli_policy
from .profiles import PROFILES, get_profile
from .render_text import render_replay
from .replay import replay_trace
from .schema import META_PREFIX, render_markdown
from .trace_io import TraceFile, find_traces, open_trace

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
        except OSError as exc:  # an output that became unwritable during the run (checked before it started)
            _fail(str(InputError(exc.filename or "output", f"cannot write: {exc.strerror or exc}")))

    return wrapper  # type: ignore[return-value]


def resolve_policy(name: str) -> Policy:
    """A policy named on the command line: registered, or the user variant a TOML file describes."""
    return resolve_cli_policy(name)


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


@main.command()
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("--policy", "policy_name", default=None, help="policy name or variant file (default: the trace's, else kvm-v7)")
@click.option("--profile", "profile_name", default=None,
              help="comparison profile (default: the trace's metadata 'profile', else strict)")
@click.option("--host", "host_features", default=None, callback=lambda c, p, v: parse_host_option(v),
              help="replay on this host instead of the trace's: 'pks-host' (all features) or a feature list")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--verbose", "-v", is_flag=True, help="list every later divergence")
@input_errors
def replay(trace: str, policy_name: str | None, profile_name: str | None, host_features: HostCpu | None,
           as_json: bool, verbose: bool) -> None:
    """Replay TRACE under a policy and diff every expectation and snapshot."""
    tf = open_trace(trace)
    tf.host_override = host_features
    # (the trace's own policy must be registered: a trace never makes us open a file)
    policy = resolve_policy(policy_name) if policy_name else from_metadata(tf, "policy", get_policy,
                                                                            default_policy_for(tf.policies()))
    profile = get_profile(profile_name) if profile_name else from_metadata(tf, "profile", get_profile,
                                                                           tf.meta.get("profile", "strict"))
    res = replay_trace(tf, policy, profile)
    if as_json:
        click.echo(json.dumps(res.to_json(), indent=2, sort_keys=True))
    else:
        click.echo(render_replay(res, verbose=verbose))
    sys.exit(0 if res.passed else 1)


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), default=None, callback=writable_dir,
              help="write index.html (the report page), report.txt and results.jsonl here")
@click.option("--policy", "policy_names", multiple=True,
              help="policy to run every trace under (repeatable; default kvm-v7, plus each trace's own)")
@click.option("--profile", "profile_name", default=None,
              help="comparison profile for every trace (default: each trace's metadata 'profile', else strict)")
@click.option("--junit", "junit", type=click.Path(dir_okay=False), default=None, callback=writable_file,
              help="write JUnit XML here")
@click.option("--jsonl", "jsonl", type=click.Path(dir_okay=False), default=None, callback=writable_file,
              help="write one JSON line per trace x policy here")
@click.option("--baseline", "baseline", default=None, help="a previous run's JSONL or -o folder: report what changed")
@click.option("--jobs", "-j", "jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="worker processes")
@input_errors
def report(paths: tuple[str, ...], out_dir: str | None, policy_names: tuple[str, ...], profile_name: str | None,
           junit: str | None, jsonl: str | None, baseline: str | None, jobs: int) -> None:
    """Replay every trace under PATHS and summarise (exit 1 if anything diverges)."""
    from .corpus_run import ReportRequest, run_report

    outcome = run_report(ReportRequest(paths, policy_names, profile_name, out_dir, junit, jsonl, baseline, jobs))
    click.echo(outcome.text)
    if out_dir:
        click.echo(f"report: {Path(out_dir) / 'index.html'}")
    sys.exit(outcome.exit_code)


@main.command()
@click.argument("traces", nargs=-1, required=True)
@click.option("--policy", "policy_a", required=True, help="policy A (name or variant file)")
@click.option("--against", "policy_b", required=True, help="policy B (name or variant file)")
@click.option("--profile", "profile_name", default="strict", show_default=True)
@click.option("--host", "host_features", default=None, callback=lambda c, p, v: parse_host_option(v),
              help="replay on this host instead of the traces': 'pks-host' (all features) or a feature list")
@click.option("--json", "as_json", is_flag=True, help="print the results as JSON (a list, one per trace)")
@click.option("--html", "html_file", type=click.Path(dir_okay=False), default=None, callback=writable_file,
              help="also write the two policies side by side as a self-contained HTML page")
@input_errors
def compare(traces: tuple[str, ...], policy_a: str, policy_b: str, profile_name: str, host_features: HostCpu | None,
            as_json: bool, html_file: str | None) -> None:
    """Replay each trace under two policies and show where they part (exit 1 if they differ)."""
    from .compare import compare_trace, render_compare

    a, b = resolve_policy(policy_a), resolve_policy(policy_b)
    profile = get_profile(profile_name)
    paths = find_traces(traces)
    tfs = [open_trace(p) for p in paths]  # every file is checked before any output
    for tf in tfs:
        tf.host_override = host_features
    results = [compare_trace(tf, a, b, profile) for tf in tfs]
    if as_json:
        click.echo(json.dumps([r.to_json() for r in results], indent=2, sort_keys=True))
    else:
        click.echo("\n\n".join(render_compare(r) for r in results))
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
