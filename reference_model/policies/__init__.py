"""Policy variants: registered by name in :mod:`reference_model.policies.registry`."""

from .registry import POLICIES, Policy, get_policy, register

__all__ = ["POLICIES", "Policy", "get_policy", "register"]
