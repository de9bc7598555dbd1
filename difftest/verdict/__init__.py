"""Verdicts: outcomes diffed against expectations, profiles that mask known deviations, and the result types."""
