"""Hostile inputs for every reader, and the one check they must all pass.

Shared by ``tests/test_robust_fuzz.py`` (bounded, in CI) and ``bench/fuzz_readers.py`` (the long
run).  Each reader gets a Hypothesis strategy producing the *bytes of a file* (Parquet trace,
TOML variant, tracefs text, pKVM vmexit_trace text) built from real inputs by structural
mutations (wrong schemas and types, huge and negative values, NaN, out-of-order sequence
numbers, unknown kinds, non-UTF-8 text, enormous lines) and then, sometimes, byte-level damage
(truncation, flipped bytes, random bytes).  The house rule under test (README, issue 9): bad input
ends in :class:`~difftest.errors.InputError`, whose text is one line starting with the file's
path; any other exception is a crash.  An input the reader accepts must then go through the
rest of the pipeline (replay, building the policy, writing the import) without raising.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import strategies as st

from difftest.errors import InputError
from difftest.trace.schema import COLUMN_BY_NAME, META_PREFIX

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
BASE_TRACES = [REPO / "traces" / p for p in (
    "arch/V1-ad-wp1-sup-write.parquet", "bugs/B14-nested-restore-stale-l1-pkrs.parquet",
    "bugs/B12-reset-clears.parquet", "real/kvm-pvm-pks-baseline.parquet")]
GOOD_TRACE = BASE_TRACES[0]


# --------------------------------------------------------------------------- byte-level damage
@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` truncated, with bytes flipped or inserted, replaced by random bytes, or intact."""
    how = draw(st.sampled_from(["intact", "intact", "truncate", "flip", "insert", "random", "empty", "splice"]))
    if how == "intact" or not data:
        return data
    if how == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "flip":
        buf = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(buf) - 1))
            buf[i] = draw(st.integers(0, 255))
        return bytes(buf)
    if how == "insert":
        i = draw(st.integers(0, len(data)))
        return data[:i] + draw(st.binary(min_size=1, max_size=64)) + data[i:]
    if how == "random":
        return draw(st.binary(max_size=512))
    if how == "splice":  # the head of one file glued to the tail of itself, lengths inconsistent
        i = draw(st.integers(0, len(data) - 1))
        j = draw(st.integers(0, len(data) - 1))
        return data[:i] + data[j:]
    return b""


NON_UTF8 = st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80", b"\xfe\xfe", b"\xf4\x90\x80\x80"])
HUGE_INT = st.one_of(st.integers(-(2**70), 2**70), st.sampled_from([0, -1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64]))


# --------------------------------------------------------------------------- Parquet traces
_BASE_TABLES: list[pa.Table] = []


def base_tables() -> list[pa.Table]:
    if not _BASE_TABLES:
        _BASE_TABLES.extend(pq.read_table(p) for p in BASE_TRACES)
    return _BASE_TABLES


def _plain(arr: pa.ChunkedArray) -> list[Any]:
    return arr.to_pylist()


def _col(table: pa.Table, name: str) -> pa.ChunkedArray:
    return table.column(table.schema.names.index(name))  # the first of duplicated names too


def _replace(table: pa.Table, name: str, arr: pa.Array) -> pa.Table:
    i = table.schema.names.index(name)
    return table.set_column(i, pa.field(name, arr.type), arr)


def _bad_strings(draw: st.DrawFn, n: int, choices: tuple[str, ...] | None) -> pa.Array:
    """A string column with unknown values, huge values and (sometimes) invalid UTF-8."""
    pool = st.one_of(st.sampled_from(list(choices or ("x",))), st.text(max_size=20), st.none(),
                     st.just("A" * 100_000), st.just(""), st.just("vcpu0.pkrs"), st.just("vcpu99999999999999999999.cr4"))
    vals = [draw(pool) for _ in range(n)]
    if draw(st.booleans()):
        raw = [None if v is None else v.encode() for v in vals]
        if n:
            i = draw(st.integers(0, n - 1))
            raw[i] = (raw[i] or b"a") + draw(NON_UTF8)
        arr = pa.array(raw, pa.binary()).view(pa.string())
    else:
        arr = pa.array(vals, pa.string())
    return arr.dictionary_encode() if draw(st.booleans()) else arr


