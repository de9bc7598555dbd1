"""``kvm-v7``: the v7 series (Lei Wang, 2022-04-24), the reference KVM policy and the default.

Source: cover ``20220424101557.134102-1-lei4.wang@intel.com``; seed 000 is its cover letter.
Every knob default in ``reference_model/kvm_knobs.py`` is v7's behaviour (sources/kvm_pks_series.md
§10, column v7); v7 still has B16 and B18 and D2/D5 (documented in those traces' notes).
"""

from ..kvm import KvmMachine
from ..kvm_knobs import V7_DEFAULTS
from .registry import Policy, register

POLICY = register(Policy(
    name="kvm-v7",
    description="KVM PKS series v7 (2022): the reference",
    source="v7 0/8 20220424101557.134102-1-lei4.wang@intel.com",
    machine=KvmMachine,
    knobs=dict(V7_DEFAULTS),
    family="KVM",
))
