"""The one place where policy variants are registered by name.

A :class:`Policy` is data: a name, a one-line description, its source (seed version, message
id, review comment), the knob values it sets, and the machine class that reads those knobs.
Each variant lives in its own short module in this package and calls :func:`register`;
``VARIANT_MODULES`` lists them in display order.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..host import DEFAULT_HOST, HostCpu
from ..machine import Machine


@dataclass(frozen=True)
class Policy:
    """A named hypervisor (or CPU) behaviour: knob values plus the machine that obeys them."""

    name: str
    description: str
    source: str
    machine: Callable[[Mapping[str, Any], HostCpu], Machine]
    knobs: Mapping[str, Any] = field(default_factory=dict)

    def build(self, host: HostCpu = DEFAULT_HOST) -> Machine:
        """A fresh machine in power-up state on ``host``."""
        m = self.machine(MappingProxyType(dict(self.knobs)), host)
        m.name = self.name
        return m

    def derive(self, name: str, description: str, source: str, **overrides: Any) -> Policy:
        """A variant of this policy with some knobs changed (unknown knobs are refused)."""
        unknown = sorted(set(overrides) - set(self.knobs))
        if unknown:
            raise KeyError(f"unknown knob(s) for {self.name}: {', '.join(unknown)}")
        return Policy(name, description, source, self.machine, {**self.knobs, **overrides})


POLICIES: dict[str, Policy] = {}

VARIANT_MODULES = (
    "hw", "upstream", "upstream_pvm", "kvm_rfc_v1", "kvm_rfc_v2", "kvm_rfc_v3", "kvm_v4", "kvm_v5", "kvm_v6", "kvm_v7",
    "kvm_v7r", "upstream_2026", "kvm_rebase", "kvm_rebase_ones", "kvm_rebase_keep", "kvm_rebase_gated",
    "pkvm_npvm", "pkvm_pvm_compare", "pkvm_pvm_allow5", "pkvm_pvm_allow8",
)


def register(policy: Policy) -> Policy:
    """Add ``policy`` under its name (a name is registered once)."""
    if policy.name in POLICIES:
        raise ValueError(f"policy {policy.name!r} registered twice")
    POLICIES[policy.name] = policy
    return policy


def _load() -> None:
    for mod in VARIANT_MODULES:
        importlib.import_module(f"{__package__}.{mod}")
    # display in VARIANT_MODULES order whatever order the imports registered them in
    order = {name.replace("_", "-"): i for i, name in enumerate(VARIANT_MODULES)}
    items = sorted(POLICIES.items(), key=lambda kv: order.get(kv[0], len(order)))
    POLICIES.clear()
    POLICIES.update(items)


def get_policy(name: str) -> Policy:
    """The registered policy called ``name`` (KeyError with the known names otherwise)."""
    try:
        return POLICIES[name]
    except KeyError:
        raise KeyError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}") from None


_load()
