"""``upstream-pvm``: upstream KVM as the PVM backend (kvm_pvm) runs it on this project's host.

Source: sources/kvm_recorder.md §0 and §6 (divergences 1-3) and recordings in traces/real/:
KVM_SET_CPUID2 drops PKS and PKU from leaf 7 (the backend rewrites the leaf; the bits it adds
instead are masked by the ``pvm`` comparison profile, no knob expresses a replacement), CR4.PKE
is accepted without PKU, and RDPKRU ends in KVM_EXIT_INTERNAL_ERROR (emulation failure).
"""

from .registry import register
from .upstream import POLICY as UPSTREAM

POLICY = register(UPSTREAM.derive(
    "upstream-pvm",
    "upstream KVM on the PVM backend: leaf 7 rewritten, CR4.PKE without PKU, RDPKRU internal error",
    "github.com/virt-pvm/linux (PVM backend); recordings in the bundled traces/real/ corpus",
    cpuid7_ecx_keep=0xFFFF_FFFF & ~((1 << 31) | (1 << 3)),
    cr4_pke_needs_pku=False,
    rdpkru_internal_error=True,
))
