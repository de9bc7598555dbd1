"""Architectural constants: control-register bits, MSR indices, CPUID bits, PFEC bits, VMCS fields.

Kept in one place so that a number in the model always has a name and a source (SPEC §0/§1/§2,
sources/kvm_pks_series.md §0.2).
"""

from __future__ import annotations

# CR0
CR0_PE = 1 << 0
CR0_ET = 1 << 4
CR0_EM = 1 << 2
CR0_TS = 1 << 3
CR0_WP = 1 << 16
CR0_NW = 1 << 29
CR0_CD = 1 << 30
CR0_PG = 1 << 31
CR0_RESET = CR0_ET | CR0_NW | CR0_CD  # 0x60000010

# CR4
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_PGE = 1 << 7
CR4_LA57 = 1 << 12
CR4_VMXE = 1 << 13
CR4_SMEP = 1 << 20
CR4_SMAP = 1 << 21
CR4_PKE = 1 << 22
CR4_PKS = 1 << 24
# CR4 bits whose change flushes the TLB on every implementation we compare with (QEMU's mask).
CR4_FLUSH_BITS = CR4_PSE | CR4_PAE | CR4_PGE | CR4_LA57 | CR4_SMEP | CR4_SMAP
# CR4 bits the model knows; the rest are reserved (#GP on MOV).
CR4_KNOWN = (
    0x1 | 0x2 | 0x4 | 0x8 | CR4_PSE | CR4_PAE | 0x40 | CR4_PGE | 0x100 | 0x200 | 0x400 | 0x800
    | CR4_LA57 | CR4_VMXE | 0x4000 | 0x10000 | 0x20000 | 0x40000 | CR4_SMEP | CR4_SMAP | CR4_PKE
    | CR4_PKS
)

# EFER
EFER_SCE = 1 << 0
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
EFER_NXE = 1 << 11
EFER_WRITABLE = EFER_SCE | EFER_LME | EFER_NXE

# MSRs
MSR_IA32_PKRS = 0x6E1
MSR_EFER = 0xC0000080
MSR_STAR = 0xC0000081
MSR_LSTAR = 0xC0000082
MSR_CSTAR = 0xC0000083
MSR_SYSCALL_MASK = 0xC0000084
MSR_KERNEL_GS_BASE = 0xC0000102
MSR_SYSENTER_CS = 0x174
MSR_SYSENTER_ESP = 0x175
MSR_SYSENTER_EIP = 0x176
MSR_IA32_XSS = 0xDA0
MSR_IA32_TSC = 0x10  # counts by itself: a read's value depends on when it runs
MSR_IA32_TSC_DEADLINE = 0x6E0  # writing it arms or disarms the deadline timer: a side effect
MSR_IA32_VMX_ENTRY_CTLS = 0x484
MSR_IA32_VMX_EXIT_CTLS = 0x483
MSR_IA32_VMX_CR4_FIXED1 = 0x489
MSR_IA32_VMX_TRUE_EXIT_CTLS = 0x48F
MSR_IA32_VMX_TRUE_ENTRY_CTLS = 0x490
# Plain read/write MSRs the model stores without side effects (X86.MSR.STORE).
# MSRs that exist on every x86-64 CPU and count by themselves (X86.MSR.COUNTER).
COUNTER_MSRS = frozenset({MSR_IA32_TSC})

PLAIN_MSRS = frozenset({
    MSR_STAR, MSR_LSTAR, MSR_CSTAR, MSR_SYSCALL_MASK, MSR_KERNEL_GS_BASE,
    MSR_SYSENTER_CS, MSR_SYSENTER_ESP, MSR_SYSENTER_EIP, MSR_IA32_XSS, MSR_IA32_TSC_DEADLINE,
})

# CPUID
CPUID7_ECX_PKU = 1 << 3
CPUID7_ECX_OSPKE = 1 << 4
CPUID7_ECX_PKS = 1 << 31
CPUID1_ECX_VMX = 1 << 5

# Page-fault error code
PF_P = 0x01
PF_W = 0x02
PF_U = 0x04
PF_RSVD = 0x08
PF_ID = 0x10
PF_PK = 0x20

# VMCS (SPEC VMX.FIELD, VMX.CTL)
VMCS_GUEST_IA32_PKRS = 0x2818
VMCS_GUEST_IA32_PKRS_HIGH = 0x2819
VMCS_HOST_IA32_PKRS = 0x2C06
VMCS_HOST_IA32_PKRS_HIGH = 0x2C07
VMCS_VM_EXIT_CONTROLS = 0x400C
VMCS_VM_ENTRY_CONTROLS = 0x4012
VM_ENTRY_LOAD_IA32_PKRS = 0x00400000
VM_EXIT_LOAD_IA32_PKRS = 0x20000000
EXIT_REASON_INIT_SIGNAL = 3
EXIT_REASON_INVALID_STATE = 33
EXIT_REASON_FAILED_ENTRY = 1 << 31
VMX_ERROR_ENTRY_INVALID_CONTROL = 7
VMX_ERROR_ENTRY_INVALID_HOST_STATE = 8

# KVM userspace MSR exit reasons (KVM_MSR_EXIT_REASON_*)
MSR_EXIT_INVAL = 1
MSR_EXIT_UNKNOWN = 2
MSR_EXIT_FILTER = 4


def bit(value: int, mask: int) -> bool:
    """True if any bit of ``mask`` is set in ``value``."""
    return bool(value & mask)
