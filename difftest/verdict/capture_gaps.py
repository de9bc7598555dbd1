"""What a real capture cannot tell the model, as masks added to the replay of that capture.

A tracefs capture shows what the kernel did, not everything it was set up with.  Three kinds of
gap are known, each a :class:`~difftest.verdict.profiles.Mask` (so a difference it explains is counted
and shown under its name, never dropped, never a divergence):

* ``run-dependent-msr-value``: MSRs that count by themselves (TSC, APERF, MPERF...): the value
  read differs from run to run; the access's success or #GP is still compared.
* ``msr-not-modelled``: an MSR the model has never heard of (it predicts #GP) where the real
  kernel returned or accepted a value: the model cannot judge the row.
* ``setup-not-captured``: rows whose outcome depends on setup the capture did not show (CR0.WP,
  CR4.SMEP/SMAP, EFER.NXE, the keys' registers...): the importer lists them, with the setup
  they need, in the metadata key ``capture.setup_unknown``.  Reported as "unexplained: setup
  not captured".

Only traces whose metadata says they were imported from or recorded on a real kernel get them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from difftest.trace.io import TraceRow
from reference_model.events import Event, Outcome
from reference_model.machine import Machine

from .profiles import Mask, Profile
from .results import RowResult

# MSR -> name: values that change by themselves between two reads (counters, sensors).
RUN_DEPENDENT_MSRS: dict[int, str] = {
    0x10: "TSC", 0x34: "SMI_COUNT", 0xE7: "MPERF", 0xE8: "APERF", 0x198: "PERF_STATUS",
    0x19C: "THERM_STATUS", 0x1B1: "PACKAGE_THERM_STATUS", 0x611: "PKG_ENERGY_STATUS", 0x64E: "PPERF",
    0xC00000E7: "MPERF_RD_ONLY", 0xC00000E8: "APERF_RD_ONLY", 0xC00000E9: "IRPERF",
}

CAPTURE_PRODUCERS = frozenset({"imported-ftrace", "recorded-kvm"})
SETUP_KEY = "capture.setup_unknown"  # "seq:what,what;seq:what" (rows whose outcome needs unknown setup)


def parse_setup_unknown(text: str) -> dict[int, str]:
    """``capture.setup_unknown`` -> {seq: what it needs}; malformed parts raise ValueError."""
    out: dict[int, str] = {}
    for part in filter(None, text.split(";")):
        seq, sep, what = part.partition(":")
        if not sep or not seq.isdigit():
            raise ValueError(f"{SETUP_KEY}: {part[:60]!r} is not SEQ:SETUP")
        out[int(seq)] = what
    return out


def format_setup_unknown(rows: dict[int, str]) -> str:
    return ";".join(f"{seq}:{what}" for seq, what in sorted(rows.items()))


@dataclass(frozen=True)
class AcceptedOnlyMask(Mask):
    """A mask for rows where the real kernel accepted the access: a #GP it reported is still compared."""

    def hides(self, field_name: str, expected: object, actual: object) -> bool:
        if field_name == "result" and expected != "ok":
            return False
        return super().hides(field_name, expected, actual)


def _is_msr(ev: Event) -> bool:
    return ev.kind in ("rdmsr", "wrmsr")


def _seq_in(seqs: frozenset[int]) -> Callable[[Event, Outcome], bool]:
    return lambda ev, out: ev.seq in seqs


def capture_masks(meta: dict[str, str]) -> tuple[Mask, ...]:
    """The masks a trace with metadata ``meta`` gets (none unless it comes from a real kernel)."""
    if meta.get("producer") not in CAPTURE_PRODUCERS:
        return ()
    masks = [
        Mask("run-dependent-msr-value", "X86.MSR.COUNTER",
             "the MSR counts by itself (" + ", ".join(sorted(set(RUN_DEPENDENT_MSRS.values()))) + "): its value "
             "differs from run to run; success or #GP is compared, the value is not",
             lambda ev, out: ev.kind == "rdmsr" and ev.msr in RUN_DEPENDENT_MSRS and out.result == "ok",
             fields=("value",)),
        AcceptedOnlyMask("msr-not-modelled", "X86.MSR.UNKNOWN",
             "the model does not know this MSR (it would say #GP) but the real kernel accepted it: the model "
             "cannot judge the row",
             lambda ev, out: _is_msr(ev) and "X86.MSR.UNKNOWN" in out.rules,
             fields=("result", "value")),
    ]
    text = meta.get(SETUP_KEY)
    if text:
        groups: dict[str, frozenset[int]] = {}
        for seq, what in parse_setup_unknown(text).items():
            groups[what] = groups.get(what, frozenset()) | {seq}
        for what, seqs in sorted(groups.items()):
            masks.append(Mask(
                "setup-not-captured", "X86.MODE",
                "unexplained: setup not captured: the outcome depends on " + what.replace(",", ", ")
                + ", which the capture does not show (the model ran with the importer's assumption)",
                _seq_in(seqs), fields=("result", "pfec", "cr2", "value")))
    return tuple(masks)


def is_capture(meta: dict[str, str]) -> bool:
    return meta.get("producer") in CAPTURE_PRODUCERS


MAX_HIGHLIGHTS = 200


def highlight_observer(keep: list[RowResult]) -> Callable[[TraceRow, RowResult, Machine], None]:
    """Keep the rows a capture's report shows whatever else happens: emulated accesses that fault
    (in the kernel or in the model: the two PFECs side by side) and rows a mask explained."""

    def observe(row: TraceRow, rr: RowResult, machine: Machine) -> None:
        ev = rr.event
        faulted = ev is not None and ev.kind in ("emu_access", "access") and (
            (rr.expect is not None and rr.expect.result == "pf") or (rr.outcome is not None and rr.outcome.result == "pf"))
        if (faulted or rr.status == "masked") and len(keep) < MAX_HIGHLIGHTS:
            keep.append(rr)

    return observe


def with_capture_gaps(profile: Profile, meta: dict[str, str]) -> Profile:
    """``profile`` plus the capture's masks (the same profile when there are none)."""
    extra = capture_masks(meta)
    if not extra:
        return profile
    return replace(profile, masks=(*profile.masks, *extra))


