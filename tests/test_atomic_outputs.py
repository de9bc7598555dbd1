"""Outputs are all-or-nothing: a writer killed with SIGKILL mid-write leaves no partial file under the
final name, only a hidden ``.NAME.PID.XXXXXXXX.tmp`` that the next successful write removes.

Every output of difftest (traces, report.txt, results.jsonl, index.html, JUnit, JSONL, imports)
goes through ``write_table_atomic`` / ``write_text_atomic`` (``test_every_writer_uses_the_atomic_helpers``
checks the source); the SIGKILL tests kill a child process while it is inside those two.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from difftest.trace.io import open_trace, remove_stale_temps, write_text_atomic

REPO = Path(__file__).resolve().parents[1]

# The child writes version 1, 2, 3, ... of one output in a loop, announcing each on stdout first.
CHILD = textwrap.dedent("""
    import sys
    from difftest.trace.io import write_text_atomic, write_trace
    kind, dest, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for version in range(1, 1000):
        print(version, flush=True)
        if kind == "trace":
            data = [{"seq": i, "kind": "rdmsr", "vcpu": 0, "level": "l1", "msr": 0x6E1, "exp_result": "gp",
                     "note": f"v{version} row {i}"} for i in range(rows)]
            write_trace(dest, data, {"producer": "synthetic", "name": f"v{version}"})
        else:
            write_text_atomic(dest, f"version {version}\\n" + ("x" * 99 + "\\n") * rows + "end\\n")
""")

TEMP_RE = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]{8}\.tmp")


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def _kill_mid_write(kind: str, dest: Path, rows: int, version: int, min_bytes: int) -> int:
    """Start the child, wait until it writes ``version`` and its temp file holds ``min_bytes``, SIGKILL it."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, kind, str(dest), str(rows)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        while int(proc.stdout.readline()) < version:
            pass
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            mine = [p for p in _temps(dest.parent) if f".{proc.pid}." in p.name]
            try:
                if mine and mine[0].stat().st_size >= min_bytes:
                    break
            except FileNotFoundError:  # renamed into place between the listing and the stat: look again
                pass
            time.sleep(0.001)
        else:
            pytest.fail("the child never got into the middle of a write")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return proc.pid


def _assert_whole_trace(dest: Path, rows: int, versions: set[int]) -> None:
    tf = open_trace(dest)  # raises InputError on a truncated Parquet file
    assert tf.num_rows == rows
    assert int(tf.meta["name"][1:]) in versions
    assert sum(1 for _ in tf.rows()) == rows


def _assert_whole_text(dest: Path, rows: int, versions: set[int]) -> None:
    text = dest.read_text()
    head, _, rest = text.partition("\n")
    assert int(head.split()[1]) in versions
    assert rest == ("x" * 99 + "\n") * rows + "end\n"


