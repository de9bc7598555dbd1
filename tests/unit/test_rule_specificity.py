"""A divergence names the most specific rule that decided the outcome (issue 16).

The specificity relation is data (reference_model.rules.REFINES); these tests state, from SPEC §1's
rule texts, which rule a reviewer must be pointed at, and check the relation is well formed.
"""

from __future__ import annotations

from difftest.trace.io import Expect
from difftest.verdict.results import RowResult
from reference_model import Event, get_policy
from reference_model.rules import REFINES, RULES, most_specific

PKRS = 0x6E1
EFER = 0xC0000080
SUP = 0x4000_0000


def test_refines_names_known_rules_and_has_no_cycle() -> None:
    for rule, general in REFINES.items():
        assert rule in RULES and all(g in RULES for g in general), rule
        seen, todo = set(), list(general)
        while todo:
            g = todo.pop()
            assert g != rule, f"{rule} refines itself through {g}"
            if g not in seen:
                seen.add(g)
                todo.extend(REFINES.get(g, ()))


def test_most_specific_prefers_the_refining_rule_whatever_the_order() -> None:
    assert most_specific(("X86.PAGE.US", "ARCH.PFEC.CPL3", "ARCH.RIGHTS", "ARCH.PFEC.PK")) == "ARCH.PFEC.CPL3"
    assert most_specific(("ARCH.PFEC.PK", "ARCH.PFEC.CPL3")) == "ARCH.PFEC.CPL3"
    assert most_specific(("ARCH.ADDR", "ARCH.CHK.REG")) == "ARCH.CHK.REG"  # unrelated: the last one hit
    assert most_specific(()) is None


def test_cpl3_access_to_a_supervisor_page_without_pk_names_arch_pfec_cpl3() -> None:
    """The trace expects 0x05 (no PK) where the key condition holds: ARCH.PFEC.CPL3 says PK is set too."""
    m = get_policy("hw").build()
    for ev in (Event("set_cpuid", level="host", cpuid_7_ecx=1 << 31), Event("mov_cr4", value=(1 << 5) | (1 << 24)),
               Event("wrmsr", msr=EFER, value=1 << 8), Event("mov_cr0", value=0x8001_0011),
               Event("wrmsr", msr=PKRS, value=0x4), Event("map", addr=SUP, page_size="4k", present=True, key=1)):
        assert m.step(ev).result == "ok"
    ev = Event("access", addr=SUP, access="read", cpl=3)
    out = m.step(ev)
    assert out.pfec == 0x25
    row = RowResult(0, 0, ev, Expect(result="pf", pfec=0x05, cr2=SUP), out)
    assert row.primary_rule == "ARCH.PFEC.CPL3"
    assert out.rules[-1] == "ARCH.PFEC.PK"  # what the last-rule-hit naming used to report