@st.composite
def mutated_table(draw: st.DrawFn) -> pa.Table:
    t: pa.Table = draw(st.sampled_from(base_tables()))
    for _ in range(draw(st.integers(1, 3))):
        n = t.num_rows
        names = t.schema.names
        op = draw(st.sampled_from(["drop", "unknown", "dup", "retype", "ints", "seq", "strings", "nulls",
                                   "lists", "meta", "rows", "rows", "big_list"]))
        if op == "drop" and names:
            t = t.remove_column(draw(st.integers(0, len(names) - 1)))
        elif op == "unknown":
            t = t.append_column(draw(st.text(min_size=1, max_size=10)), pa.array(range(n), pa.int64()))
        elif op == "dup" and names:
            i = draw(st.integers(0, len(names) - 1))
            t = t.append_column(t.schema.field(i), t.column(i))
        elif op == "retype" and names:
            name = draw(st.sampled_from(names))
            vals = _plain(_col(t, name))
            how = draw(st.sampled_from(["float", "int64", "string", "binary", "null", "list_str", "bool", "struct"]))
            if how == "float":
                fl = [float(v) if isinstance(v, (int, bool)) else None for v in vals]
                fl = [draw(st.sampled_from([math.nan, math.inf, -math.inf, -1.5, 1e300])) if draw(st.booleans()) else v
                      for v in fl]
                arr = pa.array(fl, pa.float64())
            elif how == "int64":
                arr = pa.array([draw(st.integers(-(2**63), 2**63 - 1)) for _ in vals], pa.int64())
            elif how == "string":
                arr = pa.array([None if v is None else str(v) for v in vals], pa.string())
            elif how == "binary":
                arr = pa.array([None if v is None else str(v).encode() for v in vals], pa.binary())
            elif how == "null":
                arr = pa.nulls(n)
            elif how == "list_str":
                arr = pa.array([["a"] for _ in vals], pa.list_(pa.string()))
            elif how == "bool":
                arr = pa.array([bool(draw(st.booleans())) for _ in vals], pa.bool_())
            else:
                arr = pa.array([{"a": 1} for _ in vals])
            t = _replace(t, name, arr)
        elif op == "ints":
            ints = [c for c in names if COLUMN_BY_NAME.get(c) and COLUMN_BY_NAME[c].kind == "int"]
            if ints:
                name = draw(st.sampled_from(ints))
                signed = draw(st.booleans())
                lo, hi = (-(2**63), 2**63 - 1) if signed else (0, 2**64 - 1)
                vals = [draw(st.one_of(st.integers(lo, hi), st.none(), st.sampled_from([lo, hi, 0, 1])))
                        for _ in range(n)]
                t = _replace(t, name, pa.array(vals, pa.int64() if signed else pa.uint64()))
        elif op == "seq" and "seq" in names and n:
            seq = _plain(_col(t, "seq"))
            how = draw(st.sampled_from(["dup", "swap", "reverse", "zero", "random"]))
            if how == "dup" and n > 1:
                i = draw(st.integers(1, n - 1))
                seq[i] = seq[i - 1]
            elif how == "swap" and n > 1:
                i = draw(st.integers(1, n - 1))
                seq[i - 1], seq[i] = seq[i], seq[i - 1]
            elif how == "reverse":
                seq = seq[::-1]
            elif how == "zero":
                seq = [0] * n
            else:
                seq = [draw(st.integers(0, 2**64 - 1)) for _ in range(n)]
            t = _replace(t, "seq", pa.array(seq, pa.uint64()))
        elif op == "strings":
            strs = [c for c in names if COLUMN_BY_NAME.get(c) and COLUMN_BY_NAME[c].kind == "str"]
            if strs:
                name = draw(st.sampled_from(strs))
                t = _replace(t, name, _bad_strings(draw, n, COLUMN_BY_NAME[name].choices))
        elif op == "nulls" and names and n:
            name = draw(st.sampled_from(names))
            mask = pa.array([draw(st.booleans()) for _ in range(n)])
            col = _col(t, name).combine_chunks()
            with contextlib.suppress(pa.ArrowException):
                t = _replace(t, name, pa.compute.if_else(mask, pa.nulls(n, col.type), col))
        elif op == "lists":
            name = draw(st.sampled_from(["msrs", "values", "exp_values"]))
            elem = st.one_of(st.integers(0, 2**64 - 1), st.none()) if draw(st.booleans()) else st.integers(0, 2**32 - 1)
            vals = [draw(st.one_of(st.none(), st.lists(elem, max_size=8))) for _ in range(n)]
            typ = pa.list_(pa.uint64()) if draw(st.booleans()) else pa.large_list(pa.int64())
            try:
                arr = pa.array(vals, typ)
            except (pa.ArrowException, OverflowError):
                arr = pa.array([[1, 2, 3]] * n, pa.list_(pa.uint32()))
            if name in names:
                t = _replace(t, name, arr)
            else:
                t = t.append_column(name, arr)
        elif op == "big_list" and n:  # one row with many list elements (bounded here; the bench goes larger)
            name = draw(st.sampled_from(["msrs", "values", "exp_values"]))
            i = draw(st.integers(0, n - 1))
            length = draw(st.sampled_from([5_000, 70_000]))
            vals = [[0x6E1] * length if j == i else [0x6E1] for j in range(n)]
            arr = pa.array(vals, pa.list_(pa.uint32() if name == "msrs" else pa.uint64()))
            t = _replace(t, name, arr) if name in names else t.append_column(name, arr)
        elif op == "meta":
            md = dict(t.schema.metadata or {})
            key = draw(st.sampled_from([b"schema_version", b"producer", b"cpu.features", b"policy", b"profile",
                                        b"setup_rows", b"name", b"notes"]))
            how = draw(st.sampled_from(["drop", "junk", "bytes", "bad_key", "empty_all"]))
            if how == "drop":
                md.pop(META_PREFIX.encode() + key, None)
            elif how == "junk":
                md[META_PREFIX.encode() + key] = draw(st.one_of(
                    st.text(max_size=30), st.sampled_from(["2", "", "-1", "1e99", "pku,pks,bogus", "pku", "hw,nope"]),
                    st.just("x" * 200_000))).encode()
            elif how == "bytes":
                md[META_PREFIX.encode() + key] = draw(st.binary(max_size=10)) + draw(NON_UTF8)
            elif how == "bad_key":
                md[draw(st.binary(max_size=5)) + draw(NON_UTF8)] = b"1"
            else:
                md = {}
            t = t.replace_schema_metadata(md)
        elif op == "rows":
            how = draw(st.sampled_from(["empty", "head", "double", "shuffle", "one"]))
            if how == "empty":
                t = t.slice(0, 0)
            elif how == "head" and n:
                t = t.slice(0, draw(st.integers(0, n)))
            elif how == "double":
                t = pa.concat_tables([t, t])
            elif how == "shuffle" and n:
                perm = list(range(n))
                random.Random(draw(st.integers(0, 2**32))).shuffle(perm)
                t = t.take(pa.array(perm))
            elif how == "one" and n:
                t = t.slice(draw(st.integers(0, n - 1)), 1)
    return t


