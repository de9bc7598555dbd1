"""pks-difftest: rows to events, drive the model, compare, report."""

from difftest.engine import replay_trace
from difftest.trace.builder import TraceBuilder, pfec
from difftest.trace.io import open_trace, write_trace

from .errors import InputError

__all__ = ["InputError", "TraceBuilder", "open_trace", "pfec", "replay_trace", "write_trace"]
