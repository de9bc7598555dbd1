"""``difftest import``: foreign captures (tracefs text, pKVM vmexit_trace) turned into traces or tables."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from difftest.capture.importers.ftrace import import_ftrace, metadata
from difftest.capture.importers.pkvm_vmexit import compare, parse_vmexit_trace, render
from difftest.cli.vocabulary import echo_json, info
from difftest.errors import InputError
from difftest.progress import task
from difftest.trace.outputs import to_stdout, write_text_output, write_trace_output


@click.command("ftrace")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="output trace (.parquet; '-' = stdout)")
@click.option("--skip-bad", is_flag=True, help="skip malformed lines (and report how many) instead of failing")
@click.option("--cpu-features", default=None, help="host features of the captured host, e.g. `pku` (metadata cpu.features)")
@click.option("--json", "as_json", is_flag=True, help="print what was written as JSON")
def import_ftrace_cmd(file: str, out: str, skip_bad: bool, cpu_features: str | None, as_json: bool) -> None:
    """Import tracefs trace/trace_pipe text or `trace-cmd report` output as a trace (exit 0: written)."""
    try:
        size = Path(file).stat().st_size if Path(file).is_file() else None
        with task(f"importing {Path(file).name}", total=size, unit="bytes"):
            res = import_ftrace(file, skip_bad=skip_bad)
        dest = write_trace_output(out, res.rows, metadata(file, res, cpu_features))
    except InputError as exc:
        click.echo(f"difftest: error: {exc}", err=True)
        sys.exit(2)
    compared = sum(1 for r in res.rows if r.get("exp_result"))
    foreign = sum(1 for r in res.rows if r["kind"] == "foreign")
    where = str(dest) if dest else "stdout"
    if as_json and not to_stdout(out):
        echo_json({"output": where, "events": len(res.rows), "with_expectations": compared, "foreign": foreign,
                   "format": res.fmt, "skipped_lines": list(res.skipped)})
        return
    info(f"wrote {where}: {len(res.rows)} events ({compared} with expectations, {foreign} foreign), format {res.fmt}"
         + (f"; skipped {len(res.skipped)} malformed lines" if res.skipped else ""), err=to_stdout(out))


@click.command("pkvm-vmexit-trace")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), default=None,
              help="a file: write the cost table as JSON ('-' = stdout)")
@click.option("--against", "against", type=click.Path(dir_okay=False), default=None,
              help="a second vmexit_trace capture to compare with (B relative to A = FILE)")
@click.option("--json", "as_json", is_flag=True, help="print the cost table as JSON instead of text")
def import_pkvm_cmd(file: str, out: str | None, against: str | None, as_json: bool) -> None:
    """Read a pKVM vmexit_trace capture as a cost table per host operation (and compare it with another).

    This importer writes no trace: the capture holds PV-call counts and cycles, not events.
    """
    try:
        a = parse_vmexit_trace(file)
        if against:
            text, data = compare(a, parse_vmexit_trace(against))
        else:
            text, data = render(a), a.to_json()
        if out:
            write_text_output(out, json.dumps(data, indent=2) + "\n")
    except InputError as exc:
        click.echo(f"difftest: error: {exc}", err=True)
        sys.exit(2)
    if out == "-":
        return
    if as_json:
        echo_json(data)
    else:
        click.echo(text)
