"""Comparison profiles: named sets of masks, each with the reason and the rule it concerns.

A mask never drops a difference: a masked difference is counted and shown under the mask's
name.  ``strict`` masks nothing; ``qemu`` masks exactly the QEMU 7.2 TCG deviations documented
in sources/pks_semantics.md §0/§3 (SPEC §7).  Fields that the architecture itself leaves
undefined (ARCH.TLB without a flush) are reported as "undefined" under every profile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from reference_model.events import Event, Outcome
from reference_model.registers import MSR_IA32_PKRS, PF_P, PF_PK, PF_RSVD, PF_U, PF_W


@dataclass(frozen=True)
class Mask:
    """Ignore ``fields`` (or just ``pfec_bits`` of the PFEC) where ``applies`` holds."""

    name: str
    rule: str
    reason: str
    applies: Callable[[Event, Outcome], bool]
    fields: tuple[str, ...] = ()
    pfec_bits: int = 0
    # Only explain ``pfec_bits`` missing from the expectation (the recording), never extra ones:
    # QEMU drops PK, P and W, it never adds them (checked against recordings, issue 6).
    missing_only: bool = False

    def hides(self, field_name: str, expected: object, actual: object) -> bool:
        """True if this mask explains the difference ``expected`` vs ``actual`` in ``field_name``."""
        if field_name in self.fields:
            return True
        if field_name == "pfec" and self.pfec_bits and isinstance(expected, int) and isinstance(actual, int):
            if self.missing_only and expected & self.pfec_bits:
                return False
            return (expected & ~self.pfec_bits) == (actual & ~self.pfec_bits)
        return False


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    masks: tuple[Mask, ...] = field(default=())


def _is_access(ev: Event) -> bool:
    return ev.kind in ("access", "emu_access")


QEMU_MASKS = (
    Mask("qemu-cpl3-no-pk", "ARCH.PFEC.CPL3",
         "QEMU checks U/S before keys: a CPL3 access to a supervisor page reports 0x05/0x07 without PK "
         "(pks_semantics R9, QEMU deviation 1)",
         lambda ev, out: _is_access(ev) and ev.cpl == 3 and out.result == "pf" and bool((out.pfec or 0) & PF_U),
         pfec_bits=PF_PK, missing_only=True),
    Mask("qemu-rsvd-no-p", "ARCH.PFEC.TERMINAL",
         "QEMU reports reserved-bit faults as 0x08 without P (pks_semantics R9, QEMU deviation 3)",
         lambda ev, out: _is_access(ev) and out.result == "pf" and bool((out.pfec or 0) & PF_RSVD),
         pfec_bits=PF_P, missing_only=True),
    Mask("qemu-rmw-no-w", "ARCH.PFEC.PK",
         "QEMU issues the load of a read-modify-write separately and reports W=0 when the load faults "
         "(AD, not present, RSVD, U/S); a fault on the store (WD, R/W) keeps W=1 "
         "(pks_semantics R9, QEMU deviation 4; recordings, issue 6)",
         lambda ev, out: _is_access(ev) and ev.access == "rmw" and out.result == "pf",
         pfec_bits=PF_W, missing_only=True),
    Mask("qemu-pkrs-no-cpuid-gate", "ARCH.MSR.CPUID",
         "QEMU does not #GP on RDMSR/WRMSR 0x6E1 without CPUID.PKS (pks_semantics R3, QEMU deviation 5)",
         lambda ev, out: ev.kind in ("rdmsr", "wrmsr") and ev.msr == MSR_IA32_PKRS and "ARCH.MSR.CPUID" in out.rules
         and out.result == "gp",
         fields=("result", "value")),
)

def _cpuid_leaf7(ev: Event, out: Outcome) -> bool:
    return ev.kind == "get_cpuid" or (ev.kind == "cpuid" and ev.cpuid_leaf == 7 and not ev.cpuid_subleaf)


# The PVM backend replaces CPUID leaf 7 with its own values whatever userspace passed; no knob can
# predict the host's values, so the value alone is masked (a different result still diverges).
# CR4.PKE without PKU and RDPKRU are knobs of policy upstream-pvm, not masks.
PVM_MASKS = (
    Mask("pvm-cpuid-rewrite", "ARCH.CPUID",
         "kvm_pvm rewrites CPUID leaf 7 after KVM_SET_CPUID2; ECX is the backend's, not the table's "
         "(sources/kvm_recorder.md §1.3)", _cpuid_leaf7, fields=("value",)),
)

PROFILES: dict[str, Profile] = {
    "strict": Profile("strict", "compare every expected field exactly"),
    "qemu": Profile("qemu", "mask the documented QEMU 7.2 TCG deviations (SPEC §7)", QEMU_MASKS),
    "pvm": Profile("pvm", "mask the PVM backend's CPUID leaf-7 rewrite (sources/kvm_recorder.md §1.3)", PVM_MASKS),
}


def register_profile(profile: Profile) -> Profile:
    """Add a profile (used by later modules, e.g. the PVM host profile)."""
    if profile.name in PROFILES:
        raise ValueError(f"profile {profile.name!r} registered twice")
    PROFILES[profile.name] = profile
    return profile


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}") from None
