"""What every command shares: bad input as one line and exit 2, policy and host options, lazy groups."""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from difftest.errors import InputError
from difftest.trace.io import TraceFile
from difftest.trace.schema import META_PREFIX
from reference_model.host import DEFAULT_HOST, HostCpu, parse_features
from reference_model.policies import POLICIES

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