@pytest.mark.e2e
@pytest.mark.parametrize(("kind", "rows", "fractions"), [
    ("trace", 200_000, (0.0, 0.5)),   # killed right after the temp file appears, and half-way through it
    ("text", 400_000, (0.0, 0.5, 0.95)),
])
def test_sigkill_mid_write_leaves_no_partial_file(tmp_path: Path, kind: str, rows: int,
                                                  fractions: tuple[float, ...]) -> None:
    dest = tmp_path / ("out.parquet" if kind == "trace" else "report.txt")
    check = _assert_whole_trace if kind == "trace" else _assert_whole_text
    # the size of a whole output, to aim the kills at points inside the write
    subprocess.run([sys.executable, "-c", CHILD.replace("range(1, 1000)", "range(1, 2)"), kind, str(dest), str(rows)],
                   cwd=REPO, check=True, capture_output=True)
    full = dest.stat().st_size
    dest.unlink()
    killed = []
    for n, frac in enumerate(fractions):
        # first kill: no earlier version exists, so nothing may appear under the final name;
        # later kills (during version 2): the previous whole file must still be there, unchanged
        version = 1 if n == 0 else 2
        pid = _kill_mid_write(kind, dest, rows, version, max(1, int(full * frac)))
        killed.append(pid)
        if version == 1:
            assert not dest.exists(), "a partial file appeared under the final name"
        else:
            check(dest, rows, {1})
        leftovers = _temps(tmp_path)
        assert leftovers, "the kill did not land inside a write"
        for p in leftovers:
            m = TEMP_RE.fullmatch(p.name)
            assert m and m.group("name") == dest.name and p.name.startswith("."), p.name
        if n == 0:  # give the later kills an earlier whole version to protect
            subprocess.run([sys.executable, "-c", CHILD.replace("range(1, 1000)", "range(1, 2)"), kind, str(dest),
                            str(rows)], cwd=REPO, check=True, capture_output=True)
            check(dest, rows, {1})
    # the next successful write replaces the file and removes the dead writers' temp files
    subprocess.run([sys.executable, "-c", CHILD.replace("range(1, 1000)", "range(1, 2)"), kind, str(dest), str(rows)],
                   cwd=REPO, check=True, capture_output=True)
    check(dest, rows, {1})
    assert _temps(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [dest.name]


def test_stale_temps_of_live_writers_and_other_files_are_kept(tmp_path: Path) -> None:
    dest = tmp_path / "results.jsonl"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead_pid = _dead_pid()
        dead = tmp_path / f".results.jsonl.{dead_pid}.abcd1234.tmp"
        in_progress = tmp_path / f".results.jsonl.{live.pid}.abcd1234.tmp"
        other = tmp_path / f".results.jsonl.1.{dead_pid}.abcd1234.tmp"  # a temp of "results.jsonl.1"
        foreign = tmp_path / ".results.jsonl.notes.tmp"  # not ours: not named like our temps
        for p in (dead, in_progress, other, foreign):
            p.write_text("partial")
        write_text_atomic(dest, "{}\n")
        assert not dead.exists()
        assert in_progress.exists() and other.exists() and foreign.exists()
        assert dest.read_text() == "{}\n"
        assert remove_stale_temps(dest) == []
    finally:
        live.kill()
        live.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # reaped, so no process has this pid (until the kernel reuses it)


WRITE_CALL = re.compile(r"\.write_text\(|\.write_bytes\(|open\([^)]*['\"][wax]b?['\"]|pq\.write_table\(|ParquetWriter\(|"
                        r"json\.dump\(|\.to_parquet\(|shutil\.copy")
# Writes that are not outputs of a run: temporary build files, tracefs control files, caches
# written with their own temp + rename, the debug copy of a guest source that failed to build.
NOT_OUTPUTS = {
    "difftest/trace/io.py": 3,       # the atomic helpers themselves; an in-memory buffer (open_trace_table)
    "difftest/trace/outputs.py": 1,  # Parquet into an in-memory buffer for `-o -` (stdout)
    "difftest/cli/crash.py": 1,      # a crash's traceback into a new mkstemp file of its own
    "difftest/capture/kvm/guest_asm.py": 2,  # source into a TemporaryDirectory, cache via mkstemp + os.replace
    "difftest/capture/kvm/tracefs.py": 2,    # tracefs control files
    "difftest/capture/qemu/build.py": 4,     # sources into a TemporaryDirectory, cache copy + os.replace, failed source kept
    "difftest/search/campaign.py": 2,        # claim files: O_EXCL create, and a take-over written beside + os.replace
}


def test_every_writer_uses_the_atomic_helpers() -> None:
    found: dict[str, int] = {}
    for path in sorted((REPO / "difftest").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        hits = len(WRITE_CALL.findall(path.read_text()))
        if hits:
            found[rel] = hits
    unexpected = {k: v for k, v in found.items() if v > NOT_OUTPUTS.get(k, 0)}
    assert not unexpected, f"direct file writes outside write_table_atomic/write_text_atomic: {unexpected}"
    assert os.path.exists(REPO / "difftest" / "trace" / "io.py")
