"""``kvm-rfc-v1``: RFC v1 (Chenyi Qiang, 2020-08-07), reviewed by Jim Mattson and Sean.

Source: cover ``20200807084841.7112-1-chenyi.qiang@intel.com``; Jim
``CALMp9eQ=QUZ04_26eXBGHqvQYnsN6JEgiV=ZSSrE395KLX-atA@mail.gmail.com`` (B1 CR4.PKS in pdptr_bits,
B2 0x6E1 listed without the cap), Jim on nested (L2's PKRS saved to vmcs12 gated on the KVM cap,
nested caps only through the per-vCPU CPUID update).
"""

from .kvm_rfc_v2 import POLICY as KVM_RFC_V2
from .registry import register

POLICY = register(KVM_RFC_V2.derive(
    "kvm-rfc-v1",
    "KVM PKS RFC v1 (2020)",
    "RFC v1 0/7 20200807084841.7112-1-chenyi.qiang@intel.com",
    pdptr_reload_on_pks=True,
    msr_list_needs_cap=False,
    save_l2_gate="cap",
    nested_caps="cpuid",
))
