"""``difftest record kvm`` and ``record qemu``: perform events on /dev/kvm or under QEMU TCG and keep what happened."""

from __future__ import annotations

import sys

import click

from difftest.capture.kvm.recorder import SCENARIOS as KVM_SCENARIOS
from difftest.capture.kvm.recorder import record_scenarios, record_trace, select, write_recording
from difftest.capture.kvm.tracefs import signals_raise
from difftest.capture.qemu.boot import DEFAULT_TIMEOUT, qemu_path
from difftest.capture.qemu.build import BuildError, missing_tools
from difftest.capture.qemu.recorder import TraceInput, record_one
from difftest.capture.qemu.scenarios import SCENARIOS, scenario_rows
from difftest.errors import InputError
from difftest.trace.io import open_trace, write_trace


def _scenario_input(name: str) -> TraceInput:
    builder = SCENARIOS[name]()
    return TraceInput(builder.meta["name"], scenario_rows(builder), builder.metadata())


@click.command("qemu")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False), help="trace whose events to record")
@click.option("--scenario", type=click.Choice(sorted(SCENARIOS)), help="a built-in scenario instead")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="recorded trace to write")
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


@click.command("kvm")
@click.option("--scenario", "scenarios", multiple=True, help="scenario name (repeatable), or `all`")
@click.option("--trace", "trace_file", type=click.Path(dir_okay=False), default=None,
              help="perform this trace's events instead and record what really happened")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False), help="output trace (.parquet)")
@click.option("--no-trace", is_flag=True, help="do not capture kvm tracepoints")
@click.option("--list", "list_only", is_flag=True, help="list the scenarios and exit")
def record_kvm(scenarios: tuple[str, ...], trace_file: str | None, out: str, no_trace: bool, list_only: bool) -> None:
    """Perform scenarios (or a trace) on /dev/kvm; each step's real outcome becomes its expectation."""
    if list_only:
        for sc in KVM_SCENARIOS.values():
            click.echo(f"{sc.name}: {sc.description}")
        return
    try:
        if bool(scenarios) == bool(trace_file):
            raise InputError("difftest record kvm", "give exactly one of --scenario NAME or --trace FILE")
        if trace_file:
            rec, meta = record_trace(trace_file)
        else:
            chosen = list(dict.fromkeys(select(scenarios)))
            rec, meta = record_scenarios(chosen, trace=not no_trace)
        dest = write_recording(rec, meta, out)
    except InputError as exc:
        click.echo(f"difftest: error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("difftest: interrupted; VM, fds and tracefs instance released", err=True)
        sys.exit(130)
    click.echo(f"wrote {dest} ({len(rec.rows)} rows; {rec.timing()})")
