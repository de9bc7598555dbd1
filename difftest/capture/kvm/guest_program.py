"""The guest side of the recorder: a tiny command interpreter, in real mode and in long mode.

The host writes one command (operation, ECX, a 64-bit value, a CPUID subleaf) into a fixed
block of guest memory and resumes the vCPU; the guest executes that one instruction, reports
its result on I/O ports, and halts.  A fault goes through the IVT (real mode) or IDT (long
mode), whose handler reports vector, error code and faulting IP, then resumes at the halt.  So
one program, assembled once per mode and cached, executes any sequence of guest events, and
every instruction's outcome is read off the exits that follow it.

Ports (all OUT): 0x10 done marker; 0x11/0x12 data low/high; 0xE0 vector; 0xE2 faulting IP;
0xE6 error code (long mode only: real mode pushes none).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .guest_asm import assemble

CMD = 0x800  # {u32 op; u32 ecx; u64 value; u32 subleaf}
PORT_DONE, PORT_DATA_LO, PORT_DATA_HI = 0x10, 0x11, 0x12
PORT_VECTOR, PORT_IP, PORT_ERROR = 0xE0, 0xE2, 0xE6

OPS = {"wrmsr": 1, "rdmsr": 2, "mov_cr4": 3, "cpuid": 4, "rdpkru": 5, "wrpkru": 6, "mov_cr0": 7, "mov_cr3": 8}

# x86 exceptions that push an error code (the long-mode stubs push a dummy 0 for the others)
ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})

# long-mode layout
GDT, IDT, PML4, PDPT, PD = 0x500, 0x2000, 0x9000, 0xA000, 0xB000
STACK = 0x8000
REAL_BASE, LONG_BASE = 0x1000, 0x4000
STUB_OFFSET = 0x800

LONG_CR0 = 0x80000033  # PG | NE | ET | MP | PE
LONG_CR4 = 0x20  # PAE
LONG_EFER = 0x500  # LMA | LME
REAL_CR0 = 0x60000010  # the power-up value (CD | NW | ET)


def _dispatch(width: str) -> str:
    """The shared body: load the command, run one instruction, report, halt again."""
    a, c, d = ("eax", "ecx", "edx") if width == "32" else ("rax", "rcx", "rdx")
    return f"""
loop:
    hlt
    mov eax, dword ptr [{CMD}]
    cmp eax, {OPS["wrmsr"]}
    je op_wrmsr
    cmp eax, {OPS["rdmsr"]}
    je op_rdmsr
    cmp eax, {OPS["mov_cr4"]}
    je op_mov_cr4
    cmp eax, {OPS["cpuid"]}
    je op_cpuid
    cmp eax, {OPS["rdpkru"]}
    je op_rdpkru
    cmp eax, {OPS["wrpkru"]}
    je op_wrpkru
    cmp eax, {OPS["mov_cr0"]}
    je op_mov_cr0
    cmp eax, {OPS["mov_cr3"]}
    je op_mov_cr3
    jmp loop
op_wrmsr:
    mov ecx, dword ptr [{CMD + 4}]
    mov eax, dword ptr [{CMD + 8}]
    mov edx, dword ptr [{CMD + 12}]
    wrmsr
    jmp done
op_rdmsr:
    mov ecx, dword ptr [{CMD + 4}]
    rdmsr
    out {PORT_DATA_LO}, eax
    mov eax, edx
    out {PORT_DATA_HI}, eax
    jmp done
op_mov_cr4:
    mov {a}, {"dword" if width == "32" else "qword"} ptr [{CMD + 8}]
    mov cr4, {a}
    jmp done
op_mov_cr0:
    mov {a}, {"dword" if width == "32" else "qword"} ptr [{CMD + 8}]
    mov cr0, {a}
    jmp done
op_mov_cr3:
    mov {a}, {"dword" if width == "32" else "qword"} ptr [{CMD + 8}]
    mov cr3, {a}
    jmp done
