"""Run a command and measure its wall time and its own peak RSS.

``wait4``'s ``ru_maxrss`` is not the child's own peak: on Linux the child's high-water mark at
exec is that of the address space it leaves, which with ``vfork`` (what ``subprocess`` uses) is
the *parent's*.  A benchmark that built a 1 GiB trace in memory would see every child "peak" at
the parent's size (``python -c pass`` reports 913 MiB after a 900 MiB parent).  So the peak is read
from the child's ``/proc/PID/status`` ``VmHWM`` (the high-water mark of its post-exec address space),
polled every 20 ms until it exits; ``wait4``'s figure is kept as an upper bound.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path


def _vm_hwm_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def run(args: list[str], timeout: float, cpus: set[int] | None = None) -> tuple[float, float, int, bytes, float]:
    """(wall seconds, own peak RSS MiB, exit code (-9 on timeout), output, wait4 maxrss MiB).

    ``cpus``: run the child (and every thread it starts) on these CPUs only.
    """
    pin = None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(args, stdout=out, stderr=out, preexec_fn=pin)
        peak = 0
        while True:
            hwm = _vm_hwm_kib(p.pid)
            if hwm is not None:
                peak = max(peak, hwm)
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > timeout:
                p.kill()
                _, status, usage = os.wait4(p.pid, 0)
                break
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        p.returncode = code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        return wall, peak / 1024, code, out.read(), usage.ru_maxrss / 1024
