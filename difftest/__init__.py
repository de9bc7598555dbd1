"""pks-difftest: rows to events, drive the model, compare, report.

``difftest.replay(trace_or_builder, policy="kvm-v7")`` is the entry point for test suites.
"""

from .api import replay  # the function; the module stays importable as difftest.replay
from .builder import TraceBuilder, pfec
from .errors import InputError
from .replay import replay_trace
from .results import ReplayResult
from .trace_io import open_trace, write_trace

__all__ = ["InputError", "ReplayResult", "TraceBuilder", "open_trace", "pfec", "replay", "replay_trace", "write_trace"]
