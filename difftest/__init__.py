"""pks-difftest: rows to events, drive the model, compare, report.

``difftest.replay(trace_or_builder, policy="kvm-v7")`` is the entry point for test suites.
"""

from difftest.api import replay
from difftest.engine import replay_trace
from difftest.trace.builder import TraceBuilder, pfec
from difftest.trace.io import open_trace, write_trace
from difftest.verdict.results import ReplayResult

from .errors import InputError

__all__ = ["InputError", "ReplayResult", "TraceBuilder", "open_trace", "pfec", "replay", "replay_trace", "write_trace"]
