"""The hostile-input campaign against the command line (issue 23): bounded, seeded, counted.

    python bench/fuzz_inputs.py                     # 10,000 inputs, seed 0, 2 at a time
    python bench/fuzz_inputs.py -n 500 --seed 7     # a smaller run
    python bench/fuzz_inputs.py --only toml,ftrace  # some classes only
    python bench/fuzz_inputs.py --cost              # what the footer checks cost per trace

Every input is made from a seeded stream (input i of seed s is always the same bytes), in these
classes: byte-level damage to corpus traces (``parquet-bytes``), footers edited as Thrift
structures (``parquet-footer``: repeated fields, lists longer than the footer, lying statistics,
deep nesting), well-formed traces with hostile contents (``parquet-content``: u64 extremes,
5,000-digit vCPU ids, policy lists naming files or repeating ``hw``, control characters and
megabyte names in metadata and notes), hostile file names (``filename``), tracefs text
(``ftrace``), pKVM vmexit_trace text (``pkvm``), variant files (``toml``) and baselines
(``baseline``).  Each input runs one CLI command in a forked child (so an abort is seen as a
signal, a hang can be killed and peak memory measured), and the run prints counts:

* exit codes; tracebacks; aborts (death by a signal); hangs over ``--timeout`` s; peak RSS over
  1 GiB; outputs holding a raw control character (or bytes that are not UTF-8); exit-2 messages that
  are not one line naming the file (and, for a bad value in a row, the event).

Every input that fails a check is kept under ``--keep`` (default ``bench/fuzz_failures/``) with the
command that ran it; move it to ``tests/fixtures/hostile/`` and add it to
``tests/test_hostile_regressions.py`` once fixed.  Exit code 1 if any check failed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.setrecursionlimit(20_000)  # (the footer writer recurses once per nesting level of an edited footer)
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import parquet_thrift as pt  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

BASES = [REPO / "traces" / p for p in (
    "arch/V1-ad-wp1-sup-write.parquet", "bugs/B14-nested-restore-stale-l1-pkrs.parquet",
    "bugs/B12-reset-clears.parquet", "real/kvm-pvm-pks-baseline.parquet", "arch/ARCH.KEY-leaf-sizes.parquet")]
GOOD = BASES[0]
FTRACE = sorted((REPO / "tests" / "fixtures").glob("ftrace_*.txt"))
PKVM = sorted((REPO / "tests" / "fixtures").glob("pkvm_vmexit_*.txt"))
GIB = 1 << 30
CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")
CLASSES = ("parquet-bytes", "parquet-footer", "parquet-content", "filename", "ftrace", "pkvm", "toml", "baseline")


@dataclass
class Case:
    """One input: the files it consists of, the command to run, and what its error must name."""

    klass: str
    args: list[str]  # CLI arguments; "{0}" .. are replaced with the input files' paths
    files: list[tuple[str, bytes]]  # (file name, content)
    row_fault: bool = False  # a bad value in a row: an exit-2 message must name the event
    names_file: int = 0  # index of the file an exit-2 message must name
    valid: bool = False  # a valid input (only its name or framing is odd): exit 2 is a failure


@dataclass
class Tally:
    exit_codes: Counter[str] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)
    by_class: Counter[str] = field(default_factory=Counter)
    kept: list[str] = field(default_factory=list)
    slowest: float = 0.0
    peak_rss: int = 0


# --------------------------------------------------------------------------- inputs
_BASE_BYTES: list[bytes] = []
_BASE_TABLES: list[pa.Table] = []


def base_bytes() -> list[bytes]:
    if not _BASE_BYTES:
        _BASE_BYTES.extend(p.read_bytes() for p in BASES)
    return _BASE_BYTES


def base_tables() -> list[pa.Table]:
    if not _BASE_TABLES:
        _BASE_TABLES.extend(pq.read_table(p) for p in BASES)
    return _BASE_TABLES


def _table_bytes(t: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(t, buf)
    return buf.getvalue()


def _trace_cmd(rng: random.Random) -> list[str]:
    r = rng.random()
    if r < 0.6:
        return ["replay", "{0}"]
    if r < 0.8:
        return ["compare", "{0}", "--policy", "hw", "--against", "kvm-v7"]
    return ["report", "{0}", "--jsonl", "out.jsonl"] + (["--jobs", "2"] if rng.random() < 0.2 else [])


def gen_parquet_bytes(rng: random.Random) -> Case:
    data = bytearray(rng.choice(base_bytes()))
    n = len(data)
    flen = int.from_bytes(data[-8:-4], "little")
    foot = max(4, n - 8 - flen)
    how = rng.choice(["flip-footer", "flip-footer", "flip-data", "truncate", "splice", "insert", "length"])
    if how == "flip-footer":
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(foot, n - 8)] = rng.randrange(256)
    elif how == "flip-data":
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(4, foot)] = rng.randrange(256)
    elif how == "truncate":
        data = data[: rng.randrange(n)]
    elif how == "splice":
        i, j = rng.randrange(n), rng.randrange(n)
        data = data[:i] + data[j:]
    elif how == "insert":
        i = rng.randrange(foot, n - 8)
        data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
        data[-8:-4] = (flen + (len(data) - n)).to_bytes(4, "little")
    else:
        data[-8:-4] = rng.choice([0, 1, n, n - 8, 0xFFFFFFFF, flen + 1, flen - 1]).to_bytes(4, "little", signed=False)
    return Case("parquet-bytes", _trace_cmd(rng), [("t.parquet", bytes(data))])


def _walk_structs(node: Any, out: list[list[list[Any]]]) -> None:
    if isinstance(node, list) and (not node or isinstance(node[0], list)):
        out.append(node)
        for f in node:
            _walk_structs(f[2], out)
    elif isinstance(node, tuple):
        for x in node[1]:
            _walk_structs(x, out)


def gen_parquet_footer(rng: random.Random) -> Case:
    p = rng.choice(BASES)
    body, footer = pt.read_footer(p)
    structs: list[list[list[Any]]] = []
    _walk_structs(footer, structs)
    s = rng.choice(structs)
    how = rng.choice(["dup", "dup", "drop", "int", "list-long", "nest", "type", "nullcount", "raw-len"])
    raw: bytes | None = None
    if how == "dup" and s:
        f = rng.choice(s)
        s.insert(s.index(f) + 1, [f[0], f[1], f[2]])
    elif how == "drop" and s:
        s.remove(rng.choice(s))
    elif how == "int":
        ints = [f for f in s if f[1] in (pt.I16, pt.I32, pt.I64)]
        if ints:
            f = rng.choice(ints)
            f[2] = rng.choice([-1, 0, 1 << 31, (1 << 63) - 1, -(1 << 63), 10**12, f[2] + 1, f[2] * 1000])
    elif how == "list-long":
        lists = [f for f in s if f[1] == pt.LIST]
        if lists:
            f = rng.choice(lists)
            et, items = f[2]
            f[2] = (et, items * rng.randint(2, 50)) if items else (et, items)
    elif how == "nest":
        inner: list[list[Any]] = []
        for _ in range(rng.choice([40, 400, 2000])):
            inner = [[1, pt.STRUCT, inner]]
        s.append([99, pt.STRUCT, inner])
    elif how == "type" and s:
        f = rng.choice(s)
        f[1] = rng.choice([pt.I32, pt.BINARY, pt.STRUCT, pt.LIST]) if f[1] != pt.STRUCT else pt.I32
        f[2] = {pt.I32: 7, pt.BINARY: b"x" * rng.randint(0, 64), pt.STRUCT: [], pt.LIST: (pt.I32, [1, 2, 3])}[f[1]]
    elif how == "nullcount":
        try:
            md = pq.ParquetFile(p).metadata
            g = rng.randrange(md.num_row_groups)
            c = rng.randrange(md.num_columns)
            st = pt.column_statistics(footer, g, c)
            rows = md.row_group(g).num_rows
            pt.field(st, 3)[2] = rng.choice([rows, 0, rows + 1, -1])
            if rng.random() < 0.3:  # also drop min/max, as a forger would
                st[:] = [f for f in st if f[0] not in (1, 2, 5, 6)]
        except (KeyError, IndexError, TypeError):
            pass
    else:
        enc = pt.write_struct(footer)
        i = rng.randrange(len(enc))
        raw = enc[:i] + bytes([0xFF] * rng.randint(1, 9) + [0x7F]) + enc[i:]
    data = io.BytesIO()
    enc = raw if raw is not None else pt.write_struct(footer)
    data.write(body + enc + len(enc).to_bytes(4, "little") + b"PAR1")
    return Case("parquet-footer", _trace_cmd(rng), [("t.parquet", data.getvalue())])


HOSTILE_TEXT = ["\x1b]0;PWNED\x07", "\x1b[2J\x1b[31mred", "a\nb", "tab\there", "\x9b31m", "\u202eevil", "\x00nul",
                "x" * 1_000_000, "é" * 3000, "\r\rover", "\x7f"]


def gen_parquet_content(rng: random.Random) -> Case:
    t = rng.choice(base_tables())
    meta = {k.decode(): v.decode() for k, v in (t.schema.metadata or {}).items()}
    how = rng.choice(["u64", "u64", "vcpu-path", "policy", "policy", "meta-text", "note", "seq", "profile", "features"])
    row_fault = False
    n = t.num_rows
    if how == "u64":
        cols = [c for c in ("addr", "value", "exp_value", "exp_cr2", "cr4", "cr0") if c in t.column_names]
        if cols:
            c = rng.choice(cols)
            vals = t[c].to_pylist()
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(n)
                vals[i] = rng.choice([(1 << 64) - 1, (1 << 63), (1 << 63) - 1, (1 << 64) - 4096, 0]) if vals[i] is not None \
                    else vals[i]
            t = t.set_column(t.column_names.index(c), c, pa.array(vals, t.schema.field(c).type))
    elif how == "vcpu-path":
        kinds = t["kind"].to_pylist()
        paths = t["path"].to_pylist() if "path" in t.column_names else [None] * n
        snaps = [i for i, k in enumerate(kinds) if k == "snapshot"]
        if snaps and "path" in t.column_names:
            i = rng.choice(snaps)
            paths[i] = rng.choice(["vcpu" + "9" * rng.choice([5, 6, 20, 4301, 5000]) + ".pkrs", "vcpu65536.pkrs",
                                   "vcpu65535.pkrs", "vcpu-1.pkrs", "vcpu0.pkrs\n"])
            t = t.set_column(t.column_names.index("path"), "path",
                             pa.array(paths, pa.string()).dictionary_encode())
            row_fault = True
    elif how == "policy":
        meta["pksdt.policy"] = rng.choice([
            "../../../../etc/hostname", "/etc/passwd", "hw,nope", ",".join(["hw"] * 3001), "x.toml", "hw,,kvm-v7",
            "kvm-v7," * 40, "\x1b]0;t\x07", "hw," + ",".join(f"p{i}" for i in range(100))])
    elif how == "meta-text":
        key = rng.choice(["pksdt.name", "pksdt.description", "pksdt.notes", "pksdt.source"])
        meta[key] = rng.choice(HOSTILE_TEXT)
    elif how == "note":
        notes = [rng.choice([*HOSTILE_TEXT[:7], "ok"]) for _ in range(n)]
        arr = pa.array(notes, pa.string())
        t = t.set_column(t.column_names.index("note"), "note", arr) if "note" in t.column_names else t.append_column("note", arr)
        if rng.random() < 0.5:  # make a row diverge so the note is shown
            meta["pksdt.policy"] = "hw"
    elif how == "seq":
        seq = t["seq"].to_pylist()
        i = rng.randrange(n)
        seq[i] = rng.choice([0, (1 << 64) - 1, seq[i - 1] if i else 0])
        t = t.set_column(0, "seq", pa.array(seq, pa.uint64()))
        row_fault = n > 1
    elif how == "profile":
        meta["pksdt.profile"] = rng.choice(["/etc/passwd", "nope", "strict\x1b[2J", "pvm"])
    else:
        meta["pksdt.cpu.features"] = rng.choice(["bogus", "pks,pks,pks", "", "pku," * 1000, "\x1b[2J"])
    t = t.replace_schema_metadata({k.encode(): v.encode() for k, v in meta.items()})
    return Case("parquet-content", _trace_cmd(rng), [("t.parquet", _table_bytes(t))], row_fault=row_fault)


def gen_filename(rng: random.Random) -> Case:
    name = rng.choice(["a\nb.parquet", "\x1b]0;PWNED\x07.parquet", "ok\x7f.parquet", "x" * 200 + ".parquet",
                       "caf\udce9.parquet", "sp ace.parquet", "-dash.parquet", "\u202eevil.parquet"])
    return Case("filename", _trace_cmd(rng), [(name, rng.choice(base_bytes()))], valid=True)


FTRACE_LINES = [
    " qemu-system-x86-1234  [001] d.... 100.000001: kvm_msr: msr_write 6e1 = 0x{v}",
    " qemu-system-x86-1234  [001] d.... 100.000002: kvm_msr: msr_read 6e1 = 0x{v}",
    " qemu-system-x86-1234  [001] d.... 100.000003: kvm_cr: cr_write 4 = 0x{v}",
    " qemu-system-x86-1234  [001] d.... 100.000004: kvm_exit: vcpu {d} reason MSR_WRITE rip 0xffff info1 0x0 info2 0x0",
    " qemu-system-x86-1234  [001] d.... 100.000005: kvm_inj_exception: #GP (0x0)",
    " qemu-system-x86-1234  [001] d.... 100.000006: kvm_cpuid: func 7 idx 0 rax 0 rbx 0 rcx {v} rdx 0, cpuid entry found",
]


def gen_ftrace(rng: random.Random) -> Case:
    base = rng.choice(FTRACE).read_bytes().decode("utf-8", "replace").split("\n") if FTRACE else []
    lines = list(base[: rng.randint(0, min(len(base), 120))])
    for _ in range(rng.randint(1, 12)):
        how = rng.choice(["line", "long", "spaces", "ctrl", "digits", "junk", "dash"])
        if how == "line":
            s = rng.choice(FTRACE_LINES).format(v=rng.choice(["0", "f" * 16, "f" * 40, "1" * 5000]),
                                                d=rng.choice(["0", "9" * 30, "65535"]))
        elif how == "long":
            s = " qemu-1 [001] d.... 1.0: kvm_msr: msr_write 6e1 = 0x" + "f" * rng.choice([100, 70_000])
        elif how == "spaces":
            s = " " * rng.choice([1000, 64_000]) + rng.choice(["", "x", "-1 [0"])
        elif how == "dash":
            s = "a-1 " * rng.choice([100, 16_000])
        elif how == "ctrl":
            s = rng.choice(FTRACE_LINES).format(v="0", d="0") + rng.choice(["\x0c", "\x85", "\r", "\u2028", "\x1b[2J"])
        elif how == "digits":
            s = f" q-{'9' * rng.choice([21, 5000])}  [001] d.... 1.0: kvm_msr: msr_write 6e1 = 0x0"
        else:
            s = "".join(chr(rng.randrange(1, 0x250)) for _ in range(rng.randint(1, 80)))
        lines.insert(rng.randint(0, len(lines)), s)
    text = "\n".join(lines).encode("utf-8", "surrogatepass")
    if rng.random() < 0.1:
        text = text.replace(b"\n", rng.choice([b"\r", b"\r\n", b"\x0c\n"]))
    if rng.random() < 0.05:
        text += b"\xff\xfe"
    args = ["import", "ftrace", "{0}", "-o", "out.parquet"]
    if rng.random() < 0.4:
        args.append("--skip-bad")
    if rng.random() < 0.15:
        args += ["--cpu-features", rng.choice(["bogus", "pku", "pks,vmx", "\x1b[2J"])]
    return Case("ftrace", args, [("cap.txt", text)])


def gen_pkvm(rng: random.Random) -> Case:
    base = rng.choice(PKVM).read_text().split("\n") if PKVM else []
    lines = list(base)
    for _ in range(rng.randint(1, 10)):
        how = rng.choice(["dup", "big", "ctrl", "long", "many", "junk"])
        if how == "dup" and base:
            lines.append(rng.choice(base))
        elif how == "big":
            lines.append(f"Host: X{rng.randrange(9)} {'9' * rng.choice([20, 21, 5000])} cycles 1 each-handler-cycle 0")
        elif how == "ctrl":
            lines.append(f"Host: \x1b]0;T\x07 1 cycles 2 each-handler-cycle 2{rng.choice(['', chr(12), chr(0x85)])}")
        elif how == "long":
            lines.append("Host: " + " " * rng.choice([100, 70_000]) + "a 1 cycles 1 each-handler-cycle 1")
        elif how == "many":
            lines += [f"Host: h{i} 1 cycles 1 each-handler-cycle 1" for i in range(rng.choice([100, 20_000]))]
        else:
            lines.append("".join(chr(rng.randrange(1, 0x250)) for _ in range(rng.randint(1, 60))))
    text = "\n".join(lines).encode("utf-8", "surrogatepass")
    args = ["import", "pkvm-vmexit-trace", "{0}"] + (["-o", "out.json"] if rng.random() < 0.5 else [])
    files = [("vm.txt", text)]
    if rng.random() < 0.2 and PKVM:
        args += ["--against", "{1}"]
        files.append(("b.txt", PKVM[-1].read_bytes()))
    return Case("pkvm", args, files)


def gen_toml(rng: random.Random) -> Case:
    how = rng.choice(["dotted", "arrays", "bigint", "registered", "knob", "text", "junk", "ok", "inline"])
    if how == "dotted":
        text = "base = \"kvm-v7\"\n" + ".".join(["a"] * rng.choice([5, 1000, 8000])) + " = 1\n"
    elif how == "arrays":
        d = rng.choice([10, 1000, 8000])
        text = "base = \"kvm-v7\"\nx = " + "[" * d + "]" * d + "\n"
    elif how == "inline":
        d = rng.choice([10, 3000])
        text = "base = \"kvm-v7\"\nx = " + "{a = " * d + "1" + "}" * d + "\n"
    elif how == "bigint":
        text = f"base = \"kvm-v7\"\nname = \"v\"\n[knobs]\ninit_clears_pkrs = {'9' * rng.choice([20, 4301, 5001])}\n"
    elif how == "registered":
        text = f"base = \"hw\"\nname = \"{rng.choice(['kvm-v7', 'hw', 'upstream'])}\"\n"
    elif how == "knob":
        text = "base = \"kvm-v7\"\nname = \"v\"\n[knobs]\n" + rng.choice(
            ["nope = 1", "init_clears_pkrs = \"yes\"", "init_clears_pkrs = true"]) + "\n"
    elif how == "text":
        name = rng.choice(["a" * 70, "x y", "ok"])
        text = f"base = \"kvm-v7\"\nname = \"{name}\"\ndescription = \"{'d' * rng.choice([10, 5000])}\"\n"
    elif how == "junk":
        text = "".join(chr(rng.randrange(1, 0x250)) for _ in range(rng.randint(1, 200)))
    else:
        text = "base = \"kvm-v7\"\nname = \"v7-fuzz\"\n"
    name = rng.choice(["v.toml", "v.toml", "\x1b]0;T\x07.toml"])
    args = ["replay", str(GOOD), "--policy", "./{0}"] if rng.random() < 0.7 else \
        ["report", str(GOOD), "--policy", "./{0}", "--policy", "hw"]
    return Case("toml", args, [(name, text.encode("utf-8", "surrogatepass"))])


def gen_baseline(rng: random.Random) -> Case:
    how = rng.choice(["deep", "bigint", "junk", "types", "ctrl", "ok"])
    row = {"trace": str(GOOD), "name": "V1", "policy": "kvm-v7", "passed": True, "divergences": 0,
           "first_divergence": None, "first_rule": None}
    if how == "deep":
        text = "[" * rng.choice([1000, 100_000])
    elif how == "bigint":
        text = '{"divergences": ' + "9" * rng.choice([30, 5001]) + "}"
    elif how == "junk":
        text = "".join(chr(rng.randrange(1, 0x250)) for _ in range(rng.randint(1, 200)))
    elif how == "types":
        row[rng.choice(list(row))] = rng.choice([None, 1.5, [], {}, "x", -1, 2**70])
        text = json.dumps(row)
    elif how == "ctrl":
        row["name"] = "\x1b]0;T\x07"
        row["passed"] = False
        row["divergences"] = 1
        text = json.dumps(row)
    else:
        text = json.dumps(row)
    return Case("baseline", ["report", str(GOOD), "--baseline", "{0}"], [("base.jsonl", text.encode("utf-8", "surrogatepass"))])


GENERATORS: dict[str, Callable[[random.Random], Case]] = {
    "parquet-bytes": gen_parquet_bytes, "parquet-footer": gen_parquet_footer, "parquet-content": gen_parquet_content,
    "filename": gen_filename, "ftrace": gen_ftrace, "pkvm": gen_pkvm, "toml": gen_toml, "baseline": gen_baseline,
}
WEIGHTS = {"parquet-bytes": 3, "parquet-footer": 3, "parquet-content": 3, "filename": 1, "ftrace": 2, "pkvm": 1,
           "toml": 1, "baseline": 1}


def make_case(seed: int, i: int, classes: list[str]) -> Case:
    rng = random.Random(f"{seed}:{i}")
    klass = rng.choices(classes, weights=[WEIGHTS[c] for c in classes])[0]
    return GENERATORS[klass](rng)


# --------------------------------------------------------------------------- running
def _child(case: Case, work: Path, paths: list[str]) -> None:
    """In the forked child: run the command with output to files, exit with its code."""
    os.chdir(work)
    out = os.open(work / "stdout", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    err = os.open(work / "stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(out, 1)
    os.dup2(err, 2)
    code = 0
    try:
        sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), encoding="utf-8", errors="surrogateescape",
                                      write_through=True)
        sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), encoding="utf-8", errors="surrogateescape",
                                      write_through=True)
        from difftest.cli import main

        args = [a.format(*paths) for a in case.args]
        try:
            main(args, prog_name="difftest", standalone_mode=True)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 99
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _check(case: Case, paths: list[str], status: int, rss_kib: int, seconds: float, work: Path, timeout: float,
           tally: Tally) -> list[str]:
    problems = []
    out = (work / "stdout").read_bytes() if (work / "stdout").exists() else b""
    err = (work / "stderr").read_bytes() if (work / "stderr").exists() else b""
    if status == -1:
        tally.exit_codes["hang"] += 1
        problems.append("hang")
    elif os.WIFSIGNALED(status):
        tally.exit_codes[f"signal {signal.Signals(os.WTERMSIG(status)).name}"] += 1
        problems.append("abort")
    else:
        code = os.WEXITSTATUS(status)
        tally.exit_codes[str(code)] += 1
        if code not in (0, 1, 2, 3):
            problems.append(f"exit {code}")
        if code == 2 and case.valid:
            problems.append("valid input refused")
        if code == 2:
            lines = err.strip().split(b"\n")
            lines = [ln for ln in lines if not ln.startswith(b"difftest: skipped ")]
            text = lines[-1].decode("utf-8", "replace") if lines else ""
            from difftest.printable import printable

            want = printable(paths[case.names_file], 400)
            if len(lines) != 1 or not text.startswith(("difftest: error: ", "Error: ", "Usage: ")):
                if not (err.startswith(b"Usage:") and b"Error:" in err):  # click's usage errors
                    problems.append("message not one line")
            elif text.startswith("difftest: error: ") and want[:60] not in text and "--" not in text[17:40]:
                problems.append("message fails to name the file")
            elif case.row_fault and "event " not in text and "metadata" not in text:
                problems.append("message fails to name the row")
    if b"Traceback (most recent call last)" in out + err:
        problems.append("traceback")
    if CONTROL.search(out) or CONTROL.search(err):
        problems.append("unescaped control character")
    else:
        try:
            (out + err).decode("utf-8")
        except UnicodeDecodeError:
            problems.append("output not UTF-8")
    if rss_kib * 1024 > GIB:
        problems.append("peak memory over 1 GiB")
    tally.peak_rss = max(tally.peak_rss, rss_kib * 1024)
    tally.slowest = max(tally.slowest, seconds)
    return problems


def run(n: int, seed: int, classes: list[str], workers: int, timeout: float, keep: Path) -> Tally:
    import difftest.cli
    import difftest.report.corpus
    import difftest.verdict.compare  # noqa: F401

    tally = Tally()
    root = Path(tempfile.mkdtemp(prefix="pksdt-fuzz-inputs-"))
    running: dict[int, tuple[int, Case, list[str], Path, float]] = {}
    next_i = 0
    try:
        while next_i < n or running:
            while next_i < n and len(running) < workers:
                case = make_case(seed, next_i, classes)
                work = root / str(next_i)
                work.mkdir()
                paths = []
                for name, data in case.files:
                    p = work / name
                    with open(os.fsencode(p), "wb") as fh:
                        fh.write(data)
                    paths.append(os.fsdecode(os.fsencode(p)))
                pid = os.fork()
                if pid == 0:
                    _child(case, work, paths)
                running[pid] = (next_i, case, paths, work, time.monotonic())
                next_i += 1
            pid, status, usage = os.wait4(-1, os.WNOHANG)
            if pid == 0:
                now = time.monotonic()
                for cpid, (i, case, paths, work, t0) in list(running.items()):
                    if now - t0 > timeout:
                        os.kill(cpid, signal.SIGKILL)
                        os.wait4(cpid, 0)
                        del running[cpid]
                        _finish(i, case, paths, work, -1, 0, now - t0, timeout, tally, keep, seed)
                time.sleep(0.002)
                continue
            if pid not in running:
                continue
            i, case, paths, work, t0 = running.pop(pid)
            _finish(i, case, paths, work, status, usage.ru_maxrss, time.monotonic() - t0, timeout, tally, keep, seed)
    finally:
        for cpid in running:
            os.kill(cpid, signal.SIGKILL)
            os.waitpid(cpid, 0)
        shutil.rmtree(root, ignore_errors=True)
    return tally


def _finish(i: int, case: Case, paths: list[str], work: Path, status: int, rss: int, seconds: float, timeout: float,
            tally: Tally, keep: Path, seed: int) -> None:
    tally.by_class[case.klass] += 1
    problems = _check(case, paths, status, rss, seconds, work, timeout, tally)
    for p in problems:
        tally.problems[p] += 1
    if problems:
        dest = keep / f"s{seed}-{i}-{case.klass}"
        dest.mkdir(parents=True, exist_ok=True)
        for k, (name, data) in enumerate(case.files):
            (dest / f"input{k}{Path(name).suffix[:8]}").write_bytes(data)
        (dest / "case.json").write_text(json.dumps({"class": case.klass, "args": case.args, "names": [n for n, _ in case.files],
                                                    "problems": problems}, ensure_ascii=True, indent=1))
        for f in ("stdout", "stderr"):
            if (work / f).exists():
                shutil.copyfile(work / f, dest / f)
        tally.kept.append(str(dest))
    shutil.rmtree(work, ignore_errors=True)


def measure_cost(rounds: int = 3) -> None:
    """What the footer checks add per trace: the Thrift walk, and the helper round trip."""
    from difftest.trace.parquet_footer import check_footer, parse_in_child

    files = sorted((REPO / "traces").rglob("*.parquet"))
    parse_in_child(str(files[0]))  # (the helper's one fork, paid once per process)
    best_walk = best_probe = best_open = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for f in files:
            check_footer(str(f))
        t1 = time.perf_counter()
        for f in files:
            parse_in_child(str(f))
        t2 = time.perf_counter()
        for f in files:
            pq.ParquetFile(f).schema_arrow  # noqa: B018
        t3 = time.perf_counter()
        best_walk, best_probe, best_open = min(best_walk, t1 - t0), min(best_probe, t2 - t1), min(best_open, t3 - t2)
    k = len(files)
    print(f"{k} corpus traces, best of {rounds}: footer walk {best_walk / k * 1e3:.2f} ms/trace, helper parse "
          f"{best_probe / k * 1e3:.2f} ms/trace, the library's own footer parse {best_open / k * 1e3:.2f} ms/trace")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=10_000, help="inputs to run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default=",".join(CLASSES), help="comma-separated classes")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds before a run counts as a hang")
    ap.add_argument("--keep", type=Path, default=REPO / "bench" / "fuzz_failures")
    ap.add_argument("--cost", action="store_true", help="measure the footer checks' cost and exit")
    a = ap.parse_args()
    if a.cost:
        measure_cost()
        return 0
    classes = [c for c in a.only.split(",") if c]
    bad = [c for c in classes if c not in GENERATORS]
    if bad:
        ap.error(f"unknown class {bad[0]} (one of {', '.join(CLASSES)})")
    t0 = time.perf_counter()
    tally = run(a.n, a.seed, classes, a.workers, a.timeout, a.keep)
    dt = time.perf_counter() - t0
    print(f"{a.n} inputs, seed {a.seed}, {a.workers} at a time, {dt:.0f} s ({a.n / dt:.1f} inputs/s)")
    print("by class:      " + ", ".join(f"{k} {v}" for k, v in sorted(tally.by_class.items())))
    print("exit codes:    " + ", ".join(f"{k}: {v}" for k, v in sorted(tally.exit_codes.items())))
    names = ["traceback", "abort", "hang", "peak memory over 1 GiB", "unescaped control character", "output not UTF-8",
             "message not one line", "message fails to name the file", "message fails to name the row",
             "valid input refused"]
    for p in names + sorted(set(tally.problems) - set(names)):
        print(f"{p + ':':<34}{tally.problems.get(p, 0)}")
    print(f"slowest input {tally.slowest:.1f} s; peak RSS {tally.peak_rss / (1 << 20):.0f} MiB")
    if tally.kept:
        print(f"kept {len(tally.kept)} failing inputs under {a.keep}")
    return 1 if tally.problems else 0


if __name__ == "__main__":
    sys.exit(main())
