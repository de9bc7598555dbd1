"""pks-difftest: rows to events, drive the model, compare, report."""

from .builder import TraceBuilder, pfec
from .errors import InputError
from .replay import replay_trace
from .trace_io import open_trace, write_trace

__all__ = ["InputError", "TraceBuilder", "open_trace", "pfec", "replay_trace", "write_trace"]
