"""Acquire/release pairs that a signal cannot split: what a recorder holds is always released.

A SIGINT that lands between ``os.open`` returning and the fd being remembered, or halfway through
a release, leaks: the resource exists but nobody will free it.  :func:`signals_deferred` holds
SIGINT and SIGTERM back for the few statements that acquire a resource and register its
release (or that release it), and delivers them right after as KeyboardInterrupt.
:class:`Resources` is the stack of registered releases; it reports what it could not release,
so a recorder never claims a cleanup that did not happen.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TypeVar

T = TypeVar("T")
DEFERRED = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT/SIGTERM arriving in the block are remembered and raised (KeyboardInterrupt) when it ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[signal.Signals] = []

    def remember(signum: int, frame: FrameType | None) -> None:
        caught.append(signal.Signals(signum))

    old = {s: signal.signal(s, remember) for s in DEFERRED}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if caught:
            # deliver as the handler in force would have; the default SIGINT handler raises KeyboardInterrupt
            handler = old[caught[0]]
            if callable(handler):
                handler(caught[0], None)
            elif handler == signal.SIG_DFL and caught[0] == signal.SIGINT:
                raise KeyboardInterrupt
            elif handler == signal.SIG_DFL:
                signal.raise_signal(caught[0])


class Resources:
    """Registered releases, run newest first; each acquire and each release is signal-atomic."""

    def __init__(self) -> None:
        self._undo: list[tuple[str, Callable[[], None]]] = []
        self.failures: list[str] = []

    def acquire(self, what: str, make: Callable[[], T], release: Callable[[T], None]) -> T:
        with signals_deferred():
            obj = make()
            self._undo.append((what, lambda: release(obj)))
        return obj

    def push(self, what: str, release: Callable[[], None]) -> None:
        """Register the release of something acquired under :func:`signals_deferred` by the caller."""
        self._undo.append((what, release))

    def release_all(self) -> list[str]:
        """Release everything (newest first); returns, and keeps, what could not be released and why."""
        with signals_deferred():
            while self._undo:
                what, release = self._undo.pop()
                try:
                    release()
                except OSError as exc:
                    self.failures.append(f"{what}: {exc.strerror or exc}")
        return self.failures

    def __len__(self) -> int:
        return len(self._undo)
