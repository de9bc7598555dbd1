"""End-to-end: record under QEMU TCG, replay under ``hw`` with the ``qemu`` profile.

Expectations here are QEMU's own outputs checked against sources/pks_semantics.md (its observed
deviations and PKRS across INIT/RESET), and the corpus rule of issue 6: every traces/arch/ trace,
recorded, replays with 0 unmasked divergences.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import reference_model.paging as paging
from difftest.capture.qemu.recorder import TraceInput, record, record_one
from difftest.capture.qemu.scenarios import SCENARIOS, scenario_rows
from difftest.engine import replay_trace
from difftest.trace.io import open_trace, write_trace
from difftest.verdict.profiles import get_profile
from difftest.verdict.results import ReplayResult
from reference_model.policies import get_policy

REPO = Path(__file__).resolve().parent.parent
ARCH = sorted((REPO / "traces" / "arch").glob("*.parquet"))
MISSING = [t for t in ("qemu-system-x86_64", "as", "ld", "objcopy") if shutil.which(t) is None]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)} (Debian qemu-system-x86, binutils)"),
]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "difftest.cli", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300, check=False)


def scenario(name: str, tmp: Path) -> Path:
    builder = SCENARIOS[name]()
    rec, _ = record_one(TraceInput(name, scenario_rows(builder), builder.metadata()), cache=tmp / "cache")
    return write_trace(tmp / f"{name}.parquet", rec.rows, rec.meta)


def replay(path: Path) -> ReplayResult:
    return replay_trace(open_trace(path), get_policy("hw"), get_profile("qemu"))


def rows_of(path: Path) -> list:
    return list(open_trace(path).rows())


def test_init_preserves_and_reset_clears_pkrs(tmp_path: Path) -> None:
    # pks_semantics R4 (observed): INIT+SIPI keeps 0xAAAAAAA8, a 0xCF9 RESET gives 0.
    path = scenario("init-reset", tmp_path)
    reads = [r.expect.value for r in rows_of(path) if r.event is not None and r.event.kind == "rdmsr"]
    assert reads == [0xAAAAAAA8, 0]
    res = replay(path)
    assert res.passed and res.divergence_count == 0


def test_documented_qemu_deviations_are_what_qemu_does(tmp_path: Path) -> None:
    got = {}
    for name in ("rights", "address-type", "terminal-and-sizes"):
        for r in rows_of(scenario(name, tmp_path)):
            ev = r.event
            if ev is not None and r.expect is not None and r.expect.result == "pf":
                got.setdefault((name, ev.addr, ev.access, ev.cpl or 0), set()).add(r.expect.pfec)
    a, b, user = 0x4000_0000, 0x4000_1000, 0x4000_3000
    assert 0x21 in got[("rights", a, "rmw", 0)]  # deviation 4: W missing on the RMW's load (AD)
    assert 0x23 in got[("rights", a, "rmw", 0)]  # ...but W present when only the store faults (WD)
    assert got[("address-type", a, "read", 3)] == {0x05}  # deviation 1: no PK, CPL3 on a supervisor page
    assert got[("address-type", a, "write", 3)] == {0x07}
    assert got[("address-type", user, "read", 3)] == {0x25}  # PKRU on a user page does set PK
    assert got[("terminal-and-sizes", b, "read", 0)] == {0x08}  # deviation 3: RSVD without P
    masked = replay(tmp_path / "rights.parquet").masked_by
    assert masked == {"qemu-rmw-no-w": 4}


def test_cr4_reserved_bit_is_reported_not_recorded(tmp_path: Path) -> None:
    out = tmp_path / "nopks.parquet"
    proc = cli("record", "qemu", "--scenario", "no-pks", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "not recorded: seq" in proc.stdout and "livelock" in proc.stdout
    tf = open_trace(out)
    cr4 = [r for r in tf.rows() if r.event is not None and r.event.kind == "mov_cr4" and r.event.value & (1 << 24)]
    assert cr4 and cr4[0].expect is None and "not recorded" in (cr4[0].note or "")
    assert "livelock" in tf.meta["notes"] and tf.meta["producer"] == "recorded-qemu"
    assert "-pks" in tf.meta["host.qemu_cpu"] and tf.meta["host.qemu_version"]
    masked = replay(out).masked_by
    assert masked.get("qemu-pkrs-no-cpuid-gate", 0) >= 2  # deviation 5: no #GP on 0x6E1 without CPUID.PKS


def test_broken_wp_rule_is_caught_by_a_qemu_recording(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = scenario("rights", tmp_path)
    assert replay(path).passed

    def ignores_wp(pkr: int, key: int, is_write: bool, wp: bool, user_mode_access: bool) -> bool:
        bits = (pkr >> (2 * key)) & 3
        return bool(bits & 1 or (bits & 2 and is_write))

    monkeypatch.setattr(paging, "denies", ignores_wp)
    res = replay(path)
    assert not res.passed
    assert all("ARCH.RIGHTS" in d.rules for d in res.divergences)
    assert any(d.event is not None and d.event.access == "write" for d in res.divergences)


def test_bad_usage_exits_2(tmp_path: Path) -> None:
    proc = cli("record", "qemu", "--trace", str(tmp_path / "nope.parquet"), "-o", str(tmp_path / "q.parquet"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "nope.parquet" in proc.stderr
    proc = cli("record", "qemu", "-o", str(tmp_path / "q.parquet"))
    assert proc.returncode == 2


@pytest.mark.skipif(not ARCH, reason="traces/arch/ is empty")
def test_cli_round_trip_on_one_arch_trace(tmp_path: Path) -> None:
    src = next(p for p in ARCH if "INIT" in p.name) if any("INIT" in p.name for p in ARCH) else ARCH[0]
    out = tmp_path / "q.parquet"
    proc = cli("record", "qemu", "--trace", str(src), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    proc = cli("replay", str(out), "--policy", "hw", "--profile", "qemu")
    assert proc.returncode == 0, proc.stdout


@pytest.mark.skipif(not ARCH, reason="traces/arch/ is empty")
def test_whole_arch_corpus_replays_clean(tmp_path: Path) -> None:
    inputs = []
    for p in ARCH:
        tf = open_trace(p)
        inputs.append(TraceInput(tf.name, list(tf.rows()), dict(tf.meta)))
    failed = []
    recorded = 0
    for p, rec in zip(ARCH, record(inputs, cache=tmp_path / "cache"), strict=True):
        out = write_trace(tmp_path / p.name, rec.rows, rec.meta)
        recorded += rec.recorded
        res = replay(out)
        if not res.passed:
            failed.append((p.name, [d.describe_event() for d in res.divergences]))
    assert failed == []
    assert recorded > len(ARCH)  # the corpus was really run, not skipped row by row