@st.composite
def parquet_bytes(draw: st.DrawFn) -> bytes:
    t = draw(mutated_table())
    buf = io.BytesIO()
    try:
        pq.write_table(t, buf, row_group_size=draw(st.integers(1, max(1, t.num_rows))),
                       compression=draw(st.sampled_from(["zstd", "snappy", "none"])),
                       use_dictionary=draw(st.booleans()))
    except (pa.ArrowException, ValueError, TypeError):  # a table Parquet itself cannot hold
        return draw(st.binary(max_size=256))
    return draw(damaged(buf.getvalue()))


# --------------------------------------------------------------------------- TOML variants
_KNOBS = ["init_clears_pkrs", "reset_clears_pkrs", "mmu_role", "pkrs_copy", "cpuid7_ecx_keep", "pkvm", "nested_caps",
          "vmcs12_layout", "unknown_knob"]
_TOML_VALUES = st.one_of(
    st.sampled_from(['true', 'false', '"kvm-v7"', '"hw"', '"merged"', '"lazy"', '"bogus"', '"pvm"', 'nan', 'inf', '-inf',
                     '1979-05-27T07:32:00Z', '[]', '[1, "a"]', '{}', '{ a = 1 }', '0', '-1', '0xFFFFFFFF', '0x1_0000_0000',
                     '99999999999999999999999999', '-9223372036854775809', '1.5', '"\\u0000"', "'''multi\nline'''"]),
    st.integers(-(2**70), 2**70).map(str),
    st.text(max_size=20).map(json.dumps),
)


