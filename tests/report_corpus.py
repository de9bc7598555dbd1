"""A small corpus for the report tests, written with the builder; expectations from SPEC.md rules.

* ``wd-write``: PKRS = 0x8 is WD for key 1 (WD(k) = bit 2k+1); a supervisor write to a key-1 page
  with CR0.WP=1 is denied (ARCH.RIGHTS) and faults with PFEC = P|W|PK = 0x23 (ARCH.PFEC.PK).
  Passes under ``hw``.
* ``hostile``: PKRS = 0x4 is AD for key 1 (AD(k) = bit 2k); a supervisor read of a key-1 page is
  denied (ARCH.RIGHTS), but the trace wrongly expects ``ok``, so it diverges at that event
  (``DIVERGING_EVENT``) citing ARCH.RIGHTS.  Its metadata and note carry hostile strings.
"""

from __future__ import annotations

from pathlib import Path

from difftest import TraceBuilder

HOSTILE_NAME = 'hostile <script>alert(1)</script> "dq" \'sq\' </td>'
HOSTILE_DESC = "desc <script>alert(2)</script> </td></tr></table> & done"
HOSTILE_NOTES = "<img src=x onerror=alert(3)> </td>"
HOSTILE_NOTE = "<script>alert(4)</script> </td>"
HOSTILE_STRINGS = (HOSTILE_NAME, HOSTILE_DESC, HOSTILE_NOTES, HOSTILE_NOTE)

PAGE = 0x40000000
PKRS_WD1 = 0x8  # WD(1) = bit 3
PKRS_AD1 = 0x4  # AD(1) = bit 2
PFEC_P_W_PK = 0x23
DIVERGING_RULE = "ARCH.RIGHTS"


def write_wd_write(path: Path) -> Path:
    t = TraceBuilder("wd-write", "WD blocks a supervisor write when CR0.WP=1", policy="hw", long_mode=True)
    t.cpuid(pks=True).cr4(pks=True).wrmsr(0x6E1, PKRS_WD1)
    t.access(PAGE, key=1, write=True).expect_pf(PFEC_P_W_PK, rule="ARCH.PFEC.PK")
    t.snapshot("vcpu0.pkrs", PKRS_WD1)
    return t.write(path)


def write_hostile(path: Path, *, toggles: int = 12) -> tuple[Path, int]:
    """The diverging trace; returns its path and the index of the diverging event."""
    t = TraceBuilder(HOSTILE_NAME, HOSTILE_DESC, policy="hw", long_mode=True, notes=HOSTILE_NOTES,
                     source="</td><b>not bold</b>")
    t.cpuid(pks=True).cr4(pks=True)
    t.map(PAGE, key=1)
    for i in range(toggles):  # PKRS cycles through RW, AD, WD, AD|WD for key 1
        t.wrmsr(0x6E1, (i % 4) << 2)
        t.access(PAGE, write=False)
    t.wrmsr(0x6E1, PKRS_AD1)
    index = len(t.rows())
    t.access(PAGE).expect_ok(rule=DIVERGING_RULE).note(HOSTILE_NOTE)
    t.snapshot("vcpu0.pkrs", PKRS_AD1)
    return t.write(path), index


def build_corpus(folder: Path) -> dict[str, object]:
    """Write the corpus into ``folder``; returns facts the tests check against."""
    folder.mkdir(parents=True, exist_ok=True)
    write_wd_write(folder / "wd-write.parquet")
    _, index = write_hostile(folder / "hostile.parquet")
    return {"diverging_event": index, "traces": 2}
