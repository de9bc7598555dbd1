"""Execute trace events on a real KVM vCPU and observe what happened.

:class:`RealVcpuExecutor` takes model :class:`~reference_model.events.Event` objects (host
ioctls, guest instructions) and performs each on a live VM: host events as the matching ioctl,
guest events through the command interpreter of :mod:`.guest_program`.  What the kernel did
comes back as an :class:`Observation`, which becomes the row's expectation (``exp_*``).  Events
this host cannot perform are observed as ``None`` results with a note, never guessed.
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass, field

from reference_model.events import Event

from . import guest_program as gp
from . import ioctl_api as k
from .vm import Kvm, Vcpu, Vm, find_leaf

MSR_IA32_PKRS = 0x6E1
EFER_LME, EFER_LMA, CR0_PG = 1 << 8, 1 << 10, 1 << 31
VECTOR_RESULT = {13: "gp", 6: "ud", 14: "pf"}
MAX_EXITS_PER_STEP = 64


@dataclass
class Observation:
    """What one event really did (the fields map onto the ``exp_*`` columns)."""

    result: str | None = None
    value: int | None = None
    values: tuple[int, ...] | None = None
    count: int | None = None
    exit_reason: int | None = None
    pfec: int | None = None
    cr2: int | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def expectation(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for name in ("result", "value", "values", "count", "exit_reason", "pfec", "cr2"):
            v = getattr(self, name)
            if v is not None:
                out[f"exp_{name}"] = v
        return out


@dataclass(frozen=True)
class UserMsrReply:
    """How userspace (the recorder) answers KVM_EXIT_X86_RDMSR/WRMSR: accept (with data) or #GP."""

    error: int = 0
    data: int = 0

    def describe(self) -> str:
        return "reply error=1 (#GP)" if self.error else f"reply error=0 data={self.data:#x}"


def _ioctl_obs(res: k.IoctlResult, what: str) -> Observation:
    if res.ok:
        return Observation("ok")
    if res.errno == errno.EINVAL:
        return Observation("einval")
    if res.errno == errno.EPERM:
        return Observation("eperm")
    return Observation(None, notes=[f"{what} failed with {res.errname}"])


