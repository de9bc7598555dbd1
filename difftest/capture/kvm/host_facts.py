"""What the recording host is: kernel, KVM backend, module parameters, CPU, supported CPUID 7.

All of it is read from the running system (``uname``, ``/sys/module``, ``/proc/cpuinfo``,
KVM_GET_SUPPORTED_CPUID, the system fd's feature MSRs), never assumed, so the same recorder
describes a PVM guest-host, an AMD host or a PKS-capable Intel host correctly.  ``cpu.features``
uses the vocabulary of :mod:`reference_model.host`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from reference_model.host import HOST_FEATURES

from . import ioctl_api as k
from .vm import Kvm, find_leaf

BACKENDS = ("kvm_intel", "kvm_amd", "kvm_pvm")
MSR_VMX_TRUE_EXIT_CTLS, MSR_VMX_TRUE_ENTRY_CTLS = 0x48F, 0x490
CPUID7_ECX_PKU, CPUID7_ECX_PKS = 1 << 3, 1 << 31


@dataclass
class HostFacts:
    kernel: str
    backend: str
    module_params: dict[str, str]
    cpu_model: str
    cpu_flags: frozenset[str]
    supported_7_0: tuple[int, int, int, int]  # eax, ebx, ecx, edx
    features: list[str] = field(default_factory=list)

    def metadata(self) -> dict[str, str]:
        _eax, ebx, ecx, edx = self.supported_7_0
        return {
            "host.kernel": self.kernel,
            "host.backend": self.backend,
            "host.module_params": ",".join(f"{n}={v}" for n, v in self.module_params.items()),
            "host.cpu": self.cpu_model,
            "host.supported_cpuid_7_0": f"ebx={ebx:#x},ecx={ecx:#x},edx={edx:#x}",
            "cpu.features": ",".join(self.features),
        }


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def module_params(modules: tuple[str, ...]) -> dict[str, str]:
    """Every readable, short parameter of ``modules`` (``kvm.ignore_msrs`` first)."""
    out: dict[str, str] = {}
    for mod in modules:
        pdir = Path("/sys/module") / mod / "parameters"
        if not pdir.is_dir():
            continue
        for p in sorted(pdir.iterdir()):
            v = _read(p)
            if v is not None and len(v) <= 64 and "," not in v:
                out[f"{mod}.{p.name}"] = v
    first: dict[str, str] = {n: out.pop(n) for n in ("kvm.ignore_msrs", "kvm.report_ignored_msrs") if n in out}
    return {**first, **out}


def cpu_info() -> tuple[str, frozenset[str]]:
    model, flags = "unknown", frozenset[str]()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, val = line.partition(":")
                key = key.strip()
                if key == "model name" and model == "unknown":
                    model = val.strip()
                elif key == "flags" and not flags:
                    flags = frozenset(val.split())
                if model != "unknown" and flags:
                    break
    except OSError:
        pass
    return model, flags


def _feature_msr(kvm: Kvm, index: int) -> int | None:
    buf = k.msrs_struct(1)()
    buf.nmsrs = 1
    buf.entries[0].index = index
    res = k.ioctl(kvm.fd, k.KVM_GET_MSRS, buf)
    return buf.entries[0].data if res.ok and res.ret == 1 else None


def derive_features(backend: str, params: dict[str, str], flags: frozenset[str], supported_ecx: int,
                    entry_ctls: int | None, exit_ctls: int | None) -> list[str]:
    """The host features (reference_model.host names) this host really has.

    pks/pku: the host CPU enumerates them (cpuinfo) or KVM offers them; vmx: KVM runs on VMX
    (kvm_intel); ept/unrestricted_guest: kvm_intel's parameters (kvm_amd: npt, and SVM always
    runs real mode); the load-PKRS controls: allowed-1 bits of the true VMX control MSRs that
    KVM reports as feature MSRs (absent when KVM does not offer them).
    """
    have: set[str] = set()
    if "pks" in flags or supported_ecx & CPUID7_ECX_PKS:
        have.add("pks")
    if "pku" in flags or supported_ecx & CPUID7_ECX_PKU:
        have.add("pku")
    if backend == "kvm_intel":
        have.add("vmx")
        if params.get("kvm_intel.ept") == "Y":
            have.add("ept")
        if params.get("kvm_intel.unrestricted_guest") == "Y":
            have.add("unrestricted_guest")
        if entry_ctls is not None and (entry_ctls >> 32) & (1 << 22):
            have.add("vmx_entry_load_pkrs")
        if exit_ctls is not None and (exit_ctls >> 32) & (1 << 29):
            have.add("vmx_exit_load_pkrs")
    elif backend == "kvm_amd":
        have.add("unrestricted_guest")
        if params.get("kvm_amd.npt") in ("Y", "1"):
            have.add("ept")
    return [f for f in HOST_FEATURES if f in have]


def collect(kvm: Kvm) -> HostFacts:
    backend = next((b for b in BACKENDS if Path("/sys/module", b).is_dir()), "unknown")
    params = module_params(("kvm", backend))
    model, flags = cpu_info()
    leaf7 = find_leaf(kvm.supported_cpuid(), 7, 0)
    sup = (leaf7.eax, leaf7.ebx, leaf7.ecx, leaf7.edx) if leaf7 is not None else (0, 0, 0, 0)
    feats = derive_features(backend, params, flags, sup[2], _feature_msr(kvm, MSR_VMX_TRUE_ENTRY_CTLS),
                            _feature_msr(kvm, MSR_VMX_TRUE_EXIT_CTLS))
    return HostFacts(os.uname().release, backend, params, model, flags, sup, feats)
