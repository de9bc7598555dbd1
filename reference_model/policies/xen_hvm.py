"""``xen-hvm``: an HVM guest under Xen with HAP on VT-x, Xen's PKS since 2021 (XEN.*).

Source: xen-project/xen: ``xen/arch/x86/cpuid.c`` ``calculate_hvm_max_policy()`` and
``xen/arch/x86/hvm/hvm.c`` ``hvm_cr4_guest_valid_bits()`` (XEN.CPUID), ``xen/arch/x86/msr.c``
``guest_rdmsr()``/``guest_wrmsr()`` with ``xen/arch/x86/hvm/vmx/vmx.c``
``vmx_cpuid_policy_changed()`` (XEN.MSR), ``xen/arch/x86/mm/guest_walk.c``
``guest_walk_tables()`` (XEN.WALK); Andrew Cooper's series, 20211216095421.12871-1 and
20230110171845.20542-1.  Model in ``reference_model/xen.py``.
"""

from ..xen import XenMachine
from .registry import Policy, register

POLICY = register(Policy(
    name="xen-hvm",
    description="Xen HVM with HAP: architectural PKS, PKS only with VMX+HAP, Xen's walk drops PK beside other faults",
    source="xen-project/xen: xen/arch/x86/hvm/hvm.c hvm_cr4_guest_valid_bits(), xen/arch/x86/msr.c "
           "guest_rdmsr()/guest_wrmsr() MSR_PKRS, xen/arch/x86/hvm/vmx/vmx.c vmx_cpuid_policy_changed(), "
           "xen/arch/x86/mm/guest_walk.c guest_walk_tables()",
    machine=lambda knobs, host: XenMachine(host),
    family="XEN",
))
