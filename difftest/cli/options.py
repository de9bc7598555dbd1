"""What every command shares: bad input as one line and exit 2, policy and host options, lazy groups."""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from difftest.cli.vocabulary import run_guarded, with_common_options
from difftest.errors import InputError
from reference_model.host import DEFAULT_HOST, HostCpu, parse_features

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
        except KeyError as exc:  # unknown policy or profile; any other KeyError is a bug (exit 3)
            text = str(exc.args[0]) if exc.args else ""
            if not text.startswith("unknown "):
                raise
            _fail(text)
        except OSError as exc:  # an output that became unwritable during the run (checked before it started)
            _fail(str(InputError(exc.filename or "output", f"cannot write: {exc.strerror or exc}")))

    return wrapper  # type: ignore[return-value]


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
        command = super().get_command(ctx, cmd_name)
        return with_common_options(command) if command is not None else None

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; an internal error exits 3 with one line (see :mod:`difftest.cli.vocabulary`).

        Ctrl-C that no command handled (e.g. while a command's module loads): one line and 130, not click's 1.
        """
        try:
            return run_guarded(lambda: super(LazyGroup, self).invoke(ctx))
        except KeyboardInterrupt:
            click.echo("difftest: interrupted", err=True)
            ctx.exit(130)


def known_options(fn: F) -> F:
    """``--known FILE`` (repeatable) and ``--no-known``: which known-outcomes declarations judge the runs."""
    fn = click.option("--no-known", "no_known", is_flag=True,
                      help="ignore known-outcomes.toml files: every divergence is a FAIL")(fn)
    return click.option("--known", "known_files", multiple=True, type=click.Path(dir_okay=False),
                        help="a known-outcomes file (docs/known-outcomes.md) besides the known-outcomes.toml "
                             "found next to each trace and in its parent folders (repeatable)")(fn)  # type: ignore[return-value]


def known_outcomes(known_files: tuple[str, ...], no_known: bool) -> Any:
    from difftest.verdict.known_outcomes import NO_KNOWN_OUTCOMES, KnownOutcomes

    return NO_KNOWN_OUTCOMES if no_known else KnownOutcomes(known_files)