@st.composite
def toml_bytes(draw: st.DrawFn) -> bytes:
    lines: list[str] = []
    if draw(st.integers(0, 3)):  # mostly a plausible skeleton, so the knob checks are reached
        base = draw(st.sampled_from(["kvm-v7", "upstream", "pkvm-npvm", "hw", "nope"]))
        lines.append(f'base = "{base}"')
    for key in draw(st.lists(st.sampled_from(["base", "name", "description", "source", "knobs", "extra"]),
                             max_size=3, unique=True)):
        value = draw(st.one_of(_TOML_VALUES, st.sampled_from(['"kvm-v7"', '"upstream"', '"pkvm-npvm"', '"nope"'])))
        lines.append(f"{key} = {value}")
    if draw(st.integers(0, 3)):
        lines.append(draw(st.sampled_from(["[knobs]", "[knobs.sub]", "[[knobs]]", "[other]"])))
        for knob in draw(st.lists(st.sampled_from(_KNOBS), max_size=4, unique=True)):
            lines.append(f"{knob} = {draw(_TOML_VALUES)}")
    extra = draw(st.sampled_from(["", "", "nested", "long", "junk", "nonutf8", "hugevalue"]))
    text = "\n".join(lines)
    if extra == "nested":  # nesting deep enough to exhaust a recursive parser
        depth = draw(st.sampled_from([50, 5_000, 100_000]))
        text += "\nx = " + "[" * depth + "]" * depth
    elif extra == "long":
        text += "\n# " + "x" * 1_000_000
    elif extra == "junk":
        text += "\n" + draw(st.text(max_size=40))
    elif extra == "hugevalue":
        text += '\ndescription = "' + "d" * 500_000 + '"'
    data = text.encode("utf-8", "surrogatepass")
    if extra == "nonutf8":
        i = draw(st.integers(0, len(data)))
        data = data[:i] + draw(NON_UTF8) + data[i:]
    return draw(damaged(data))


# --------------------------------------------------------------------------- tracefs text
_HEX = st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 2**300)).map(lambda v: f"{v:x}")
_DEC = st.one_of(st.integers(0, 10**6), st.integers(0, 10**30), st.just(-1)).map(lambda v: '9' * 5000 if v < 0 else str(v))
_VMX = st.sampled_from(["CPUID", "MSR_WRITE", "MSR_READ", "HLT", "EPT_VIOLATION", "NOT_A_REASON", "npf", "msr", "0x7f",
                        "0xfffffffffffffffffffff", "io"])
_VEC = st.sampled_from(["GP", "UD", "PF", "DF", "ZZ"])


@st.composite
def _ftrace_msg(draw: st.DrawFn) -> tuple[str, str]:
    ev = draw(st.sampled_from(["kvm_msr", "kvm_cr", "kvm_exit", "kvm_entry", "kvm_inj_exception", "kvm_userspace_exit",
                               "kvm_nested_vmenter", "kvm_nested_vmexit", "kvm_nested_vmexit_inject", "kvm_emulate_insn",
                               "kvm_cpuid", "kvm_pio", "tracing_mark_write", "sched_switch"]))
    h, d = (lambda: draw(_HEX)), (lambda: draw(_DEC))
    rw = draw(st.sampled_from(["read", "write"]))
    msg = {
        "kvm_msr": lambda: f"msr_{rw} {h()} = 0x{h()}" + draw(st.sampled_from(["", " (#GP)"])),
        "kvm_cr": lambda: f"cr_{rw} {h()} = 0x{h()}",
        "kvm_exit": lambda: f"vcpu {d()} reason {draw(_VMX)}{draw(st.sampled_from(['', ' FAILED_VMENTRY']))} rip 0x{h()} "
                            f"info1 0x{h()} info2 0x{h()} intr_info 0x{h()} error_code 0x{h()}",
        "kvm_entry": lambda: f"vcpu {d()}, rip 0x{h()}",
        "kvm_inj_exception": lambda: f"#{draw(_VEC)}" + draw(st.sampled_from(["", " (0x0)", " [reinjected]"])),
        "kvm_userspace_exit": lambda: f"reason {draw(st.sampled_from(['KVM_EXIT_IO', 'KVM_EXIT_X86_WRMSR', 'BOGUS', 'restart']))}"
                                      f" ({draw(st.sampled_from(['2', '-4', d()]))})",
        "kvm_nested_vmenter": lambda: f"rip: 0x{h()} vmcs: 0x{h()} nested_rip: 0x{h()} int_ctl: 0x0",
        "kvm_nested_vmexit": lambda: f"vcpu {d()} reason {draw(_VMX)} rip 0x{h()} info1 0x0",
        "kvm_nested_vmexit_inject": lambda: f"reason: {draw(_VMX)} ext_inf1: 0x{h()} ext_inf2: 0x0",
        "kvm_emulate_insn": lambda: f"{h()}:{h()}:{draw(st.sampled_from(['0f 30', '0f 32', 'f4', '']))} "
                                    f"({draw(st.sampled_from(['prot64', 'real', 'bogus']))})",
        "kvm_cpuid": lambda: f"func {h()} idx {h()} rax {h()} rbx {h()} rcx {h()} rdx {h()}, cpuid entry found",
        "kvm_pio": lambda: f"pio_{rw} at 0x{h()} size {d()} count {d()} val 0x{h()}",
        "tracing_mark_write": lambda: draw(st.text(max_size=30)),
        "sched_switch": lambda: "prev_comm=a prev_pid=1",
    }[ev]()
    if draw(st.integers(0, 9)) == 0:  # a message cut short or with junk appended
        msg = msg[: draw(st.integers(0, len(msg)))] if draw(st.booleans()) else msg + draw(st.text(max_size=5))
    return ev, msg


