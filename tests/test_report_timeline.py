"""Timelines: PKRS rights per key over the events, faults and divergences marked, bounded size."""

from __future__ import annotations

from pathlib import Path

from report_corpus import PAGE, write_hostile

from difftest import TraceBuilder, open_trace, replay_trace
from difftest.report.timeline import layout, rights
from difftest.verdict.profiles import get_profile
from difftest.verdict.timeline import TimelineRecorder
from reference_model.policies import get_policy


def _replay(path: Path, max_buckets: int = 600) -> tuple[object, object]:
    tf = open_trace(path)
    rec = TimelineRecorder(tf.num_rows, max_buckets)
    res = replay_trace(tf, get_policy("hw"), get_profile("strict"), rec)
    return res, rec.timeline


def test_pkrs_change_points_faults_and_divergence(tmp_path: Path) -> None:
    toggles = 8
    path, div = write_hostile(tmp_path / "h.parquet", toggles=toggles)
    rows = open_trace(path)
    all_rows = list(rows.rows())
    wr = [r.index for r in all_rows if r.event is not None and r.event.kind == "wrmsr" and r.event.msr == 0x6E1]
    acc = [r.index for r in all_rows if r.event is not None and r.event.kind == "access"]
    res, tl = _replay(path)
    track = tl.vcpus[0]
    # PKRS after each WRMSR 0x6E1 is the value written (ARCH.MSR.INDEP: takes effect at once).
    written = [(i % 4) << 2 for i in range(toggles)] + [0x4]
    # Change points: PKRS = 0 (RESET, ARCH.RESET) at the first event, then each write that changes it.
    want = [(0, 0)]
    for idx, v in zip(wr, written, strict=True):
        if v != want[-1][1]:
            want.append((idx, v))
    assert track.pkrs == want
    # AD(1) set (PKRS 0x4 or 0xC) denies each supervisor read of the key-1 page (ARCH.RIGHTS): a #PF each.
    faults = [m.index for m in track.markers["fault"]]
    assert faults == [a for a, v in zip(acc, written, strict=True) if rights(v, 1) & 1]
    assert [m.index for m in track.markers["diverge"]] == [div]
    assert tl.first_divergence == div
    assert res.first is not None and res.first.index == div


def test_observer_does_not_change_the_result(tmp_path: Path) -> None:
    path, _ = write_hostile(tmp_path / "h.parquet")
    plain = replay_trace(open_trace(path), get_policy("hw"), get_profile("strict"))
    observed, _ = _replay(path)
    assert plain.to_json() == observed.to_json()


def test_long_trace_is_downsampled(tmp_path: Path) -> None:
    t = TraceBuilder("long", long_mode=True)
    t.cpuid(pks=True).cr4(pks=True).map(PAGE, key=2)
    n = 3000
    for i in range(n):
        t.wrmsr(0x6E1, 0x10 if i % 2 else 0)  # AD(2) on, off, ...
        t.access(PAGE)
    t.access(PAGE).expect_ok()
    path = t.write(tmp_path / "long.parquet")
    _, tl = _replay(path, max_buckets=50)
    track = tl.vcpus[0]
    assert tl.bucket == -(-open_trace(path).num_rows // 50)
    assert len(track.pkrs) <= 52
    assert len(track.markers["fault"]) <= 51
    # AD(2) is set after every odd write, and the last access follows the last (odd) write: n/2 + 1 faults.
    assert sum(m.count for m in track.markers["fault"]) == n // 2 + 1  # every fault counted, none dropped
    svg = layout(tl)
    assert len(svg.shapes) < 600


def test_layout_shows_only_keys_with_restrictions(tmp_path: Path) -> None:
    path, div = write_hostile(tmp_path / "h.parquet")
    _, tl = _replay(path)
    svg = layout(tl)
    labels = [s.text for s in svg.shapes if s.tag == "text" and s.cls == "rlabel"]
    assert "PKRS k1" in labels and not any(lbl.startswith("PKRS k") and lbl != "PKRS k1" for lbl in labels)
    assert "PKRU all" in labels  # PKRU stays 0: one row saying every key is read/write
    classes = {s.cls for s in svg.shapes}
    assert {"k-ad", "k-wd", "k-rw", "m-fault", "m-div", "m-first"} <= classes
    div_titles = [s.title for s in svg.shapes if s.cls == "m-div"]
    assert div_titles and div_titles[0].startswith(f"DIVERGENCE event {div}:") and "[ARCH.RIGHTS]" in div_titles[0]
