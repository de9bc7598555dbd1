"""The physical host a policy runs on: which PKS-related features its CPU has.

A trace states them in its metadata (``pksdt.cpu.features``, comma-separated); without that, a
trace is taken to run on a PKS-capable Intel host with EPT, unrestricted guest, both VMX
load-PKRS controls and a host kernel that uses PKS, the host every version of the series was
written for (only the 2026 policies read ``host_pks``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .restore import Restorable

HOST_FEATURES: dict[str, str] = {
    "pks": "the host CPU enumerates PKS (CPUID.(7,0).ECX[31])",
    "pku": "the host CPU enumerates PKU",
    "vmx": "VMX is available, so nested guests can be run",
    "vmx_entry_load_pkrs": "the VM-entry control 'load IA32_PKRS' can be set (bit 22)",
    "vmx_exit_load_pkrs": "the VM-exit control 'load IA32_PKRS' can be set (bit 29)",
    "ept": "EPT (two-dimensional paging) is enabled: KVM's tdp_enabled",
    "unrestricted_guest": "unrestricted guest is enabled (the guest may run with CR0.PG=0)",
    "host_pks": "the host kernel uses PKS itself (X86_FEATURE_PKS kept, CR4.PKS=1, its own PKRS): the v7-era base "
                "series; upstream kernels of 2026 never set CR4.PKS",
}


@dataclass(frozen=True)
class HostCpu(Restorable):
    """The set of host features in force."""

    features: frozenset[str] = frozenset(HOST_FEATURES)

    def __post_init__(self) -> None:
        # ``has`` is asked a few times per modelled event: the set's own membership test, with no
        # Python frame in between (an instance attribute, so not a dataclass field: not compared).
        object.__setattr__(self, "has", self.features.__contains__)

    def has(self, name: str) -> bool:  # (replaced per instance in __post_init__; kept for the type)
        return name in self.features

    def describe(self) -> str:
        return ",".join(f for f in HOST_FEATURES if f in self.features) or "none"


DEFAULT_HOST = HostCpu()


def parse_features(text: str) -> HostCpu:
    """A HostCpu from ``pks,ept,...`` (ValueError naming an unknown feature)."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in HOST_FEATURES]
    if unknown:
        raise ValueError(f"unknown host feature(s) {', '.join(unknown)}; known: {', '.join(HOST_FEATURES)}")
    return HostCpu(frozenset(names))
