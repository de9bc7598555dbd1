"""The ``qemu`` profile hides only the QEMU deviations the recordings show (issue 6)."""

from __future__ import annotations

from difftest.verdict.profiles import get_profile
from reference_model.events import Event, Outcome

MASKS = {m.name: m for m in get_profile("qemu").masks}


def hidden(name: str, ev: Event, model: Outcome, recorded_pfec: int) -> bool:
    m = MASKS[name]
    return m.applies(ev, model) and m.hides("pfec", recorded_pfec, model.pfec)


def test_cpl3_mask_hides_a_missing_pk_only() -> None:
    ev = Event("access", addr=0x4000_0000, access="read", cpl=3)
    assert hidden("qemu-cpl3-no-pk", ev, Outcome("pf", pfec=0x25, cr2=0x4000_0000), 0x05)
    assert not hidden("qemu-cpl3-no-pk", ev, Outcome("pf", pfec=0x05, cr2=0x4000_0000), 0x25)


def test_rmw_mask_hides_a_missing_w_on_a_fault_only() -> None:
    ev = Event("access", addr=0x4000_0000, access="rmw")
    assert hidden("qemu-rmw-no-w", ev, Outcome("pf", pfec=0x23, cr2=0x4000_0000), 0x21)
    assert not hidden("qemu-rmw-no-w", ev, Outcome("pf", pfec=0x21, cr2=0x4000_0000), 0x23)


def test_rsvd_mask_hides_a_missing_p_only() -> None:
    ev = Event("access", addr=0x4000_1000, access="read")
    assert hidden("qemu-rsvd-no-p", ev, Outcome("pf", pfec=0x09, cr2=0x4000_1000), 0x08)
    assert not hidden("qemu-rsvd-no-p", ev, Outcome("pf", pfec=0x08, cr2=0x4000_1000), 0x09)
