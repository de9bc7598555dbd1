"""Scratch folders of the recorders (guest builds, QEMU's debug console), gone on any exit.

``tempfile.TemporaryDirectory`` removes its folder when the block ends, by return, exception,
Ctrl-C or SIGTERM (the recorders turn SIGTERM into an exception).  A SIGKILL or a power cut runs
no cleanup, so each folder's name carries the pid that made it (``pksdt-KIND-PID-XXXXXXXX``) and
every new scratch folder first removes those of processes that no longer exist.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from difftest.trace.io import process_exists

_NAME = re.compile(r"pksdt-(?P<kind>[a-z]+)-(?P<pid>\d+)-[A-Za-z0-9_]{8}")


def remove_stale(kind: str, root: Path | None = None) -> list[Path]:
    """Delete ``pksdt-KIND-PID-*`` folders whose process is gone (a killed run's leftovers)."""
    base = Path(root or tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = list(base.glob(f"pksdt-{kind}-*"))
    except OSError:
        return removed
    for p in entries:
        m = _NAME.fullmatch(p.name)
        if m and m.group("kind") == kind and int(m.group("pid")) != os.getpid() and not process_exists(int(m.group("pid"))) \
                and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


@contextmanager
def scratch_dir(kind: str, root: Path | None = None) -> Iterator[Path]:
    """A new folder for this block, removed when it ends; stale ones of ``kind`` are removed first."""
    remove_stale(kind, root)
    with tempfile.TemporaryDirectory(prefix=f"pksdt-{kind}-{os.getpid()}-", dir=root) as tmp:
        yield Path(tmp)