class RealVcpuExecutor:
    """One VM on /dev/kvm plus the state needed to run guest events on its vCPUs."""

    def __init__(self, kvm: Kvm, reply: UserMsrReply | None = None) -> None:
        self.kvm = kvm
        self.reply = reply or UserMsrReply()
        self.supported = kvm.supported_cpuid()
        self.vm = Vm(kvm)
        try:
            self.images = {m: gp.build_image(m) for m in ("real", "long")}
            self._load_memory()
        except BaseException:
            self.vm.close()
            raise
        self.long_mode: dict[int, bool] = {}

    def close(self) -> None:
        self.vm.close()

    def __enter__(self) -> RealVcpuExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- setup --------------------------------------------------------------------------
    def _load_memory(self) -> None:
        vm = self.vm
        vm.write(0, gp.ivt(self.images["real"]))
        vm.write(gp.GDT, gp.gdt())
        vm.write(gp.IDT, gp.idt(self.images["long"]))
        for addr, data in gp.page_tables().items():
            vm.write(addr, data)
        for img in self.images.values():
            vm.write(img.base, img.code)

    def vcpu(self, index: int) -> Vcpu:
        if index not in self.vm.vcpus:
            cpu = self.vm.vcpu(index)
            self._load_segments(cpu, long_mode=False)
            self.long_mode[index] = False
        return self.vm.vcpus[index]

    @staticmethod
    def _segments(s: k.KvmSregs, long_mode: bool) -> None:
        if long_mode:
            code = k.KvmSegment(0, 0xFFFFFFFF, 0x08, 0xB, 1, 0, 0, 1, 1, 1, 0, 0, 0)
            data = k.KvmSegment(0, 0xFFFFFFFF, 0x10, 0x3, 1, 0, 1, 1, 0, 1, 0, 0, 0)
            s.gdt.base, s.gdt.limit = gp.GDT, 23
            s.idt.base, s.idt.limit = gp.IDT, 32 * 16 - 1
        else:
            code = k.KvmSegment(0, 0xFFFF, 0, 0xB, 1, 0, 0, 1, 0, 0, 0, 0, 0)
            data = k.KvmSegment(0, 0xFFFF, 0, 0x3, 1, 0, 0, 1, 0, 0, 0, 0, 0)
            s.idt.base, s.idt.limit = 0, 0x3FF
        s.cs = code
        s.ds = s.es = s.fs = s.gs = s.ss = data
        s.tr = k.KvmSegment(0, 0x67, 0, 0xB, 1, 0, 0, 0, 0, 0, 0, 0, 0)
        s.ldt = k.KvmSegment(0, 0xFFFF, 0, 0x2, 1, 0, 0, 0, 0, 0, 0, 0, 0)

    def _load_segments(self, cpu: Vcpu, long_mode: bool) -> None:
        s = cpu.get_sregs()
        self._segments(s, long_mode)
        k.must(cpu.set_sregs(s), "KVM_SET_SREGS (segments)")

    # -- events -------------------------------------------------------------------------
    def step(self, ev: Event) -> Observation:
        t0 = time.perf_counter()
        handler = getattr(self, f"do_{ev.kind}", None)
        if handler is None:
            obs = Observation(None, notes=[f"the recorder cannot perform '{ev.kind}' on a real vCPU"])
        else:
            obs = handler(ev)
        obs.seconds = time.perf_counter() - t0
        return obs

    def do_create_vcpu(self, ev: Event) -> Observation:
        existed = ev.vcpu in self.vm.vcpus
        self.vcpu(ev.vcpu)
        return Observation("ok", notes=["vCPU already existed"] if existed else [])

    def _cpuid_table(self, ev: Event) -> list[k.KvmCpuidEntry2]:
        table = [e for e in self.supported]
        leaf7 = find_leaf(table, 7, 0)
        if leaf7 is None:
            leaf7 = k.KvmCpuidEntry2(7, 0, 1, 0, 0, 0, 0)
            table.append(leaf7)
        leaf7.ecx = ev.cpuid_7_ecx or 0
        if ev.cpuid_1_ecx is not None:
            leaf1 = find_leaf(table, 1, 0)
            if leaf1 is not None:
                leaf1.ecx = ev.cpuid_1_ecx
        return table

    def do_set_cpuid(self, ev: Event) -> Observation:
        res = self.vcpu(ev.vcpu).set_cpuid(self._cpuid_table(ev))
        return _ioctl_obs(res, "KVM_SET_CPUID2")

    def do_get_cpuid(self, ev: Event) -> Observation:
        res, entries = self.vcpu(ev.vcpu).get_cpuid()
        obs = _ioctl_obs(res, "KVM_GET_CPUID2")
        if res.ok:
            leaf7 = find_leaf(entries, 7, 0)
            leaf1 = find_leaf(entries, 1, 0)
            obs.value = leaf7.ecx if leaf7 is not None else 0
            if leaf7 is not None:
                obs.notes.append(f"GET_CPUID2 7.0 ebx={leaf7.ebx:#x} ecx={leaf7.ecx:#x} edx={leaf7.edx:#x}"
                                 + (f"; 1.ecx={leaf1.ecx:#x}" if leaf1 is not None else ""))
        return obs

    def do_get_msr_index_list(self, ev: Event) -> Observation:
        lst = self.kvm.msr_index_list()
        return Observation("ok", value=int(MSR_IA32_PKRS in lst), notes=[f"{len(lst)} MSRs listed"])

    def do_set_msrs(self, ev: Event) -> Observation:
        pairs = list(zip(ev.msrs or (), ev.values or (), strict=True))
        res = self.vcpu(ev.vcpu).set_msrs(pairs)
        obs = _ioctl_obs(res, "KVM_SET_MSRS")
        if res.ok:
            obs.count = res.ret
        return obs

    def do_get_msrs(self, ev: Event) -> Observation:
        res, values = self.vcpu(ev.vcpu).get_msrs(list(ev.msrs or ()))
        obs = _ioctl_obs(res, "KVM_GET_MSRS")
        if res.ok:
            obs.count = res.ret
            obs.values = tuple(values)
        return obs

    def do_set_sregs(self, ev: Event) -> Observation:
        cpu = self.vcpu(ev.vcpu)
        s = cpu.get_sregs()
        for name in ("cr0", "cr3", "cr4", "efer"):
            v = getattr(ev, name)
            if v is not None:
                setattr(s, name, v)
        long_mode = bool(s.cr0 & CR0_PG and s.efer & EFER_LME)
        if long_mode:
            s.efer |= EFER_LMA
        self._segments(s, long_mode)
        res = cpu.set_sregs(s)
        if res.ok:
            self.long_mode[ev.vcpu] = long_mode
        return _ioctl_obs(res, "KVM_SET_SREGS")

    def do_get_sregs(self, ev: Event) -> Observation:
        s = self.vcpu(ev.vcpu).get_sregs()
        return Observation("ok", value=int(getattr(s, ev.reg or "cr4")))

    def do_set_msr_filter(self, ev: Event) -> Observation:
        rules = [(m, ev.filter_allow or 0) for m in (ev.msrs or ())]
        try:
            res = self.vm.set_msr_filter(ev.filter_default == "deny", rules)
        except ValueError as exc:
            return Observation(None, notes=[str(exc)])
        return _ioctl_obs(res, "KVM_X86_SET_MSR_FILTER")

    def do_enable_user_msr(self, ev: Event) -> Observation:
        return _ioctl_obs(self.vm.enable_cap(k.KVM_CAP_X86_USER_SPACE_MSR, ev.value or 0), "KVM_ENABLE_CAP")

    def do_run(self, ev: Event) -> Observation:
        return self._guest(ev.vcpu, bytes(24), start_at_halt=True)

    # guest instructions
    def do_wrmsr(self, ev: Event) -> Observation:
        return self._guest(ev.vcpu, gp.command("wrmsr", ev.msr or 0, ev.value or 0), ev.cpl)

    def do_rdmsr(self, ev: Event) -> Observation:
        return self._guest(ev.vcpu, gp.command("rdmsr", ev.msr or 0), ev.cpl, want="value64")

    def do_mov_cr4(self, ev: Event) -> Observation:
        return self._guest(ev.vcpu, gp.command("mov_cr4", value=ev.value or 0), ev.cpl)

    def do_mov_cr0(self, ev: Event) -> Observation:
        return self._guest(ev.vcpu, gp.command("mov_cr0", value=ev.value or 0), ev.cpl)

    def do_mov_cr3(self, ev: Event) -> Observation:
        return self._guest(ev.vcpu, gp.command("mov_cr3", value=ev.value or 0), ev.cpl)

    def do_cpuid(self, ev: Event) -> Observation:
        cmd = gp.command("cpuid", ev.cpuid_leaf or 0, subleaf=ev.cpuid_subleaf or 0)
        return self._guest(ev.vcpu, cmd, ev.cpl, want="value32")

    def do_rdpkru(self, ev: Event) -> Observation:
        return self._guest(ev.vcpu, gp.command("rdpkru"), ev.cpl, want="value32")

    def do_wrpkru(self, ev: Event) -> Observation:
        return self._guest(ev.vcpu, gp.command("wrpkru", value=ev.value or 0), ev.cpl)

    def _guest(self, index: int, cmd: bytes, cpl: int | None = None, *, want: str = "",
               start_at_halt: bool = False) -> Observation:
        """Run one command: resume after the halt, collect the exits up to the next halt."""
        if cpl:
            return Observation(None, notes=["the recorder's guest runs at CPL 0 only"])
        cpu = self.vcpu(index)
        image = self.images["long" if self.long_mode.get(index) else "real"]
        self.vm.write(gp.CMD, cmd)
        regs = k.KvmRegs()
        regs.rip = image.entry if start_at_halt else image.entry + 1  # +1: past the `hlt` at `loop`
        regs.rsp = gp.STACK
        regs.rflags = 0x2
        k.must(cpu.set_regs(regs), "KVM_SET_REGS")
        obs = Observation()
        data: dict[int, int] = {}
        vector = error = fault_ip = None
        done = False
        page = cpu.run_page
        for _ in range(MAX_EXITS_PER_STEP):
            res = cpu.run()
            if not res.ok:
                if res.errno == errno.EINTR:
                    continue
                obs.notes.append(f"KVM_RUN failed with {res.errname}")
                return obs
            reason = page.exit_reason
            if reason == k.EXIT_HLT:
                break
            if reason == k.EXIT_IO:
                direction, _size, port, value = page.io()
                if direction != k.KVM_EXIT_IO_OUT:
                    obs.notes.append(f"unexpected IN from port {port:#x}")
                elif port == gp.PORT_DONE:
                    done = True
                elif port in (gp.PORT_DATA_LO, gp.PORT_DATA_HI):
                    data[port] = value
                elif port == gp.PORT_VECTOR:
                    vector = value
                elif port == gp.PORT_ERROR:
                    error = value
                elif port == gp.PORT_IP:
                    fault_ip = value
                continue
            if reason in (k.EXIT_X86_RDMSR, k.EXIT_X86_WRMSR):
                why, index_, wdata = page.msr()
                rw = "RDMSR" if reason == k.EXIT_X86_RDMSR else "WRMSR"
                if obs.result is None:
                    obs.result, obs.exit_reason = "user_exit", why
                obs.notes.append(f"KVM_EXIT_X86_{rw} index={index_:#x} reason={why}"
                                 + (f" data={wdata:#x}" if reason == k.EXIT_X86_WRMSR else "")
                                 + f"; {self.reply.describe()}")
                page.reply_msr(self.reply.error, self.reply.data if reason == k.EXIT_X86_RDMSR else None)
                continue
            if reason == k.EXIT_INTERNAL_ERROR:
                sub, words = page.internal()
                obs.result = "internal_error"
                obs.notes.append(f"KVM_EXIT_INTERNAL_ERROR suberror={sub} data={[hex(w) for w in words[:4]]}")
                return obs
            obs.notes.append(f"unexpected exit reason {reason}")
            return obs
        else:
            obs.notes.append(f"no halt after {MAX_EXITS_PER_STEP} exits")
            return obs
        if start_at_halt:
            return Observation("ok")
        after = "ok"
        if vector is not None:
            after = VECTOR_RESULT.get(vector, f"vector {vector}")
            where = f"#{after.upper()} vector {vector}" + (f" error code {error:#x}" if error is not None else "")
            obs.notes.append(where + (f" at {fault_ip:#x}" if fault_ip is not None else ""))
            if vector == 14 and after == "pf":
                s = cpu.get_sregs()
                obs.pfec, obs.cr2 = error, s.cr2
        elif not done:
            obs.notes.append("the guest halted without reporting")
            return obs
        if obs.result == "user_exit":
            obs.notes.append(f"after the exit the guest saw {after}")
            return obs
        if after in ("ok", "gp", "ud", "pf"):
            obs.result = after
        else:
            obs.notes.append(f"guest took {after}")
            return obs
        if after == "ok" and want:
            lo = data.get(gp.PORT_DATA_LO, 0)
            obs.value = lo if want == "value32" else lo | (data.get(gp.PORT_DATA_HI, 0) << 32)
        return obs