@st.composite
def ftrace_line(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["event"] * 8 + ["header", "lost", "junk", "enormous", "backtrack"]))
    if kind == "header":
        return draw(st.sampled_from(["# tracer: nop", "cpus=2", "version = 6", "CPU 3 is empty", "#", ""]))
    if kind == "lost":
        return f"CPU:{draw(_DEC)} [LOST {draw(_DEC)} EVENTS]"
    if kind == "junk":
        return draw(st.text(max_size=60))
    if kind == "enormous":
        return "python3-1 [000] ..... 1.0: kvm_msr: msr_write 6e1 = 0x" + "f" * draw(st.sampled_from([10_000, 2_000_000]))
    if kind == "backtrack":  # many COMM-PID look-alikes: a trap for backtracking regular expressions
        return "a-1 " * draw(st.sampled_from([1_000, 50_000])) + "[0"
    ev, msg = draw(_ftrace_msg())
    comm = draw(st.one_of(st.just("python3"), st.text(alphabet="ab -[]:.0", max_size=8)))
    pid = draw(st.one_of(st.integers(1, 40_000).map(str), _DEC))
    flags = draw(st.sampled_from([" .....", " d..1.", "", " ...."]))
    return f"{comm}-{pid} [{draw(st.integers(0, 999)):03d}]{flags} {draw(_DEC)}.{draw(st.integers(0, 999999)):06d}: {ev}: {msg}"


def _fixture_lines(prefix: str) -> list[str]:
    return [ln for p in sorted(FIXTURES.glob(prefix + "*.txt")) for ln in p.read_text().splitlines()]


@st.composite
def ftrace_bytes(draw: st.DrawFn) -> bytes:
    real = _fixture_lines("ftrace_")
    lines = draw(st.lists(st.one_of(ftrace_line(), st.sampled_from(real)), max_size=25))
    data = draw(st.sampled_from(["\n", "\r\n"])).join(lines).encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 4)) == 0 and data:
        i = draw(st.integers(0, len(data)))
        data = data[:i] + draw(NON_UTF8) + data[i:]
    return draw(damaged(data))


# --------------------------------------------------------------------------- pKVM vmexit_trace
@st.composite
def pkvm_line(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["host"] * 6 + ["junk", "enormous", "prompt"]))
    if kind == "junk":
        return draw(st.text(max_size=60))
    if kind == "enormous":
        return "Host: CPUID 1 cycles 1 each-handler-cycle " + "9" * draw(st.sampled_from([5_000, 1_000_000]))
    if kind == "prompt":
        return "root@host:/sys/kernel/debug/pkvm# cat vmexit_trace"
    name = draw(st.one_of(st.sampled_from(["CPUID", "VMCALL", "vcpu_load", "MSR_WRITE"]), st.text(min_size=1, max_size=8)))
    nums = [draw(st.one_of(st.integers(0, 10**6), st.integers(0, 10**40), st.just(0), st.just(-1))) for _ in range(3)]
    if draw(st.booleans()) and nums[0] > 0:
        nums[2] = nums[1] // nums[0]
    text = ["9" * 4400 if v < 0 else str(v) for v in nums]  # beyond int()'s default 4300-digit limit
    line = f"Host: {name} {text[0]} cycles {text[1]} each-handler-cycle {text[2]}"
    if draw(st.integers(0, 5)) == 0:
        line = line[: draw(st.integers(0, len(line)))]
    return line


