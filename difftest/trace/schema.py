"""Trace format v1: the Parquet schema, its column documentation and its file metadata keys.

One table, one row per event in order (``seq``), the event's expected outcome in the same row
(``exp_*``).  Snapshot rows (``kind = "snapshot"``) sit between the events, after the event
whose state they check, so one file holds the whole trace and streams in one pass.  Every
column is typed; nothing is a JSON blob.  ``docs/trace-format.md`` and ``difftest schema`` are
rendered from the tables below, so the documentation cannot drift from the code.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from reference_model.events import ACCESS_KINDS, KINDS, LEVELS, PAGE_SIZES, RESULTS
from reference_model.host import HOST_FEATURES

SCHEMA_VERSION = "1"
SNAPSHOT_KIND = "snapshot"
PRODUCERS = ("synthetic", "recorded-kvm", "recorded-qemu", "imported-ftrace", "imported-pkvm")
META_PREFIX = "pksdt."

_DICT = pa.dictionary(pa.int32(), pa.string())


@dataclass(frozen=True)
class Column:
    """One column: its Arrow type, whether every row needs it, its value domain and meaning."""

    name: str
    type: pa.DataType
    doc: str
    required: bool = False
    choices: tuple[str, ...] | None = None
    max_value: int | None = None

    @property
    def kind(self) -> str:
        """The logical kind used by validation: int, bool, str, list_int."""
        t = self.type
        if pa.types.is_dictionary(t) or pa.types.is_string(t):
            return "str"
        if pa.types.is_boolean(t):
            return "bool"
        if pa.types.is_list(t):
            return "list_int"
        return "int"


def _max(t: pa.DataType) -> int:
    return (1 << t.bit_width) - 1 if pa.types.is_unsigned_integer(t) else (1 << (t.bit_width - 1)) - 1


COLUMNS: tuple[Column, ...] = (
    # --- identity -----------------------------------------------------------------------
    Column("seq", pa.uint64(), "position in the trace; strictly increasing", required=True),
    Column("kind", _DICT, "event kind (see the kinds table) or `snapshot`", required=True,
           choices=(*tuple(KINDS), SNAPSHOT_KIND)),
    Column("vcpu", pa.uint16(), "vCPU index the event concerns", required=True),
    Column("level", _DICT, "where it happens: `host` (userspace/L0), `l1` guest, `l2` guest", required=True,
           choices=LEVELS),
    # --- event inputs -------------------------------------------------------------------
    Column("msr", pa.uint32(), "MSR index (wrmsr, rdmsr)"),
    Column("value", pa.uint64(), "value written: MSR, CR, PKRU, VMCS field, host PKRS, exit-reason mask"),
    Column("msrs", pa.list_(pa.uint32()), "MSR indices of a KVM_SET/GET_MSRS or filter range"),
    Column("values", pa.list_(pa.uint64()), "values of a KVM_SET_MSRS, one per `msrs` entry"),
    Column("cpl", pa.uint8(), "CPL of a guest instruction or access (default 0)", max_value=3),
    Column("addr", pa.uint64(), "linear address (map, access, emu_access, invlpg)"),
    Column("access", _DICT, "access kind", choices=ACCESS_KINDS),
    Column("page_size", _DICT, "leaf size of a mapping", choices=PAGE_SIZES),
    Column("present", pa.bool_(), "map: P bit of the leaf"),
    Column("writable", pa.bool_(), "map: R/W=1 in every entry (default true)"),
    Column("user", pa.bool_(), "map: U/S of the leaf (default false)"),
    Column("user_upper", pa.bool_(), "map: U/S=1 in every non-leaf entry (default true)"),
    Column("rsvd", pa.bool_(), "map: a reserved bit is set (default false)"),
    Column("nx", pa.bool_(), "map: XD set (default false)"),
    Column("key", pa.uint8(), "map: protection key, bits 62:59 of the leaf", max_value=15),
    Column("field", pa.uint32(), "VMCS field encoding (vmwrite, vmread)"),
    Column("reason", pa.uint32(), "VM-exit basic reason (vm_exit, nested_exit)"),
    Column("cpuid_7_ecx", pa.uint32(), "set_cpuid: CPUID.(7,0).ECX (PKU bit 3, PKS bit 31)"),
    Column("cpuid_1_ecx", pa.uint32(), "set_cpuid: CPUID.1.ECX (VMX bit 5)"),
    Column("cpuid_leaf", pa.uint32(), "cpuid: EAX input"),
    Column("cpuid_subleaf", pa.uint32(), "cpuid: ECX input"),
    Column("cr0", pa.uint64(), "set_sregs: CR0"),
    Column("cr3", pa.uint64(), "set_sregs: CR3"),
    Column("cr4", pa.uint64(), "set_sregs: CR4"),
    Column("efer", pa.uint64(), "set_sregs: EFER"),
    Column("reg", _DICT, "get_sregs: which register the value is", choices=("cr0", "cr3", "cr4", "efer")),
    Column("filter_default", _DICT, "set_msr_filter: default action", choices=("allow", "deny")),
    Column("filter_allow", pa.uint8(), "set_msr_filter: for `msrs`, bit 0 allows reads, bit 1 writes",
           max_value=3),
    Column("src_vcpu", pa.uint16(), "set_nested_state: vCPU whose get_nested_state blob is restored"),
    Column("run_pending", pa.bool_(), "set_nested_state: nested_run_pending flag"),
    Column("path", _DICT, "snapshot: state path, e.g. `vcpu0.pkrs`, `vcpu0.vmcs12.host_ia32_pkrs`"),
    # --- expectations -------------------------------------------------------------------
    Column("exp_result", _DICT, "expected result; null = not compared", choices=RESULTS),
    Column("exp_pfec", pa.uint32(), "expected page-fault error code"),
    Column("exp_cr2", pa.uint64(), "expected CR2 of a #PF"),
    Column("exp_value", pa.uint64(), "expected value read (rdmsr, cpuid, vmread, get_*), or snapshot value"),
    Column("exp_values", pa.list_(pa.uint64()), "expected values of a KVM_GET_MSRS"),
    Column("exp_count", pa.int32(), "expected number of MSRs processed by KVM_SET/GET_MSRS"),
    Column("exp_exit_reason", pa.uint32(), "user_exit: KVM_MSR_EXIT_REASON_*; entry_fail: the exit reason"),
    Column("exp_vm_error", pa.uint32(), "vmfail: VM-instruction error number"),
    Column("exp_exit_qual", pa.uint64(), "entry_fail: exit qualification"),
    Column("exp_rule", _DICT, "the rule id the expectation comes from (the author's citation)"),
    Column("note", pa.string(), "free text shown beside the event in reports (plain string: notes are mostly unique)"),
)

COLUMN_BY_NAME = {c.name: c for c in COLUMNS}
REQUIRED = tuple(c.name for c in COLUMNS if c.required)
EXPECT_COLUMNS = tuple(c.name for c in COLUMNS if c.name.startswith("exp_") and c.name != "exp_rule")

ARROW_SCHEMA = pa.schema([pa.field(c.name, c.type, nullable=not c.required) for c in COLUMNS])

# File-level metadata (Parquet key/value metadata, every key prefixed with ``pksdt.``).
META_KEYS: dict[str, str] = {
    "schema_version": "trace format version; this is `1` (required)",
    "producer": "one of: " + ", ".join(PRODUCERS) + " (required)",
    "name": "short scenario name, e.g. `B5-host-pkrs-nested-exit`",
    "description": "what the trace checks, one paragraph",
    "policy": "policies the trace is meant for, comma-separated (reports add them)",
    "notes": "free notes: why an expectation is what it is, where a policy is known to fail",
    "source": "where the expectations come from (rule ids, message ids, recording)",
    "profile": "the comparison profile replay uses for this trace by default (e.g. `pvm`, `qemu`)",
    "setup_rows": "number of leading rows that are the setup prologue (shrinking keeps them)",
    "host.kernel": "recorded traces: kernel release (`uname -r`)",
    "host.backend": "recorded traces: kvm_intel / kvm_amd / kvm_pvm / qemu-tcg",
    "host.module_params": "recorded traces: relevant module parameters, `name=value` comma-separated",
    "host.cpu": "recorded traces: CPU model string",
    "host.supported_cpuid_7_0": "recorded-kvm: KVM_GET_SUPPORTED_CPUID leaf 7.0 as `eax,ebx,ecx,edx` in hex",
    "cpu.features": "host CPU features the trace assumes or the host had, comma-separated, from: "
    + ", ".join(HOST_FEATURES) + " (absent: all of them, a PKS-capable Intel host)",
}


def scalar_max(col: Column) -> int | None:
    """The largest value a column may hold (its own bound or its integer type's)."""
    if col.max_value is not None:
        return col.max_value
    t = col.type.value_type if pa.types.is_list(col.type) else col.type
    return _max(t) if pa.types.is_integer(t) else None


def render_markdown() -> str:
    """The schema as Markdown tables (the body of docs/trace-format.md and `difftest schema`)."""
    lines = ["## Columns", "", "| column | type | required | meaning |", "|---|---|---|---|"]
    for c in COLUMNS:
        t = "dictionary<string>" if pa.types.is_dictionary(c.type) else str(c.type)
        extra = f" Values: {', '.join(f'`{v}`' for v in c.choices)}." if c.choices and c.name != "kind" else ""
        if c.max_value is not None:
            extra += f" At most {c.max_value}."
        lines.append(f"| `{c.name}` | {t} | {'yes' if c.required else ''} | {c.doc}.{extra} |")
    lines += ["", "## Event kinds", "", "| kind | reads (`!` = required) | meaning |", "|---|---|---|"]
    for kind, (reads, doc) in KINDS.items():
        lines.append(f"| `{kind}` | {', '.join(f'`{r}`' for r in reads) or '-'} | {doc} |")
    lines.append(f"| `{SNAPSHOT_KIND}` | `path!`, `exp_value!` | state check after the previous event |")
    lines += ["", "## Results (`exp_result`)", "", ", ".join(f"`{r}`" for r in RESULTS), ""]
    lines += ["## File metadata (key/value, prefix `pksdt.`)", "", "| key | meaning |", "|---|---|"]
    lines += [f"| `{META_PREFIX}{k}` | {v} |" for k, v in META_KEYS.items()]
    return "\n".join(lines) + "\n"
