"""``difftest matrix``: every trace under every policy, departures from hw explained or reported.

The command only parses options and prints; the matrix itself is :mod:`difftest.report.matrix`.
Exit codes: 0 when every departure is explained by its hypervisor's own rules, 1 when there are
findings, 2 on bad input.
"""

from __future__ import annotations

import json
import sys

import click

from difftest.report.matrix import (
    DEFAULT_POLICIES,
    REFERENCE,
    build_matrix,
    render_markdown,
    render_text,
    to_json,
    write_html,
)
from difftest.trace.io import find_traces, open_trace, write_text_atomic
from difftest.variants import resolve_policy

from .options import input_errors


@click.command("matrix")
@click.argument("paths", nargs=-1, required=True)
@click.option("--policy", "policy_names", multiple=True,
              help=f"policy (repeatable; default: {', '.join(DEFAULT_POLICIES)}); {REFERENCE} is always added first")
@click.option("-o", "--output", "html_file", type=click.Path(dir_okay=False), default=None,
              help="also write the matrix as a self-contained HTML page")
@click.option("--markdown", "md_file", type=click.Path(dir_okay=False), default=None,
              help="also write the table as Markdown (for docs/hypervisors.md)")
@click.option("--json", "as_json", is_flag=True, help="print the matrix as JSON instead of the table")
def matrix_cmd(paths: tuple[str, ...], policy_names: tuple[str, ...], html_file: str | None, md_file: str | None,
               as_json: bool) -> None:
    """Replay every trace under PATHS under every policy; one table; exit 1 on unexplained departures."""

    @input_errors
    def run() -> None:
        names = list(policy_names) or list(DEFAULT_POLICIES)
        if REFERENCE not in names:
            names.insert(0, REFERENCE)
        policies = [resolve_policy(n) for n in dict.fromkeys(names)]
        tfs = [open_trace(p) for p in find_traces(paths)]  # every file is checked before any output
        m = build_matrix(tfs, policies)
        click.echo(json.dumps(to_json(m), indent=2, sort_keys=True) if as_json else render_text(m))
        if html_file:
            write_html(html_file, m)
        if md_file:
            write_text_atomic(md_file, render_markdown(m))
        sys.exit(m.exit_code)

    run()