op_cpuid:
    mov eax, dword ptr [{CMD + 4}]
    mov ecx, dword ptr [{CMD + 16}]
    cpuid
    mov eax, ecx
    out {PORT_DATA_LO}, eax
    jmp done
op_rdpkru:
    xor {c}, {c}
    rdpkru
    out {PORT_DATA_LO}, eax
    jmp done
op_wrpkru:
    mov eax, dword ptr [{CMD + 8}]
    xor {c}, {c}
    xor {d}, {d}
    wrpkru
    jmp done
done:
    mov al, 1
    out {PORT_DONE}, al
    jmp loop
"""


def real_mode_source() -> str:
    stubs = "\n".join(f".balign 8\n    push ax\n    mov al, {v}\n    jmp common" for v in range(32))
    return _dispatch("32") + f"""
common:
    out {PORT_VECTOR}, al
    push bp
    mov bp, sp
    mov ax, word ptr [bp+4]
    out {PORT_IP}, ax
    mov word ptr [bp+4], offset loop
    mov word ptr [bp+6], 0
    pop bp
    pop ax
    iret
.org {STUB_OFFSET}
{stubs}
"""


def long_mode_source() -> str:
    stubs = []
    for v in range(32):
        push_err = "" if v in ERROR_CODE_VECTORS else "    push 0\n"
        stubs.append(f".balign 16\n{push_err}    push {v}\n    jmp common")
    return _dispatch("64") + f"""
common:
    push rax
    mov rax, qword ptr [rsp+8]
    out {PORT_VECTOR}, eax
    mov rax, qword ptr [rsp+16]
    out {PORT_ERROR}, eax
    mov rax, qword ptr [rsp+24]
    out {PORT_IP}, eax
    lea rax, [rip + loop]
    mov qword ptr [rsp+24], rax
    pop rax
    add rsp, 16
    iretq
.org {STUB_OFFSET}
""" + "\n".join(stubs) + "\n"


@dataclass(frozen=True)
class GuestImage:
    """An assembled interpreter and where it goes."""

    mode: str
    base: int
    code: bytes

    @property
    def entry(self) -> int:
        return self.base

    def stub(self, vector: int) -> int:
        return self.base + STUB_OFFSET + vector * (8 if self.mode == "real" else 16)


def build_image(mode: str) -> GuestImage:
    if mode == "real":
        return GuestImage(mode, REAL_BASE, assemble(real_mode_source(), "real", REAL_BASE))
    if mode == "long":
        return GuestImage(mode, LONG_BASE, assemble(long_mode_source(), "long", LONG_BASE))
    raise ValueError(f"unknown guest mode {mode!r}")


def ivt(image: GuestImage) -> bytes:
    """Real-mode IVT: vectors 0-31 to the stubs (segment 0)."""
    return b"".join(struct.pack("<HH", image.stub(v), 0) for v in range(32))


def idt(image: GuestImage) -> bytes:
    """Long-mode IDT: 32 present 64-bit interrupt gates, selector 0x08."""
    out = b""
    for v in range(32):
        off = image.stub(v)
        out += struct.pack("<HHBBHII", off & 0xFFFF, 0x08, 0, 0x8E, (off >> 16) & 0xFFFF, off >> 32, 0)
    return out


def gdt() -> bytes:
    """null, 0x08 = 64-bit code, 0x10 = data."""
    return struct.pack("<QQQ", 0, 0x00AF9A000000FFFF, 0x00CF92000000FFFF)


def page_tables() -> dict[int, bytes]:
    """PML4 -> PDPT -> PD with one 2 MiB identity page at 0 (present, writable, supervisor)."""
    return {
        PML4: struct.pack("<Q", PDPT | 0x3),
        PDPT: struct.pack("<Q", PD | 0x3),
        PD: struct.pack("<Q", 0x0 | 0x83),
    }


def command(op: str, ecx: int = 0, value: int = 0, subleaf: int = 0) -> bytes:
    return struct.pack("<IIQI", OPS[op], ecx & 0xFFFFFFFF, value & (2**64 - 1), subleaf & 0xFFFFFFFF)