@st.composite
def pkvm_bytes(draw: st.DrawFn) -> bytes:
    real = _fixture_lines("pkvm_vmexit_")
    lines = draw(st.lists(st.one_of(pkvm_line(), st.sampled_from(real)), max_size=15))
    data = "\n".join(lines).encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 4)) == 0 and data:
        i = draw(st.integers(0, len(data)))
        data = data[:i] + draw(NON_UTF8) + data[i:]
    return draw(damaged(data))


# --------------------------------------------------------------------------- the readers and the check
def _replay_parquet(path: Path, out_dir: Path) -> None:
    from difftest.cli import default_policy_for, from_metadata, resolve_policy
    from difftest.engine import replay_trace
    from difftest.trace.io import open_trace
    from difftest.verdict.profiles import get_profile

    tf = open_trace(path)
    for _ in tf.rows():
        pass
    # what `difftest replay` does with the trace's own policy and profile, then two fixed policies
    profile = from_metadata(tf, "profile", get_profile, tf.meta.get("profile", "strict"))
    policies = [from_metadata(tf, "policy", resolve_policy, default_policy_for(tf.policies()))]
    policies += [resolve_policy(name) for name in ("hw", "kvm-v7")]
    for policy in policies:
        res = replay_trace(open_trace(path), policy, profile)
        json.dumps(res.to_json())


def _load_variant(path: Path, out_dir: Path) -> None:
    from difftest.variants import load_variant_file
    from reference_model.host import DEFAULT_HOST

    load_variant_file(str(path)).build(DEFAULT_HOST)


def _import_ftrace(path: Path, out_dir: Path) -> None:
    from difftest.capture.importers.ftrace import import_ftrace, metadata
    from difftest.trace.io import open_trace, write_trace

    res = import_ftrace(str(path))
    dest = write_trace(out_dir / "imported.parquet", res.rows, metadata(str(path), res, None))
    for _ in open_trace(dest).rows():
        pass


def _import_pkvm(path: Path, out_dir: Path) -> None:
    from difftest.capture.importers.pkvm_vmexit import compare, parse_vmexit_trace, render

    table = parse_vmexit_trace(str(path))
    render(table)
    json.dumps(table.to_json())
    json.dumps(compare(table, table)[1])


@dataclass(frozen=True)
class Reader:
    """One reader: how to make hostile files for it, read one, and run it through the CLI."""

    name: str
    suffix: str
    strategy: Callable[[], st.SearchStrategy[bytes]]
    read: Callable[[Path, Path], None]
    cli_args: Callable[[Path, Path], list[str]]


READERS: dict[str, Reader] = {
    "parquet": Reader("parquet", ".parquet", parquet_bytes, _replay_parquet, lambda p, out: ["replay", str(p)]),
    "toml": Reader("toml", ".toml", toml_bytes, _load_variant,
                   lambda p, out: ["replay", str(GOOD_TRACE), "--policy", str(p)]),
    "ftrace": Reader("ftrace", ".txt", ftrace_bytes, _import_ftrace,
                     lambda p, out: ["import", "ftrace", str(p), "-o", str(out / "cli.parquet")]),
    "pkvm": Reader("pkvm", ".txt", pkvm_bytes, _import_pkvm,
                   lambda p, out: ["import", "pkvm-vmexit-trace", str(p), "-o", str(out / "cli.json")]),
}


class Crash(AssertionError):
    """A reader raised something other than InputError, or an InputError that breaks the format."""


def check_reader(reader: Reader, data: bytes, work: Path) -> str:
    """Feed ``data`` to ``reader``; return "accepted" or "rejected", raise :class:`Crash` otherwise."""
    for old in work.iterdir():
        old.unlink()
    path = work / f"input{reader.suffix}"
    path.write_bytes(data)
    try:
        reader.read(path, work)
    except InputError as exc:
        text = str(exc)
        if "\n" in text or not text.startswith(str(path)) or len(text) > 2000:
            raise Crash(f"{reader.name}: InputError not one line naming the file: {text[:300]!r}") from exc
        return "rejected"
    except Exception as exc:  # anything else is a crash: the point of this check
        raise Crash(f"{reader.name}: {type(exc).__name__}: {str(exc)[:300]}") from exc
    return "accepted"
