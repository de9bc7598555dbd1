"""The PKS reference model: events in, outcomes and state out.  No files, no Parquet, no HTML."""

from .events import ACCESS_KINDS, KINDS, LEVELS, OUTCOME_FIELDS, RESULTS, Event, Outcome
from .machine import Machine
from .policies import POLICIES, Policy, get_policy
from .rules import RULES

__all__ = [
    "ACCESS_KINDS", "KINDS", "LEVELS", "OUTCOME_FIELDS", "POLICIES", "RESULTS", "RULES",
    "Event", "Machine", "Outcome", "Policy", "get_policy",
]
