"""``kvm-rebase``: v7 plus the v7 review's requests (as ``kvm-v7r``) rebased on the 2026 base.

Source: seed 000 (Ruihan Li's rebase, Nov 2025, never posted); ``kvm-v7r``'s review messages
(Yo1YKoUOPOLpZnqn@google.com, Yobt1XwOfb5M6Dfa@google.com); the 2026 base's rules KVM26.* read in
torvalds/linux (cpuid.c kvm_set_cpuid; vmx.c setup_vmcs_config/vmx_set_cpu_caps; nested.c
vmx_set_vmx_msr; x86.c kvm_probe_msr_to_save).  On that base the review's "clear an unpaired
control" becomes the pair table, and the cap follows it as CET's does (cap_requires_ctls: D2 fixed).
Its two open choices: the cap from raw CPUID (``PASSTHROUGH_F(PKS)``: the rebase exists to run PKS
guests on hosts that do not use PKS, seed 000's thread, and Paolo Bonzini agreed it "should" be
accepted so), and, without host PKS, the host PKRS after a VM exit is 0 (v7's get_current_pkrs
stub).  The variants change one choice each: ``-gated`` (v7's F(PKS)), ``-ones``, ``-keep``.
"""

from ..kvm2026 import DEFAULTS_2026, Kvm2026Machine
from .kvm_v7r import POLICY as KVM_V7R
from .registry import Policy, register

POLICY = register(Policy(
    name="kvm-rebase",
    description="v7 + v7 review on KVM v6.18: PKS from raw CPUID, paired controls, host PKRS 0 after exit (no host PKS)",
    source="seed 000; v7 review (as kvm-v7r); torvalds/linux vmx.c setup_vmcs_config, cpuid.c kvm_set_cpuid",
    machine=Kvm2026Machine,
    knobs={**KVM_V7R.knobs, **DEFAULTS_2026, "cap_requires_ctls": True, "cap_source": "raw"},
))
