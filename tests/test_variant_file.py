"""A TOML variant that flips one knob diverges from its base exactly where that knob matters.

The INIT-clears-PKRS variant (examples/v7-init-clears-pkrs.toml) must differ from kvm-v7 on the
corpus traces that INIT a vCPU holding a nonzero PKRS, and nowhere else.  Which traces those are
is read off the traces themselves (their events), not from the model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from difftest.engine import compare_trace
from difftest.trace.io import open_trace
from difftest.variants import load_variant_file
from difftest.verdict.profiles import get_profile
from reference_model.policies import get_policy

ROOT = Path(__file__).resolve().parent.parent
VARIANT = ROOT / "examples" / "v7-init-clears-pkrs.toml"
CORPUS = sorted(p for d in ("arch", "bugs") for p in (ROOT / "traces" / d).glob("*.parquet"))


def inits_nonzero_pkrs(path: Path) -> bool:
    """True if the trace INITs a vCPU after a (host or guest) write of a nonzero PKRS to it."""
    written: dict[int, int] = {}
    for row in open_trace(path).rows():
        ev = row.event
        if ev is None:
            continue
        if ev.kind == "wrmsr" and ev.msr == 0x6E1 and ev.level == "l1":
            written[ev.vcpu] = ev.value or 0
        elif ev.kind == "set_msrs":
            for msr, value in zip(ev.msrs or (), ev.values or (), strict=False):
                if msr == 0x6E1:
                    written[ev.vcpu] = value
        elif ev.kind == "reset":
            written[ev.vcpu] = 0
        elif ev.kind == "init" and written.get(ev.vcpu):
            return True
    return False


def test_variant_file_loads_with_its_one_knob() -> None:
    policy = load_variant_file(str(VARIANT))
    base = get_policy("kvm-v7")
    changed = {k for k in base.knobs if base.knobs[k] != policy.knobs[k]}
    assert changed == {"init_clears_pkrs"} and policy.name == "v7-init-clears"


@pytest.mark.skipif(not CORPUS, reason="no corpus traces found")
def test_init_variant_diverges_exactly_on_init_scenarios() -> None:
    variant, base, profile = load_variant_file(str(VARIANT)), get_policy("kvm-v7"), get_profile("strict")
    differing = {p.name for p in CORPUS if compare_trace(open_trace(p), variant, base, profile).differ}
    expected = {p.name for p in CORPUS if inits_nonzero_pkrs(p)}
    assert expected, "the corpus has no INIT scenario"
    assert differing == expected
