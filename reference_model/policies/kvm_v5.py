"""``kvm-v5``: the v5 series (Chenyi Qiang, 2021-08-11).

Source: cover ``20210811101126.8973-1-chenyi.qiang@intel.com``; review by Sean
(``YYmGBhIbzgz+dyqp``: B11, ``YYliC1kdT9ssX/f7`` / ``YYqT/cOm3Psf1gj1``: B12 INIT clears,
``YYmXO2WQpydWVro0``: cap condition).  v5 differs from v6 in: controls on from vmcs_config and
only ever cleared at CPUID update (B11b/c), the intercept disabled and never re-enabled (B11a),
RESET and INIT both clear PKRS (B12), vmx_cache_reg VMREADs only with the cap, the cap needs
both controls.
"""

from .kvm_v6 import POLICY as KVM_V6
from .registry import register

POLICY = register(KVM_V6.derive(
    "kvm-v5",
    "KVM PKS series v5 (2021)",
    "v5 0/7 20210811101126.8973-1-chenyi.qiang@intel.com",
    cap_requires_ctls=True,
    ctl_initial_on=True,
    ctl_policy="cpuid_clear_only",
    intercept_policy="cpuid_sticky",
    init_clears_pkrs=True,
    lazy_vmread_needs_cap=True,
))
