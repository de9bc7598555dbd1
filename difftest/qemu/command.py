"""``difftest record qemu``: record a trace's (or a built-in scenario's) events under QEMU TCG."""

from __future__ import annotations

import sys

import click

from ..errors import InputError
from ..kvm.tracefs import signals_raise
from ..output_options import writable_file
from ..trace_io import open_trace, write_trace
from .boot import DEFAULT_TIMEOUT, qemu_path
from .build import BuildError, missing_tools
from .recorder import TraceInput, record_one
from .scenarios import SCENARIOS, scenario_rows


def _scenario_input(name: str) -> TraceInput:
    builder = SCENARIOS[name]()
    return TraceInput(builder.meta["name"], scenario_rows(builder), builder.metadata())


@click.command("qemu")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False), help="trace whose events to record")
@click.option("--scenario", type=click.Choice(sorted(SCENARIOS)), help="a built-in scenario instead")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), callback=writable_file,
              help="recorded trace to write")
@click.option("--timeout", default=DEFAULT_TIMEOUT, show_default=True, help="seconds before QEMU is killed")
def record_qemu(trace_path: str | None, scenario: str | None, output: str, timeout: float) -> None:
    """Run the events under qemu-system-x86_64 -accel tcg; QEMU's outcomes become the expectations.

    Events the guest cannot express or must not send are kept without expectations and listed
    as "not recorded".
    """
    if (trace_path is None) == (scenario is None):
        raise click.UsageError("give exactly one of --trace FILE or --scenario NAME")
    try:
        with signals_raise():  # SIGTERM unwinds like Ctrl-C: QEMU is killed, temporary directories removed
            _record(trace_path, scenario, output, timeout)
    except InputError as exc:
        click.echo(f"difftest: error: {exc}", err=True)
        sys.exit(2)
    except BuildError as exc:  # e.g. a trace too long for the guest image
        click.echo(f"difftest: error: {InputError(trace_path or f'scenario {scenario}', f'cannot build the guest: {exc}')}",
                   err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("difftest: interrupted; QEMU stopped and temporary files removed", err=True)
        sys.exit(130)


def _record(trace_path: str | None, scenario: str | None, output: str, timeout: float) -> None:
    missing = ([] if qemu_path() else ["qemu-system-x86_64"]) + missing_tools()
    if missing:
        raise InputError("record qemu", f"missing tool(s): {', '.join(missing)} (Debian: qemu-system-x86, binutils)")
    if trace_path is not None:
        tf = open_trace(trace_path)
        trace = TraceInput(tf.name, list(tf.rows()), dict(tf.meta))
    else:
        trace = _scenario_input(scenario or "")
    rec, boot = record_one(trace, timeout=timeout)
    write_trace(output, rec.rows, rec.meta)
    click.echo(f"{output}: {rec.recorded} rows recorded, {len(rec.not_recorded)} not recorded; QEMU "
               f"{rec.meta['host.qemu_version']} -cpu {rec.meta['host.qemu_cpu']}, boot {boot.seconds:.2f} s")
    for seq, what, reason in rec.not_recorded:
        click.echo(f"  not recorded: seq {seq} {what}: {reason}")
    sys.stdout.flush()
