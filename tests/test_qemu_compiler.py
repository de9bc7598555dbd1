"""Fast tests of the QEMU recorder's compiler and decoder (no QEMU needed).

Expectations come from SPEC §1 (address type over all levels, key of the leaf) and from
sources/pks_semantics.md §4 (the reserved-CR4 livelock, the guest recipe).
"""

from __future__ import annotations

from difftest.capture.qemu.boot import BootResult
from difftest.capture.qemu.compiler import compile_unit, keys_by_preference
from difftest.capture.qemu.layout import cpu_string
from difftest.capture.qemu.pagetables import GuestTables, Page, same_page
from difftest.capture.qemu.recorder import parse_output
from difftest.capture.qemu.scenarios import SCENARIOS, scenario_rows
from difftest.trace.io import TraceRow
from reference_model.events import Event
from reference_model.registers import CR4_PAE, CR4_PKS, MSR_IA32_PKRS


def rows(*events: Event) -> list[TraceRow]:
    return [TraceRow(i, i, ev, None, None) for i, ev in enumerate(events)]


LONG_MODE = (
    Event("set_cpuid", level="host", cpuid_7_ecx=1 << 31),
    Event("mov_cr4", value=CR4_PAE),
    Event("wrmsr", msr=0xC0000080, value=0x100),
    Event("mov_cr0", value=0x80010011),
)


def reasons(unit_rows: list[TraceRow]) -> dict[int, str | None]:
    return {p.row.seq: p.reason for p in compile_unit("t", unit_rows).plans}


def test_walk_gives_back_the_mapped_attributes() -> None:
    gt = GuestTables()
    page = Page(True, "4k", writable=False, user=True, user_upper=False, key=5)
    assert gt.map(0x4000_0000, page) is not None
    assert gt.walk(0x4000_0123) == page
    big = Page(True, "2m", key=3, nx=True)
    gt.map(0x8020_0000, big)
    assert gt.walk(0x803F_FFFF) == big
    assert not gt.walk(0x4000_1000).present  # a neighbour nobody mapped


def test_shared_upper_entry_makes_the_first_page_unrecordable() -> None:
    # ARCH.ADDR: U/S=0 in the PDE makes the page supervisor; a neighbour that needs U/S=1 in the
    # same PDE rewrites it, so the first page no longer has the trace's attributes.
    a = Event("map", addr=0x4000_0000, page_size="4k", present=True, user=True, user_upper=False, key=1)
    b = Event("map", addr=0x4000_1000, page_size="4k", present=True, user=True, user_upper=True, key=1)
    r = reasons(rows(*LONG_MODE, a, b, Event("access", addr=0x4000_0000, access="read"),
                     Event("access", addr=0x4000_1000, access="read")))
    assert r[6] is not None and "shared" in r[6]
    assert r[7] is None


def test_guest_pages_are_never_given_to_the_trace() -> None:
    # A 4 KiB leaf under PD0[0] would replace the guest's own page table for [0, 2 MiB).
    assert GuestTables().map(0x0, Page(True, "2m")) is None
    m = Event("map", addr=0x10_0000, page_size="4k", present=True)
    r = reasons(rows(*LONG_MODE, m, Event("access", addr=0x10_0000, access="read")))
    assert "guest" in (r[4] or "") and "guest" in (r[5] or "")


def test_reserved_cr4_bit_is_never_sent() -> None:
    # pks_semantics §4.5: MOV CR4 with PKS but no CPUID.PKS livelocks QEMU; the model answers alone.
    no_pks = (Event("set_cpuid", level="host", cpuid_7_ecx=0), *LONG_MODE[1:])
    unit = compile_unit("t", rows(*no_pks, Event("mov_cr4", value=CR4_PAE | CR4_PKS),
                                  Event("wrmsr", msr=MSR_IA32_PKRS, value=4)))
    plan = unit.plans[4]
    assert plan.probe is None and "livelock" in (plan.reason or "")
    assert f"${CR4_PAE | CR4_PKS:#x}" not in "\n".join(unit.code)
    assert unit.plans[5].reason is None  # what follows is still recorded
    assert "-pks" in unit.cpu


def test_pkrs_denying_every_key_is_sent_while_cr4_pks_is_clear() -> None:
    r = reasons(rows(*LONG_MODE, Event("wrmsr", msr=MSR_IA32_PKRS, value=0xFFFF_FFFF),
                     Event("rdmsr", msr=MSR_IA32_PKRS)))
    assert r[4] is None and r[5] is None
    r = reasons(rows(*LONG_MODE, Event("mov_cr4", value=CR4_PAE | CR4_PKS),
                     Event("wrmsr", msr=MSR_IA32_PKRS, value=0xFFFF_FFFF), Event("rdmsr", msr=MSR_IA32_PKRS)))
    assert "no key was free" in (r[5] or "") and r[6] is not None


def test_guest_key_avoids_the_denied_keys() -> None:
    # 0xAAAAAAA8 = WD for keys 1..15: only key 0 is left for the guest's own pages.
    assert keys_by_preference(rows(Event("wrmsr", msr=MSR_IA32_PKRS, value=0xAAAAAAA8)))[0] == 0


def test_cpu_string_follows_the_trace_cpuid() -> None:
    assert "+pks" in cpu_string(1 << 31) and "-pku" in cpu_string(1 << 31)
    assert "-pks" in cpu_string(1 << 3) and "+pku" in cpu_string(1 << 3)


def test_not_present_trace_page_matches_any_not_present_walk() -> None:
    assert same_page(Page(False, key=3), GuestTables().walk(0x4000_0000))


def test_parse_output_lines_and_stops() -> None:
    text = "P0\n@0 ff 0 0 0\n@1 e 23 40000000 0\n@2 ff 0 0 aaaaaaa8\nD\n"
    out = parse_output(BootResult(text, 1, 0.1, ()))
    assert out.stop is None and out.phases == {0}
    assert (out.probes[1].vector, out.probes[1].error, out.probes[1].cr2) == (14, 0x23, 0x4000_0000)
    assert out.probes[2].value == 0xAAAAAAA8
    cut = parse_output(BootResult("P0\n@0 ff 0 0 0\nX e 2 10123 0\n", 1, 0.1, ()))
    assert cut.stop is not None and "unexpected fault" in cut.stop
    hung = parse_output(BootResult("P0\n", None, 60.0, ()))
    assert hung.stop is not None and "timed out" in hung.stop


def test_every_scenario_compiles_without_skips_except_the_guarded_cr4() -> None:
    for name, make in SCENARIOS.items():
        unit = compile_unit(name, scenario_rows(make()))
        skipped = [p.reason for p in unit.plans if p.reason]
        if name == "no-pks":
            assert len(skipped) == 1 and "livelock" in skipped[0]
        else:
            assert skipped == [], (name, skipped)
