"""Search over traces: generate them from a policy, shrink a divergence, fuzz two policies, print traces as programs."""
