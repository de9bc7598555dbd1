"""What a state value means, decided by what its path (or event field) names.

A PKRS or PKRU image is 16 keys x (AD, WD); a VMCS control field like
``vcpu1.vmcs01.exit_ctls.load_pkrs`` is one control bit, even though its name ends in "pkrs";
an MSR-bitmap entry is "intercepted or not"; anything else is a plain number.  Reports decode a
difference with :func:`value_kind` so a control bit is never read as key rights.
"""

from __future__ import annotations

from difftest.verdict.diff import fmt
from reference_model.registers import MSR_IA32_PKRS

# Last path segments that hold a whole PKRS/PKRU image (see the policies' snapshot() tables).
RIGHTS_STATE = frozenset({
    "pkrs", "pkru", "hw_pkrs", "exit_pkrs", "pkrs_copy", "vmcs01_guest_pkrs", "guest_ia32_pkrs",
    "host_ia32_pkrs", "host_cache",
})


def value_kind(path: str) -> str:
    """``rights`` (a PKRS/PKRU image), ``control`` (a VMX control bit), ``intercept`` (an MSR-bitmap
    bit), ``flag`` (another 0/1 state) or ``hex``."""
    segments = path.split(".")
    if any(s.endswith(("_ctls", "_ctls_high")) for s in segments):
        return "control"
    if "msr_bitmap" in segments:
        return "intercept"
    last = segments[-1]
    if last in RIGHTS_STATE and "offset" not in segments:
        return "rights"
    if last.endswith(("_avail", "guest_mode", "run_pending", "cr4_pks")) or last == "pks":
        return "flag"
    return "hex"


def field_kind(kind: str | None, msr: int | None, field: str) -> str:
    """The same for an event's result field: RDPKRU and RDMSR of IA32_PKRS return rights images."""
    if field == "value" and (kind == "rdpkru" or (kind == "rdmsr" and msr == MSR_IA32_PKRS)):
        return "rights"
    return "hex"


def describe_value(what: str, value: object, name: str = "value") -> str:
    """The value as text, with its meaning for bits: ``0x1 (set)``, ``0x0 (not intercepted)``."""
    text = fmt(name, value)
    if not isinstance(value, int) or isinstance(value, bool):
        return text
    if what == "control":
        return f"{text} ({'set' if value else 'clear'})"
    if what == "intercept":
        return f"{text} ({'intercepted' if value else 'not intercepted'})"
    if what == "flag":
        return f"{text} ({'yes' if value else 'no'})"
    return text
