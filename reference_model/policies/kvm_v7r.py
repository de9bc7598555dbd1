"""``kvm-v7r``: v7 with the changes Sean Christopherson asked for in the v7 review (never posted).

Source: ``Yo1YKoUOPOLpZnqn@google.com`` (keep both load controls always on, clear an unpaired
control with adjust_vm_entry_exit_pair: fixes B16, B17), ``Yobt1XwOfb5M6Dfa@google.com`` (use
!nested_run_pending when capturing L1's PKRS), and the value check moved after the capability
checks with kvm_write_pkrs (sources/kvm_pks_series.md §10, column v7R), which is not a knob: both
checks fail with the same return value, so the order has no functional effect (§2.1).
"""

from .kvm_v7 import POLICY as KVM_V7
from .registry import register

POLICY = register(KVM_V7.derive(
    "kvm-v7r",
    "v7 plus the v7 review's requests (controls always on, paired; !nested_run_pending)",
    "v7 review Yo1YKoUOPOLpZnqn@google.com, Yobt1XwOfb5M6Dfa@google.com",
    ctl_policy="always",
    ctl_initial_on=True,
    pair_controls=True,
    capture_l1_pkrs="not_run_pending",
))
