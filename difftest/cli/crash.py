"""Internal errors: the full traceback goes to a file, the terminal gets one line (exit code 3).

A crash must never read as a verdict: exit 1 means "a divergence", so an exception that is not bad
input exits 3, names what failed in one line and says where the traceback was saved, so that a
bug report can attach it.  ``DIFFTEST_CRASH_DIR`` chooses the folder; otherwise
``$XDG_STATE_HOME/pks-difftest/crashes`` (``~/.local/state/...``), else the temporary directory.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path

EXIT_INTERNAL_ERROR = 3
CRASH_DIR_ENV = "DIFFTEST_CRASH_DIR"


def crash_dirs() -> list[Path]:
    """Where a traceback may go, in order of preference."""
    if os.environ.get(CRASH_DIR_ENV):
        return [Path(os.environ[CRASH_DIR_ENV])]
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return [Path(state) / "pks-difftest" / "crashes", Path(tempfile.gettempdir())]


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("pks-difftest")
    except Exception:  # not installed (run from a checkout): the report still helps
        return "unknown"


def save_crash(exc: BaseException, argv: Sequence[str]) -> Path | None:
    """Write ``exc``'s traceback with the command line and versions; the file, or None if none could be written."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    text = "".join([
        f"pks-difftest {_version()} internal error at {stamp}\n",
        f"command: {' '.join(argv)}\n",
        f"python {platform.python_version()} on {platform.platform()}\n\n",
        *traceback.format_exception(type(exc), exc, exc.__traceback__),
    ])
    for folder in crash_dirs():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f"difftest-crash-{stamp}-", suffix=".txt", dir=folder)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            return Path(name)
        except OSError:
            continue
    return None


def crash_line(exc: BaseException, saved: Path | None) -> str:
    """The one line the user sees: what failed, and where the full traceback is."""
    what = " ".join(str(exc).split())
    if len(what) > 200:
        what = what[:197] + "..."
    head = f"difftest: internal error: {type(exc).__name__}" + (f": {what}" if what else "")
    where = f"traceback saved to {saved}" if saved else "the traceback could not be saved"
    return f"{head} ({where}; please report it)"


def report_crash(exc: BaseException, argv: Sequence[str] | None = None) -> int:
    """Save the traceback, print the one line on stderr, and return the exit code (3)."""
    saved = save_crash(exc, list(argv if argv is not None else sys.argv))
    print(crash_line(exc, saved), file=sys.stderr)
    return EXIT_INTERNAL_ERROR
