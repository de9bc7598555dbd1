"""Real captures of this machine's kernel, every kvm and kvmmmu tracepoint enabled, replayed.

The tests make the captures themselves: through the recorder's own tracefs instance, and through
Debian's trace-cmd (``extract`` from a pid-filtered instance, then ``report``: ``trace-cmd record``
needs to write /proc/sys/kernel/ftrace_enabled, which a container may refuse).  Each capture is
imported with the metadata the import derives (no --host/--profile) and must replay with exit 0,
at least half of its rows compared, and every tracepoint it contains compared, used as context or
classified with a reason.  Skipped where /dev/kvm, root, binutils, tracefs or trace-cmd are missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from difftest.capture.importers.ftrace import import_ftrace
from difftest.capture.kvm.guest_asm import assembler_missing
from difftest.capture.kvm.tracefs import TraceInstance, tracefs_mounts, tracefs_unusable
from difftest.capture.kvm.vm import kvm_usable
from difftest.trace.io import open_trace

WHY = kvm_usable() or assembler_missing() or (None if os.geteuid() == 0 else "needs root") or tracefs_unusable()
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(WHY is not None, reason=f"cannot capture here: {WHY}")]
CLI = [sys.executable, "-m", "difftest.cli"]


def _import_and_replay(capture: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path / (capture.name + ".parquet")
    imp = subprocess.run([*CLI, "import", "ftrace", str(capture), "-o", str(out), "-v"], capture_output=True,
                         text=True, timeout=300)
    assert imp.returncode == 0, imp.stderr
    rep = subprocess.run([*CLI, "replay", str(out)], capture_output=True, text=True, timeout=300)
    return rep, out


def _check_capture(capture: Path, tmp_path: Path) -> str:
    res = import_ftrace(str(capture))
    assert not [k for k in res.uses if k[1] == "unclassified"], res.uses
    assert res.events["kvm_mmu_pagetable_walk"] > 100 and res.events["kvm_msr"] > 0
    rep, out = _import_and_replay(capture, tmp_path)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    rows = list(open_trace(out).rows())
    compared = sum(1 for r in rows if r.expect is not None)
    assert compared * 2 >= len(rows), (compared, len(rows))
    return rep.stdout


def test_recorder_capture_of_every_scenario_replays_clean(tmp_path: Path) -> None:
    out = tmp_path / "all.parquet"
    rec = subprocess.run([*CLI, "record", "kvm", "--scenario", "all", "-o", str(out)], capture_output=True,
                         text=True, timeout=300)
    assert rec.returncode == 0, rec.stderr
    assert "kvm events enabled: kvm,kvmmmu" in open_trace(out).meta["notes"]
    text = _check_capture(Path(str(out) + ".ftrace.txt"), tmp_path)
    # the write to the read-only leaf under CR0.WP=1: the kernel's PFEC beside the model's
    assert "addr=0x200700 access=write  | expected pf pfec=0x3" in text


@pytest.mark.skipif(shutil.which("trace-cmd") is None, reason="trace-cmd is not installed (Debian: trace-cmd)")
def test_trace_cmd_report_of_a_recording_replays_clean(tmp_path: Path) -> None:
    global_mount = Path("/sys/kernel/tracing")
    mounted_before = global_mount in tracefs_mounts()
    dat = tmp_path / "trace.dat"
    try:
        with TraceInstance() as inst:  # kvm and kvmmmu, pid-filtered on this process and its children
            assert inst.path is not None
            rec = subprocess.run([*CLI, "record", "kvm", "--no-trace", "--scenario", "emulated-walks-wp1",
                                  "--scenario", "emulated-walks-wp0", "--scenario", "msr-classes",
                                  "--scenario", "cr4-pks-long-nopks", "-o", str(tmp_path / "r.parquet")],
                                 capture_output=True, text=True, timeout=300)
            assert rec.returncode == 0, rec.stderr
            (inst.path / "tracing_on").write_text("0\n")
            ext = subprocess.run(["trace-cmd", "extract", "-B", inst.path.name, "-o", str(dat)],
                                 capture_output=True, text=True, timeout=120)
            assert dat.is_file(), ext.stderr
        report = subprocess.run(["trace-cmd", "report", "-i", str(dat)], capture_output=True, text=True, timeout=120)
        assert report.returncode == 0, report.stderr
    finally:
        if not mounted_before and global_mount in tracefs_mounts():  # libtracefs mounted it: put it back
            subprocess.run(["umount", str(global_mount)], check=False, capture_output=True)
    capture = tmp_path / "report.txt"
    capture.write_text(report.stdout)
    assert import_ftrace(str(capture)).fmt == "trace-cmd report"
    text = _check_capture(capture, tmp_path)
    assert "expected pf pfec=0x3" in text
