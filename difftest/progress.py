"""Progress for long work: a rich bar on stderr, drawn only where someone can watch it.

A command opens one :func:`task` (``events``, ``traces``, ``candidates``...); the engines below it
call :func:`advance` with the unit they count, which costs one comparison when nothing is shown.
The bar is hidden when stderr is not a terminal, under ``--quiet`` (:func:`set_quiet`), and for work
that finishes within ``DELAY`` seconds (it appears only once the task has run that long), so
short commands and CI logs stay clean.  stdout is never touched: results stay pipeable.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

DELAY = float(os.environ.get("DIFFTEST_PROGRESS_DELAY", "1.0"))  # seconds of work before a bar appears

_quiet = False
_verbose = 0
_active: list[Task] = []


def set_quiet(quiet: bool) -> None:
    """``--quiet``: no progress at all (and commands print only their results)."""
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def set_verbose(level: int) -> None:
    """``-v`` (repeatable): more detail in what commands print."""
    global _verbose
    _verbose = level


def verbosity() -> int:
    return _verbose


def shown() -> bool:
    """Whether a bar may be drawn: stderr is a terminal and nobody asked for quiet."""
    return not _quiet and sys.stderr.isatty()


class Task:
    """One unit of long work; its bar starts after ``DELAY`` seconds, if it may be shown at all.

    All tasks share one rich display (rich allows one live display at a time): a corpus run's
    "traces" bar and a long trace's "events" bar stand one above the other.
    """

    def __init__(self, description: str, total: float | None, unit: str, show: bool) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.completed = 0.0
        self.started = time.monotonic()
        self._show = show
        self._id: Any = None

    def advance(self, n: float = 1) -> None:
        self.completed += n
        self._refresh()

    def update(self, completed: float, total: float | None = None, description: str | None = None) -> None:
        self.completed = completed
        if total is not None:
            self.total = total
        if description is not None:
            self.description = description
        self._refresh()

    def _refresh(self) -> None:
        if not self._show:
            return
        if self._id is None:
            if time.monotonic() - self.started < DELAY:
                return
            self._id = _display().add_task(self.description, total=self.total, completed=self.completed, unit=self.unit)
        _display().update(self._id, completed=self.completed, total=self.total, description=self.description)

    def close(self) -> None:
        global _bar
        if self._id is not None and _bar is not None:
            _bar.remove_task(self._id)
            self._id = None
            if not _bar.tasks:
                _bar.stop()
                _bar = None


_bar: Any = None


def _display() -> Any:
    """The one rich display on stderr, started when the first bar is due."""
    global _bar
    if _bar is None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        console = Console(stderr=True)  # rich honours NO_COLOR
        _bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[unit]}"),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True)
        _bar.start()
    return _bar


@contextmanager
def task(description: str, total: float | None = None, unit: str = "events") -> Iterator[Task]:
    """Open a progress task; :func:`advance` calls with the same ``unit`` move it."""
    t = Task(description, total, unit, shown())
    _active.append(t)
    try:
        yield t
    finally:
        _active.remove(t)
        t.close()


def advance(n: float = 1, unit: str = "events") -> None:
    """Move the innermost open task that counts ``unit`` (nothing when none is open)."""
    for t in reversed(_active):
        if t.unit == unit:
            t.advance(n)
            return
