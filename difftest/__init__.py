"""pks-difftest: rows to events, drive the model, compare, report.

``difftest.replay(trace_or_builder, policy="kvm-v7")`` is the entry point for test suites.
"""

import sys as _sys


def _interrupted_hook(exc_type, exc, tb):  # type: ignore[no-untyped-def]
    """Ctrl-C before a command installs its own handling (e.g. while modules load): one line, no traceback."""
    if issubclass(exc_type, KeyboardInterrupt):
        _sys.stderr.write("difftest: interrupted\n")
        return
    _sys.__excepthook__(exc_type, exc, tb)


if _sys.excepthook is _sys.__excepthook__:
    _sys.excepthook = _interrupted_hook

from difftest.api import replay  # noqa: E402 (the hook above must be in place first)
from difftest.engine import replay_trace  # noqa: E402
from difftest.trace.builder import TraceBuilder, pfec  # noqa: E402
from difftest.trace.io import open_trace, write_trace  # noqa: E402
from difftest.verdict.results import ReplayResult  # noqa: E402

from .errors import InputError  # noqa: E402

__all__ = ["InputError", "ReplayResult", "TraceBuilder", "open_trace", "pfec", "replay", "replay_trace", "write_trace"]
