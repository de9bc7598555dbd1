"""The /dev/kvm ioctl ABI (x86-64) from Python: ctypes structs, request numbers, thin fd wrappers.

Only what the recorder uses.  Numbers and layouts are those listed in
sources/kvm_recorder.md §1.1; they are the stable KVM userspace ABI, so nothing here depends on
the host's backend (kvm_intel, kvm_amd, kvm_pvm).  Every ioctl that may fail returns an
``IoctlResult`` (return value or errno) instead of raising, because a failing ioctl is an
outcome the recorder must write down, not an error.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
from dataclasses import dataclass

KVMIO = 0xAE


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (KVMIO << 8) | nr


_W, _R = 1, 2


class KvmSegment(ctypes.Structure):
    _fields_ = [("base", ctypes.c_uint64), ("limit", ctypes.c_uint32), ("selector", ctypes.c_uint16),
                ("type", ctypes.c_uint8), ("present", ctypes.c_uint8), ("dpl", ctypes.c_uint8),
                ("db", ctypes.c_uint8), ("s", ctypes.c_uint8), ("l", ctypes.c_uint8), ("g", ctypes.c_uint8),
                ("avl", ctypes.c_uint8), ("unusable", ctypes.c_uint8), ("padding", ctypes.c_uint8)]


class KvmDtable(ctypes.Structure):
    _fields_ = [("base", ctypes.c_uint64), ("limit", ctypes.c_uint16), ("padding", ctypes.c_uint16 * 3)]


class KvmSregs(ctypes.Structure):
    _fields_ = [("cs", KvmSegment), ("ds", KvmSegment), ("es", KvmSegment), ("fs", KvmSegment),
                ("gs", KvmSegment), ("ss", KvmSegment), ("tr", KvmSegment), ("ldt", KvmSegment),
                ("gdt", KvmDtable), ("idt", KvmDtable), ("cr0", ctypes.c_uint64), ("cr2", ctypes.c_uint64),
                ("cr3", ctypes.c_uint64), ("cr4", ctypes.c_uint64), ("cr8", ctypes.c_uint64),
                ("efer", ctypes.c_uint64), ("apic_base", ctypes.c_uint64), ("interrupt_bitmap", ctypes.c_uint64 * 4)]


REG_NAMES = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11", "r12", "r13",
             "r14", "r15", "rip", "rflags")


class KvmRegs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in REG_NAMES]


class KvmUserspaceMemoryRegion(ctypes.Structure):
    _fields_ = [("slot", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("guest_phys_addr", ctypes.c_uint64),
                ("memory_size", ctypes.c_uint64), ("userspace_addr", ctypes.c_uint64)]


class KvmCpuidEntry2(ctypes.Structure):
    _fields_ = [("function", ctypes.c_uint32), ("index", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("eax", ctypes.c_uint32), ("ebx", ctypes.c_uint32), ("ecx", ctypes.c_uint32),
                ("edx", ctypes.c_uint32), ("padding", ctypes.c_uint32 * 3)]


def cpuid2_struct(n: int) -> type[ctypes.Structure]:
    class KvmCpuid2(ctypes.Structure):
        _fields_ = [("nent", ctypes.c_uint32), ("padding", ctypes.c_uint32), ("entries", KvmCpuidEntry2 * n)]
    return KvmCpuid2


class KvmMsrEntry(ctypes.Structure):
    _fields_ = [("index", ctypes.c_uint32), ("reserved", ctypes.c_uint32), ("data", ctypes.c_uint64)]


def msrs_struct(n: int) -> type[ctypes.Structure]:
    class KvmMsrs(ctypes.Structure):
        _fields_ = [("nmsrs", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("entries", KvmMsrEntry * n)]
    return KvmMsrs


def msr_list_struct(n: int) -> type[ctypes.Structure]:
    class KvmMsrList(ctypes.Structure):
        _fields_ = [("nmsrs", ctypes.c_uint32), ("indices", ctypes.c_uint32 * n)]
    return KvmMsrList


class KvmEnableCap(ctypes.Structure):
    _fields_ = [("cap", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("args", ctypes.c_uint64 * 4),
                ("pad", ctypes.c_uint8 * 64)]


class KvmMsrFilterRange(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint32), ("nmsrs", ctypes.c_uint32), ("base", ctypes.c_uint32),
                ("bitmap", ctypes.c_void_p)]


MSR_FILTER_MAX_RANGES = 16


class KvmMsrFilter(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint32), ("ranges", KvmMsrFilterRange * MSR_FILTER_MAX_RANGES)]


class KvmMpState(ctypes.Structure):
    _fields_ = [("mp_state", ctypes.c_uint32)]


assert ctypes.sizeof(KvmSregs) == 312 and ctypes.sizeof(KvmRegs) == 144
assert ctypes.sizeof(KvmMsrFilter) == 392 and ctypes.sizeof(KvmEnableCap) == 104

KVM_GET_API_VERSION = _ioc(0, 0x00, 0)
KVM_CREATE_VM = _ioc(0, 0x01, 0)
KVM_GET_MSR_INDEX_LIST = _ioc(_R | _W, 0x02, 4)
KVM_CHECK_EXTENSION = _ioc(0, 0x03, 0)
KVM_GET_VCPU_MMAP_SIZE = _ioc(0, 0x04, 0)
KVM_GET_SUPPORTED_CPUID = _ioc(_R | _W, 0x05, 8)
KVM_GET_MSR_FEATURE_INDEX_LIST = _ioc(_R | _W, 0x0A, 4)
KVM_CREATE_VCPU = _ioc(0, 0x41, 0)
KVM_SET_USER_MEMORY_REGION = _ioc(_W, 0x46, ctypes.sizeof(KvmUserspaceMemoryRegion))
KVM_CREATE_IRQCHIP = _ioc(0, 0x60, 0)
KVM_RUN = _ioc(0, 0x80, 0)
KVM_GET_REGS = _ioc(_R, 0x81, 144)
KVM_SET_REGS = _ioc(_W, 0x82, 144)
KVM_GET_SREGS = _ioc(_R, 0x83, 312)
KVM_SET_SREGS = _ioc(_W, 0x84, 312)
KVM_GET_MSRS = _ioc(_R | _W, 0x88, 8)
KVM_SET_MSRS = _ioc(_W, 0x89, 8)
KVM_SET_CPUID2 = _ioc(_W, 0x90, 8)
KVM_GET_CPUID2 = _ioc(_R | _W, 0x91, 8)
KVM_GET_MP_STATE = _ioc(_R, 0x98, 4)
KVM_SET_MP_STATE = _ioc(_W, 0x99, 4)
KVM_ENABLE_CAP = _ioc(_W, 0xA3, 104)
KVM_X86_SET_MSR_FILTER = _ioc(_W, 0xC6, 392)

assert KVM_SET_SREGS == 0x4138AE84 and KVM_X86_SET_MSR_FILTER == 0x4188AEC6 and KVM_GET_MSRS == 0xC008AE88

KVM_CAP_IRQCHIP = 0
KVM_CAP_X86_USER_SPACE_MSR = 188
KVM_CAP_X86_MSR_FILTER = 189
KVM_MSR_FILTER_READ = 1
KVM_MSR_FILTER_WRITE = 2
KVM_MSR_FILTER_DEFAULT_DENY = 1
KVM_MP_STATE_RUNNABLE = 0
KVM_MP_STATE_INIT_RECEIVED = 2

# kvm_run.exit_reason values the recorder handles
EXIT_UNKNOWN, EXIT_IO, EXIT_HLT, EXIT_MMIO, EXIT_SHUTDOWN, EXIT_FAIL_ENTRY = 0, 2, 5, 6, 8, 9
EXIT_INTERNAL_ERROR, EXIT_X86_RDMSR, EXIT_X86_WRMSR = 17, 29, 30
KVM_EXIT_IO_OUT = 1


@dataclass(frozen=True)
class IoctlResult:
    """What one ioctl returned: ``ret`` on success, else ``errno``."""

    ret: int | None
    errno: int | None

    @property
    def ok(self) -> bool:
        return self.errno is None

    @property
    def errname(self) -> str | None:
        return errno.errorcode.get(self.errno, str(self.errno)) if self.errno is not None else None


def ioctl(fd: int, request: int, arg: object = 0) -> IoctlResult:
    """One ioctl; ``arg`` is an int or a writable ctypes object (so the int result is kept)."""
    try:
        if isinstance(arg, int):
            return IoctlResult(fcntl.ioctl(fd, request, arg), None)
        return IoctlResult(fcntl.ioctl(fd, request, arg, True), None)  # type: ignore[call-overload]
    except OSError as exc:
        return IoctlResult(None, exc.errno)


def must(res: IoctlResult, what: str) -> int:
    """The return value, or OSError: for ioctls whose failure means the recorder cannot go on."""
    if res.errno is not None:
        raise OSError(res.errno, f"{what} failed: {os.strerror(res.errno)}")
    return res.ret or 0


def _u8(buf: mmap.mmap, off: int) -> int:
    return buf[off]


def _le(buf: mmap.mmap, off: int, n: int) -> int:
    return int.from_bytes(buf[off:off + n], "little")


class RunPage:
    """Typed access to the kvm_run mmap without exporting buffers (so closing never fails)."""

    def __init__(self, fd: int, size: int) -> None:
        self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    @property
    def exit_reason(self) -> int:
        return _le(self.mm, 8, 4)

    # io = {u8 direction, size; u16 port; u32 count; u64 data_offset}
    def io(self) -> tuple[int, int, int, int]:
        """(direction, size, port, value of the first item)."""
        direction, size, port = _u8(self.mm, 32), _u8(self.mm, 33), _le(self.mm, 34, 2)
        off = _le(self.mm, 40, 8)
        return direction, size, port, _le(self.mm, off, size)

    # msr = {u8 error; u8 pad[7]; u32 reason; u32 index; u64 data}
    def msr(self) -> tuple[int, int, int]:
        """(reason, index, data) of a KVM_EXIT_X86_RDMSR/WRMSR."""
        return _le(self.mm, 40, 4), _le(self.mm, 44, 4), _le(self.mm, 48, 8)

    def reply_msr(self, error: int, data: int | None = None) -> None:
        self.mm[32] = error
        if data is not None:
            self.mm[48:56] = data.to_bytes(8, "little")

    def internal(self) -> tuple[int, list[int]]:
        """(suberror, data[:ndata]) of a KVM_EXIT_INTERNAL_ERROR."""
        n = min(_le(self.mm, 36, 4), 16)
        return _le(self.mm, 32, 4), [_le(self.mm, 40 + 8 * i, 8) for i in range(n)]

    def close(self) -> None:
        self.mm.close()
