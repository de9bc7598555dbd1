"""The Python API for test suites and notebooks: one call from a trace (or a builder) to a result.

``difftest.replay(trace_or_builder, policy="kvm-v7")`` takes a path, an opened trace or a
:class:`~difftest.trace.builder.TraceBuilder` (replayed in memory, nothing written), and names for the
policy, profile and host, exactly as the command line does.  Without them it uses what the trace
itself declares (metadata ``policy``/``profile``), else kvm-v7 and strict, as ``difftest replay``
does.  The result's :meth:`~difftest.verdict.results.ReplayResult.check` raises ``AssertionError`` with the
text report, so a failing test shows the first divergence, its rule and the context.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from difftest.engine import replay_trace
from difftest.report.text import render_replay
from difftest.trace.builder import TraceBuilder
from difftest.trace.io import TraceFile, open_trace, open_trace_table, rows_to_table
from difftest.variants import load_variant_file
from difftest.verdict.profiles import Profile, get_profile
from difftest.verdict.results import ReplayResult
from reference_model.host import DEFAULT_HOST, HostCpu, parse_features
from reference_model.policies import POLICIES, Policy, get_policy

DEFAULT_POLICY = "kvm-v7"
DEFAULT_PROFILE = "strict"

TraceLike = str | os.PathLike[str] | TraceFile | TraceBuilder


def as_trace(trace: TraceLike) -> TraceFile:
    """An opened trace from a path, an opened trace or a builder (in memory)."""
    if isinstance(trace, TraceFile):
        return trace
    if isinstance(trace, TraceBuilder):
        return open_trace_table(rows_to_table(trace.rows(), trace.metadata()), f"<TraceBuilder {trace.meta['name']}>")
    if isinstance(trace, (str, os.PathLike)):
        return open_trace(trace)
    raise TypeError(f"expected a trace path, an opened trace or a TraceBuilder, got {type(trace).__name__}")


def as_policy(policy: str | Policy) -> Policy:
    """A policy object from a registered name or a variant file (``*.toml``)."""
    if isinstance(policy, Policy):
        return policy
    if policy.endswith(".toml") or "/" in policy:
        return load_variant_file(policy)
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")
    return get_policy(policy)


def as_profile(profile: str | Profile) -> Profile:
    if isinstance(profile, Profile):
        return profile
    try:
        return get_profile(profile)
    except KeyError as exc:
        raise ValueError(str(exc.args[0])) from None


def as_host(host: str | HostCpu | None) -> HostCpu | None:
    """``pks-host`` (every feature), a comma-separated feature list, a HostCpu, or None (the trace's)."""
    if host is None or isinstance(host, HostCpu):
        return host
    return DEFAULT_HOST if host == "pks-host" else parse_features(host)


@dataclass
class Replay(ReplayResult):
    """A replay's result, as :func:`replay` returns it: a :class:`ReplayResult` that can assert itself."""

    def check(self) -> None:
        """Raise ``AssertionError`` carrying the text report (first divergence, rule, context) if anything diverged.

        For test suites: ``difftest.replay(builder, "kvm-v7").check()`` fails with what a reviewer reads.
        """
        if not self.passed:
            raise AssertionError(render_replay(self))


def replay(trace_or_builder: TraceLike, policy: str | Policy | None = None, profile: str | Profile | None = None,
           *, host: str | HostCpu | None = None) -> Replay:
    """Replay a trace under a policy and diff every expectation and snapshot.

    ``policy``/``profile`` default to the trace's metadata, else kvm-v7 and strict.  Bad traces raise
    :class:`~difftest.errors.InputError`; unknown names raise ``ValueError``.
    """
    tf = as_trace(trace_or_builder)
    tf.host_override = as_host(host)
    declared = tf.policies()
    pol = as_policy(policy if policy is not None else (declared[0] if declared else DEFAULT_POLICY))
    prof = as_profile(profile if profile is not None else tf.meta.get("profile", DEFAULT_PROFILE))
    res = replay_trace(tf, pol, prof)
    return Replay(**{f.name: getattr(res, f.name) for f in fields(ReplayResult)})


__all__ = ["Replay", "as_policy", "as_profile", "as_trace", "replay"]
