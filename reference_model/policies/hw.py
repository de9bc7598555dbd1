"""``hw``: the bare CPU, the architecture of SPEC §1 (and, with the KVM model, §2).

Source: shared/SPEC.md §1; sources/pks_semantics.md R1-R11 (QEMU, Bochs, Xen and the KVM series
agree on these rules; the disagreements are listed there and are QEMU's or Bochs's, not ours).
"""

from ..hw import HwMachine
from .registry import Policy, register

POLICY = register(Policy(
    name="hw",
    description="the bare CPU: architectural PKS/PKU rules only",
    source="Intel SDM Vol. 3A §4.6.2; QEMU target/i386/tcg/system/excp_helper.c; Xen xen/arch/x86/mm/guest_walk.c",
    machine=lambda knobs, host: HwMachine(host),
))
