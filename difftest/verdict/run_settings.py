"""One set of defaults for every command: policy, profile and host come from the trace's metadata.

``replay``, ``compare``, ``shrink`` and the pytest plugin resolve what to run a trace under here,
so the same trace gets the same verdict whichever command looks at it (issue 19 item 3: `compare`
and `shrink` used to default to the ``strict`` profile and report masked differences that `replay`
did not).  What was not given on the command line is taken from the metadata:

* policy  -- ``pksdt.policy`` (its first name), else ``kvm-v7``;
* profile -- ``pksdt.profile``, else ``strict``;
* host    -- ``pksdt.cpu.features``, else a host with every feature (``pks-host``).

:meth:`RunSettings.describe` is the line every command prints to say which it used and why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from difftest.errors import InputError
from difftest.trace.io import TraceFile
from difftest.trace.schema import META_PREFIX
from difftest.variants import resolve_policy
from reference_model.host import DEFAULT_HOST, HostCpu
from reference_model.policies import POLICIES, Policy, get_policy

from .profiles import Profile, get_profile

DEFAULT_POLICY = "kvm-v7"
DEFAULT_PROFILE = "strict"
T = TypeVar("T")


def default_policy_name(tf: TraceFile) -> tuple[str, str]:
    """The policy a trace asks for and where that came from."""
    names = tf.policies()
    if names:
        return names[0], "trace metadata"
    return (DEFAULT_POLICY if DEFAULT_POLICY in POLICIES else "hw"), "default"


def from_metadata(tf: TraceFile, key: str, lookup: Callable[[str], T], name: str) -> T:
    """The policy or profile ``name`` a trace's metadata asks for; unknown, it is that file's error."""
    try:
        return lookup(name)
    except KeyError as exc:
        raise InputError(str(tf.path), f"metadata '{META_PREFIX}{key}': {exc.args[0] if exc.args else name}") from None
    except InputError as exc:  # a variant file the metadata names
        raise InputError(str(tf.path), f"metadata '{META_PREFIX}{key}': {exc}") from None


@dataclass(frozen=True)
class RunSettings:
    """What one trace is run under, and where each choice came from ('option', 'trace metadata', 'default')."""

    policy: Policy
    profile: Profile
    host: HostCpu
    policy_from: str
    profile_from: str
    host_from: str

    def describe(self, with_policy: bool = True) -> str:
        parts = [f"policy {self.policy.name} ({self.policy_from})"] if with_policy else []
        parts.append(f"profile {self.profile.name} ({self.profile_from})")
        host = "pks-host (every feature)" if self.host == DEFAULT_HOST else self.host.describe()
        parts.append(f"host {host} ({self.host_from})")
        return "using " + ", ".join(parts)


def settings_for(tf: TraceFile, policy: str | None = None, profile: str | None = None,
                 host: HostCpu | None = None) -> RunSettings:
    """Resolve policy, profile and host for ``tf``: the options given, else its metadata, else the defaults.

    ``host`` given sets ``tf.host_override`` (the replay engines read the host from the trace).
    """
    if policy:
        pol, pol_from = resolve_policy(policy), "option"
    else:
        name, pol_from = default_policy_name(tf)
        pol = from_metadata(tf, "policy", get_policy, name)  # registered only: a trace never makes us open a file
    if profile:
        prof, prof_from = get_profile(profile), "option"
    elif "profile" in tf.meta:
        prof, prof_from = from_metadata(tf, "profile", get_profile, tf.meta["profile"]), "trace metadata"
    else:
        prof, prof_from = get_profile(DEFAULT_PROFILE), "default"
    if host is not None:
        tf.host_override = host
        host_from = "option"
    else:
        host_from = "trace metadata" if "cpu.features" in tf.meta else "default"
    return RunSettings(pol, prof, tf.host() if host is None else host, pol_from, prof_from, host_from)


__all__ = ["RunSettings", "default_policy_name", "from_metadata", "settings_for"]
