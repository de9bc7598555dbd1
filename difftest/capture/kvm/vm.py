"""A VM and its vCPUs over /dev/kvm: the fds, the guest memory, and the ioctls the recorder issues.

Every fd and mapping is owned by a :class:`Vm` (a context manager), so an exception or Ctrl-C
anywhere in a scenario closes the vCPU fds, unmaps the run pages and guest memory, and closes
the VM fd; :data:`OPEN_VMS` lets a test check that nothing was left behind.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from . import ioctl_api as k

KVM_DEV = "/dev/kvm"
OPEN_VMS: set[Vm] = set()


def kvm_usable() -> str | None:
    """None if /dev/kvm can be used here, else the reason it cannot (for skips and errors)."""
    if not os.path.exists(KVM_DEV):
        return f"{KVM_DEV} does not exist"
    try:
        fd = os.open(KVM_DEV, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"cannot open {KVM_DEV}: {exc.strerror}"
    try:
        api = k.ioctl(fd, k.KVM_GET_API_VERSION)
        if api.ret != 12:
            return f"{KVM_DEV}: unexpected KVM API version {api.ret}"
    finally:
        os.close(fd)
    return None


class Kvm:
    """The system fd: capability checks and the host-wide lists."""

    def __init__(self) -> None:
        self.fd = os.open(KVM_DEV, os.O_RDWR | os.O_CLOEXEC)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Kvm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_extension(self, cap: int) -> int:
        return k.ioctl(self.fd, k.KVM_CHECK_EXTENSION, cap).ret or 0

    def _list(self, request: int) -> list[int]:
        probe = k.msr_list_struct(0)()
        res = k.ioctl(self.fd, request, probe)
        if res.ok:
            return []
        if res.errno != errno.E2BIG:
            raise OSError(res.errno, "MSR list probe failed")
        lst = k.msr_list_struct(probe.nmsrs)()
        lst.nmsrs = probe.nmsrs
        k.must(k.ioctl(self.fd, request, lst), "KVM_GET_MSR_INDEX_LIST")
        return list(lst.indices[: lst.nmsrs])

    def msr_index_list(self) -> list[int]:
        return self._list(k.KVM_GET_MSR_INDEX_LIST)

    def supported_cpuid(self) -> list[k.KvmCpuidEntry2]:
        n = 128
        while True:
            buf = k.cpuid2_struct(n)()
            buf.nent = n
            res = k.ioctl(self.fd, k.KVM_GET_SUPPORTED_CPUID, buf)
            if res.ok:
                return [_copy_entry(e) for e in buf.entries[: buf.nent]]
            if res.errno != errno.E2BIG or n > 4096:
                raise OSError(res.errno, "KVM_GET_SUPPORTED_CPUID failed")
            n *= 2

    def vcpu_mmap_size(self) -> int:
        return k.must(k.ioctl(self.fd, k.KVM_GET_VCPU_MMAP_SIZE), "KVM_GET_VCPU_MMAP_SIZE")


def _copy_entry(e: k.KvmCpuidEntry2) -> k.KvmCpuidEntry2:
    c = k.KvmCpuidEntry2()
    ctypes.memmove(ctypes.addressof(c), ctypes.addressof(e), ctypes.sizeof(c))
    return c


def find_leaf(entries: Iterable[k.KvmCpuidEntry2], function: int, index: int = 0) -> k.KvmCpuidEntry2 | None:
    for e in entries:
        if e.function == function and e.index == index:
            return e
    return None


@dataclass
class MemSlot:
    gpa: int
    mem: mmap.mmap


class Vcpu:
    """One vCPU fd and its kvm_run page."""

    def __init__(self, vm: Vm, index: int) -> None:
        self.vm = vm
        self.index = index
        self.fd = k.must(k.ioctl(vm.fd, k.KVM_CREATE_VCPU, index), "KVM_CREATE_VCPU")
        try:
            self.run_page = k.RunPage(self.fd, vm.kvm.vcpu_mmap_size())
        except BaseException:
            os.close(self.fd)
            raise
        self.has_run = False

    def close(self) -> None:
        if self.fd >= 0:
            self.run_page.close()
            os.close(self.fd)
            self.fd = -1

    def run(self) -> k.IoctlResult:
        self.has_run = True
        return k.ioctl(self.fd, k.KVM_RUN)

    def get_regs(self) -> k.KvmRegs:
        regs = k.KvmRegs()
        k.must(k.ioctl(self.fd, k.KVM_GET_REGS, regs), "KVM_GET_REGS")
        return regs

    def set_regs(self, regs: k.KvmRegs) -> k.IoctlResult:
        return k.ioctl(self.fd, k.KVM_SET_REGS, regs)

    def get_sregs(self) -> k.KvmSregs:
        s = k.KvmSregs()
        k.must(k.ioctl(self.fd, k.KVM_GET_SREGS, s), "KVM_GET_SREGS")
        return s

    def set_sregs(self, s: k.KvmSregs) -> k.IoctlResult:
        return k.ioctl(self.fd, k.KVM_SET_SREGS, s)

    def get_msrs(self, indices: Sequence[int]) -> tuple[k.IoctlResult, list[int]]:
        buf = k.msrs_struct(len(indices))()
        buf.nmsrs = len(indices)
        for i, idx in enumerate(indices):
            buf.entries[i].index = idx
        res = k.ioctl(self.fd, k.KVM_GET_MSRS, buf)
        n = res.ret or 0
        return res, [buf.entries[i].data for i in range(min(n, len(indices)))]

    def set_msrs(self, pairs: Sequence[tuple[int, int]]) -> k.IoctlResult:
        buf = k.msrs_struct(len(pairs))()
        buf.nmsrs = len(pairs)
        for i, (idx, val) in enumerate(pairs):
            buf.entries[i].index = idx
            buf.entries[i].data = val
        return k.ioctl(self.fd, k.KVM_SET_MSRS, buf)

    def set_cpuid(self, entries: Sequence[k.KvmCpuidEntry2]) -> k.IoctlResult:
        buf = k.cpuid2_struct(len(entries))()
        buf.nent = len(entries)
        for i, e in enumerate(entries):
            buf.entries[i] = e
        return k.ioctl(self.fd, k.KVM_SET_CPUID2, buf)

    def get_cpuid(self) -> tuple[k.IoctlResult, list[k.KvmCpuidEntry2]]:
        n = 256
        buf = k.cpuid2_struct(n)()
        buf.nent = n
        res = k.ioctl(self.fd, k.KVM_GET_CPUID2, buf)
        return res, [_copy_entry(e) for e in buf.entries[: buf.nent]] if res.ok else []

    def set_mp_state(self, state: int) -> k.IoctlResult:
        return k.ioctl(self.fd, k.KVM_SET_MP_STATE, k.KvmMpState(state))


class Vm:
    """A VM with one guest-memory slot at GPA 0 (and optionally one at the reset vector)."""

    def __init__(self, kvm: Kvm, mem_size: int = 2 << 20) -> None:
        self.kvm = kvm
        self.fd = k.must(k.ioctl(kvm.fd, k.KVM_CREATE_VM, 0), "KVM_CREATE_VM")
        self.vcpus: dict[int, Vcpu] = {}
        self.slots: list[MemSlot] = []
        self._filter_bitmaps: list[ctypes.Array[ctypes.c_uint8]] = []
        OPEN_VMS.add(self)
        try:
            self.mem = self.add_memory(0, mem_size)
        except BaseException:
            self.close()
            raise

    def add_memory(self, gpa: int, size: int) -> mmap.mmap:
        mem = mmap.mmap(-1, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, mmap.PROT_READ | mmap.PROT_WRITE)
        anchor = ctypes.c_char.from_buffer(mem)
        addr = ctypes.addressof(anchor)
        del anchor  # no exported buffer may outlive the mapping (mmap.close would refuse)
        region = k.KvmUserspaceMemoryRegion(len(self.slots), 0, gpa, size, addr)
        res = k.ioctl(self.fd, k.KVM_SET_USER_MEMORY_REGION, region)
        if not res.ok:
            mem.close()
            raise OSError(res.errno, "KVM_SET_USER_MEMORY_REGION failed")
        self.slots.append(MemSlot(gpa, mem))
        return mem

    def write(self, gpa: int, data: bytes) -> None:
        for slot in self.slots:
            if slot.gpa <= gpa and gpa + len(data) <= slot.gpa + len(slot.mem):
                off = gpa - slot.gpa
                slot.mem[off:off + len(data)] = data
                return
        raise ValueError(f"GPA {gpa:#x} is outside guest memory")

    def vcpu(self, index: int) -> Vcpu:
        cpu = self.vcpus.get(index)
        if cpu is None:
            cpu = self.vcpus[index] = Vcpu(self, index)
        return cpu

    def enable_cap(self, cap: int, arg0: int) -> k.IoctlResult:
        c = k.KvmEnableCap()
        c.cap = cap
        c.args[0] = arg0
        return k.ioctl(self.fd, k.KVM_ENABLE_CAP, c)

    def set_msr_filter(self, default_deny: bool, rules: Sequence[tuple[int, int]]) -> k.IoctlResult:
        """``rules``: (msr, allow) with allow bit 0 = reads allowed, bit 1 = writes allowed.

        Each MSR gets one read range and one write range (bitmap bit 1 allows), so reads and
        writes are decided separately; at most 8 MSRs fit in KVM's 16 ranges.
        """
        f = k.KvmMsrFilter()
        f.flags = k.KVM_MSR_FILTER_DEFAULT_DENY if default_deny else 0
        self._filter_bitmaps = []
        i = 0
        for msr, allow in rules:
            for flag, bit in ((k.KVM_MSR_FILTER_READ, allow & 1), (k.KVM_MSR_FILTER_WRITE, (allow >> 1) & 1)):
                if i >= k.MSR_FILTER_MAX_RANGES:
                    raise ValueError("too many MSRs for one KVM_X86_SET_MSR_FILTER")
                bm = (ctypes.c_uint8 * 1)(bit)
                self._filter_bitmaps.append(bm)
                f.ranges[i] = k.KvmMsrFilterRange(flag, 1, msr, ctypes.addressof(bm))
                i += 1
        return k.ioctl(self.fd, k.KVM_X86_SET_MSR_FILTER, f)

    def create_irqchip(self) -> k.IoctlResult:
        return k.ioctl(self.fd, k.KVM_CREATE_IRQCHIP)

    def close(self) -> None:
        for cpu in self.vcpus.values():
            cpu.close()
        self.vcpus.clear()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        for slot in self.slots:
            slot.mem.close()
        self.slots.clear()
        OPEN_VMS.discard(self)

    def __enter__(self) -> Vm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def kvm_fds_of_this_process() -> list[str]:
    """Targets of this process's fds that belong to KVM (/dev/kvm, kvm-vm, kvm-vcpu)."""
    out = []
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target == KVM_DEV or "kvm-vm" in target or "kvm-vcpu" in target:
            out.append(target)
    return out
