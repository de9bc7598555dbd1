"""The event vocabulary (SPEC §5) as plain Python objects.

An :class:`Event` is one thing that happens to a vCPU: a host ioctl, a lifecycle step, a guest
instruction, a page access, a VM exit, a nested transition.  It carries only inputs; what the
trace expected is kept by ``difftest`` beside it, and what the model decided comes back as an
:class:`Outcome`.  Every field but ``kind`` is optional because each kind reads a different
subset (``KINDS`` says which).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

# Levels an event happens at.  "l1" is the outermost guest (or the bare CPU under policy hw).
LEVELS = ("host", "l1", "l2")

# Access kinds of page accesses.  "implicit" is an implicit supervisor-mode read (GDT/LDT/IDT/TSS,
# event delivery); "implicit_write" an implicit supervisor-mode write (e.g. an exception frame).
ACCESS_KINDS = ("read", "write", "rmw", "fetch", "implicit", "implicit_write")
PAGE_SIZES = ("4k", "2m", "1g")
PAGE_BYTES = {"4k": 1 << 12, "2m": 1 << 21, "1g": 1 << 30}

# Outcome results.  Every expected outcome a trace may state is one of these.
RESULTS = (
    "ok",  # the instruction or ioctl completed
    "gp",  # #GP(0)
    "ud",  # #UD
    "pf",  # #PF with pfec and cr2
    "user_exit",  # KVM_EXIT_X86_RDMSR/WRMSR to userspace, exit_reason = KVM_MSR_EXIT_REASON_*
    "einval",  # ioctl failed with EINVAL
    "eperm",  # ioctl (pKVM PV call) refused with EPERM
    "vmfail",  # VMfailValid with vm_error = VM-instruction error number
    "entry_fail",  # VM-entry failure: exit_reason (bit 31 set), exit_qual
    "vmexit",  # an L2 instruction caused a VM exit to L1: exit_reason = basic exit reason
    "internal_error",  # KVM_EXIT_INTERNAL_ERROR (emulation failure)
    "unsupported",  # the policy cannot execute this event (rule X86.NA)
)

@dataclass(frozen=True, slots=True)
class EventKind:
    """Everything the rest of the project needs to know about one event kind, declared once.

    The builder, validation, both engines, the recorders, the generator and the shrinker read these
    properties instead of keeping their own sets of kind names.
    """

    name: str
    fields: tuple[str, ...]  # the Event fields it reads; required ones end in "!"
    summary: str
    level: str = "l1"  # the level it is recorded at unless the trace says otherwise
    host_handled: bool = False  # KVM handles it host-side, whatever guest level is active
    creates_vcpu: bool = False  # it brings a vCPU into existence (KVM_CREATE_VCPU)
    reads_tlb: bool = False  # its effect depends on the TLB's contents (Cpu.map, Cpu.set_cr4)
    changes_pkrs: bool = True  # it may change PKRS or PKRU under some policy
    nested: bool = False  # it only means something with nested VMX (an L1 hypervisor, L2 state)
    overwrites: bool = False  # a later event of the same kind and target replaces its effect
    reads_value: bool = False  # its outcome carries a value read back
    modelled: bool = True  # the model gives it an outcome (False: kept from a capture for context only)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(f[:-1] for f in self.fields if f.endswith("!"))

    @property
    def optional(self) -> tuple[str, ...]:
        return tuple(f for f in self.fields if not f.endswith("!"))


def _kinds(*kinds: EventKind) -> dict[str, EventKind]:
    return {k.name: k for k in kinds}


# Shared property sets: host ioctls, events that only read, and host ioctls that read a value back.
_HOST: dict[str, Any] = {"level": "host", "host_handled": True}
_READ: dict[str, Any] = {"changes_pkrs": False}
_READ_HOST: dict[str, Any] = {**_HOST, **_READ, "reads_value": True}

EVENT_KINDS: dict[str, EventKind] = _kinds(
    # host ioctls
    EventKind("create_vcpu", (), "KVM_CREATE_VCPU", **_HOST, creates_vcpu=True),
    EventKind("set_cpuid", ("cpuid_7_ecx!", "cpuid_1_ecx"), "KVM_SET_CPUID2 (bare CPU: its enumeration)",
              **_HOST, overwrites=True),
    EventKind("get_cpuid", (), "KVM_GET_CPUID2; value = leaf 7.0 ECX as KVM keeps it", **_READ_HOST),
    EventKind("get_msr_index_list", (), "KVM_GET_MSR_INDEX_LIST; value = 1 if 0x6E1 is listed", **_READ_HOST),
    EventKind("set_msrs", ("msrs!", "values!"), "KVM_SET_MSRS; count = MSRs processed", **_HOST, overwrites=True),
    EventKind("get_msrs", ("msrs!",), "KVM_GET_MSRS; count = MSRs processed, values = what was read", **_READ_HOST),
    EventKind("set_sregs", ("cr0", "cr3", "cr4", "efer"), "KVM_SET_SREGS (unset fields keep their value)",
              **_HOST, overwrites=True),
    EventKind("get_sregs", ("reg",), "KVM_GET_SREGS; value = the named register (cr0/cr3/cr4/efer)", **_READ_HOST),
    EventKind("set_msr_filter", ("filter_default!", "msrs", "filter_allow"), "KVM_X86_SET_MSR_FILTER",
              **_HOST, overwrites=True),
    EventKind("enable_user_msr", ("value!",),
              "KVM_CAP_X86_USER_SPACE_MSR; value = reason mask (1 INVAL, 2 UNKNOWN, 4 FILTER)", **_HOST, overwrites=True),
    EventKind("get_nested_state", (), "KVM_GET_NESTED_STATE (kept by the model for a later set)",
              **_HOST, changes_pkrs=False, nested=True),
    EventKind("set_nested_state", ("src_vcpu!", "run_pending"), "KVM_SET_NESTED_STATE from a blob got on src_vcpu",
              **_HOST, nested=True),
    EventKind("run", (), "KVM_RUN: enter the guest", **_HOST),
    # vCPU lifecycle
    EventKind("reset", (), "RESET (power-up)", host_handled=True),
    EventKind("init", (), "INIT", host_handled=True),
    EventKind("smi", (), "SMI", nested=True),
    EventKind("rsm", (), "RSM (leave SMM)", nested=True),
    # guest instructions
    EventKind("wrmsr", ("msr!", "value!", "cpl"), "WRMSR", overwrites=True),
    EventKind("rdmsr", ("msr!", "cpl"), "RDMSR; value = what was read", **_READ, reads_value=True),
    EventKind("mov_cr0", ("value!", "cpl"), "MOV to CR0 (value = the full new CR0)", overwrites=True),
    EventKind("mov_cr3", ("value!", "cpl"), "MOV to CR3 (flushes non-global TLB entries)", **_READ, overwrites=True),
    EventKind("mov_cr4", ("value!", "cpl"), "MOV to CR4 (value = the full new CR4)", reads_tlb=True, overwrites=True),
    EventKind("wrpkru", ("value!",), "WRPKRU", overwrites=True),
    EventKind("rdpkru", (), "RDPKRU; value = PKRU", **_READ, reads_value=True),
    EventKind("invlpg", ("addr!",), "INVLPG", **_READ),
    EventKind("write_pdpte", ("rsvd!",),
              "the guest rewrites its in-memory PAE PDPTEs without reloading CR3 (rsvd = a reserved bit set)",
              overwrites=True),
    EventKind("cpuid", ("cpuid_leaf!", "cpuid_subleaf"), "CPUID instruction; value = ECX of the leaf",
              **_READ, reads_value=True),
    # memory
    EventKind("map", ("addr!", "page_size!", "present!", "writable", "user", "user_upper", "rsvd", "nx", "key"),
              "the guest writes a leaf paging entry (and the entries above it)", **_READ, reads_tlb=True, overwrites=True),
    EventKind("access", ("addr!", "access!", "cpl"), "a hardware-checked data access or fetch", **_READ),
    EventKind("emu_access", ("addr!", "access!", "cpl"), "an access through KVM's own page walk (emulation)", **_READ),
    # VMX at L0
    EventKind("vm_exit", ("reason",), "a hardware VM exit handled in the kernel, then re-entry", level="host"),
    EventKind("host_pkrs", ("value!",), "the host kernel's own PKRS changes (per-CPU pkrs_cache)", **_HOST, overwrites=True),
    # nested VMX (L1 instructions and transitions)
    EventKind("vmwrite", ("field!", "value!"), "L1 VMWRITE to vmcs12", nested=True, overwrites=True),
    EventKind("vmread", ("field!",), "L1 VMREAD from vmcs12; value = what was read", **_READ, nested=True, reads_value=True),
    EventKind("set_msr_bitmap", ("msr!", "value!"),
              "L1 writes its MSR bitmap for L2: value bit 0 intercepts reads, bit 1 writes", nested=True, overwrites=True),
    EventKind("vmlaunch", (), "L1 VMLAUNCH", nested=True),
    EventKind("vmresume", (), "L1 VMRESUME", nested=True),
    EventKind("nested_exit", ("reason",), "an L2 -> L1 VM exit (reflected to L1)", nested=True),
    # pKVM
    EventKind("pvm_start", (), "pKVM: the protected VM's vCPU runs for the first time", **_HOST),
    # imported captures
    EventKind("foreign", (), "an imported event the model does not replay (kept for context; never compared)", **_READ,
              modelled=False),
)

# kind -> (the Event fields it reads (required ones first, marked with a trailing "!"), summary)
KINDS: dict[str, tuple[tuple[str, ...], str]] = {k.name: (k.fields, k.summary) for k in EVENT_KINDS.values()}


def kinds_where(prop: str) -> frozenset[str]:
    """The names of the event kinds whose property ``prop`` is true (e.g. ``kinds_where("nested")``)."""
    return frozenset(k.name for k in EVENT_KINDS.values() if getattr(k, prop))


OPTIONAL_EVENT_FIELDS = (
    "msr", "value", "msrs", "values", "cpl", "addr", "access", "page_size", "present", "writable",
    "user", "user_upper", "rsvd", "nx", "key", "field", "reason", "cpuid_7_ecx", "cpuid_1_ecx",
    "cpuid_leaf", "cpuid_subleaf", "cr0", "cr3", "cr4", "efer", "reg", "filter_default",
    "filter_allow", "src_vcpu", "run_pending",
)


@dataclass(slots=True)
class Event:
    """One event of a trace: inputs only."""

    kind: str
    vcpu: int = 0
    level: str = "l1"
    seq: int = 0
    msr: int | None = None
    value: int | None = None
    msrs: tuple[int, ...] | None = None
    values: tuple[int, ...] | None = None
    cpl: int | None = None
    addr: int | None = None
    access: str | None = None
    page_size: str | None = None
    present: bool | None = None
    writable: bool | None = None
    user: bool | None = None
    user_upper: bool | None = None
    rsvd: bool | None = None
    nx: bool | None = None
    key: int | None = None
    field: int | None = None
    reason: int | None = None
    cpuid_7_ecx: int | None = None
    cpuid_1_ecx: int | None = None
    cpuid_leaf: int | None = None
    cpuid_subleaf: int | None = None
    cr0: int | None = None
    cr3: int | None = None
    cr4: int | None = None
    efer: int | None = None
    reg: str | None = None
    filter_default: str | None = None
    filter_allow: int | None = None
    src_vcpu: int | None = None
    run_pending: bool | None = None

    def inputs(self) -> dict[str, object]:
        """The fields this event sets, for printing (kind-specific, no Nones)."""
        out: dict[str, object] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None and f.name not in ("kind", "seq"):
                out[f.name] = v
        return out


# Outcome fields that can be compared with a trace's expectation, in display order.
OUTCOME_FIELDS = ("result", "pfec", "cr2", "value", "values", "count", "exit_reason", "vm_error", "exit_qual")


@dataclass(slots=True)
class Outcome:
    """What the model says happened, and the rule ids that decided it."""

    result: str = "ok"
    pfec: int | None = None
    cr2: int | None = None
    value: int | None = None
    values: tuple[int, ...] | None = None
    count: int | None = None
    exit_reason: int | None = None
    vm_error: int | None = None
    exit_qual: int | None = None
    rules: tuple[str, ...] = ()
    # Fields whose value the architecture leaves undefined here (e.g. ARCH.TLB without a flush).
    undefined: tuple[str, ...] = field(default=())

    def brief(self) -> str:
        """Short human form: ``#PF pfec=0x23 cr2=0x40000000``, ``ok value=0x4``."""
        head = {"gp": "#GP(0)", "ud": "#UD", "pf": "#PF"}.get(self.result, self.result)
        parts = [head]
        for name in OUTCOME_FIELDS[1:]:
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, tuple):
                parts.append(f"{name}=[{', '.join(hex(x) for x in v)}]")
            elif name == "count":
                parts.append(f"count={v}")
            else:
                parts.append(f"{name}={v:#x}")
        return " ".join(parts)


def ok(*rules: str, **kw: object) -> Outcome:
    """An ``ok`` outcome citing ``rules``."""
    return Outcome("ok", rules=rules, **kw)  # type: ignore[arg-type]


def gp(*rules: str) -> Outcome:
    """A #GP(0) outcome citing ``rules``."""
    return Outcome("gp", rules=rules)


def unsupported(kind: str) -> Outcome:
    """The policy has no meaning for ``kind`` (X86.NA)."""
    return Outcome("unsupported", rules=("X86.NA",))
