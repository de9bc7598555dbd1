"""Issue 23: every hostile input the campaign found (bench/fuzz_inputs.py), as a test.

The house rules under test (BRIEF, issue 23): bad input is exit 2 with one line naming the file
(and the event or line); a trace never makes us open a file; every legal u64 is accepted; text
from an input reaches a terminal or report escaped and capped; importers number lines as
``grep -n`` does; outputs are checked before work and report folders are replaced as a whole; a
dead worker does not hang ``report``; a lying footer statistic does not change a verdict.
Expected values come from the trace format (docs/trace-format.md), the issue's reproductions and
the Parquet/Thrift specifications, not from the code under test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from pathlib import Path

import parquet_thrift as pt
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from difftest import TraceBuilder
from difftest.cli import main
from difftest.errors import InputError
from difftest.printable import printable
from difftest.report import corpus
from difftest.report.corpus import _run_task as _REAL_RUN_TASK

REPO = Path(__file__).resolve().parents[1]
HOSTILE = REPO / "tests" / "fixtures" / "hostile"  # reader crashes of issue 9 (tests/test_robust_fuzz.py)
HOSTILE_CLI = REPO / "tests" / "fixtures" / "hostile_cli"  # issue 23's inputs, each run through the CLI here
GOOD = REPO / "traces" / "arch" / "V1-ad-wp1-sup-write.parquet"
PKRS = 0x6E1
SUP = 0x4000_0000
U64_MAX = (1 << 64) - 1
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def one_line_error(res: Result, *fragments: str) -> str:
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    assert isinstance(res.exception, SystemExit), res.exception
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("difftest: error: "), lines[0]
    assert "Traceback" not in res.output
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


def wd_write(path: Path, name: str = "wd-write", policy: str | None = "hw", **meta: str) -> Path:
    """WD blocks a CR0.WP=1 supervisor write: PFEC 0x23 (SPEC ARCH.RIGHTS, ARCH.PFEC.PK)."""
    t = TraceBuilder(name, "WD blocks a supervisor write with WP=1", policy=policy, long_mode=True)
    t.cpuid(pks=True).cr4(pks=True).wrmsr(PKRS, 0x8)
    t.access(SUP, key=1, write=True).expect_pf(0x23, rule="ARCH.RIGHTS")
    t.snapshot("vcpu0.pkrs", 0x8)
    t.meta.update(meta)
    return t.write(path)


def with_meta(src: Path, dest: Path, **meta: str) -> Path:
    t = pq.read_table(src)
    md = dict(t.schema.metadata or {})
    md.update({f"pksdt.{k}".encode(): v.encode() for k, v in meta.items()})
    pq.write_table(t.replace_schema_metadata(md), dest)
    return dest


# --------------------------------------------------------------------------- u64 and integer bounds
def high_address_trace(path: Path) -> Path:
    """Reads of the last bytes of the 64-bit address space (legal u64 addresses, and CR2 values).

    With PKRS = 0x4 (AD for key 1; AD(k) = bit 2k) a supervisor read of a key-1 page faults with
    PFEC = P|PK = 0x21 and CR2 = the address (SPEC ARCH.RIGHTS, ARCH.PFEC.PK); with PKRS = 0 the same
    read is allowed."""
    t = TraceBuilder("top-of-u64", "reads at the top of the address space", policy="hw", long_mode=True)
    t.cpuid(pks=True).cr4(pks=True).wrmsr(PKRS, 0x4)
    for addr in (U64_MAX, U64_MAX - 7):
        t.access(addr, key=1).expect_pf(0x21, cr2=addr, rule="ARCH.PFEC.PK")
    t.wrmsr(PKRS, 0)
    t.access(U64_MAX, key=1).expect_ok()
    t.snapshot("vcpu0.pkrs", 0)
    return t.write(path)


@pytest.mark.parametrize("engine", ["reference", "fast"])  # the fast engine once stored such a page base in int64
def test_access_at_the_last_u64_address_replays(tmp_path: Path, engine: str) -> None:
    from difftest.engine import replay_trace
    from difftest.trace.io import open_trace
    from difftest.verdict.profiles import get_profile
    from reference_model.policies import get_policy

    res = replay_trace(open_trace(high_address_trace(tmp_path / "t.parquet")), get_policy("hw"), get_profile("strict"),
                       engine=engine)
    assert res.compared == 4
    assert res.divergence_count == 0


def test_snapshot_path_with_a_5000_digit_vcpu_is_exit_2(tmp_path: Path) -> None:
    t = TraceBuilder("big-vcpu", policy="hw")
    t.wrmsr(PKRS, 0)
    t.snapshot("vcpu" + "9" * 5000 + ".pkrs", 0)
    line = one_line_error(run("replay", str(t.write(tmp_path / "v.parquet"))), "v.parquet", "column 'path'",
                          "vCPU id out of range (0..65535)")
    assert len(line) < 700  # the 5,000 digits are cut


@pytest.mark.parametrize(("vcpu", "ok"), [(0, True), (65535, True), (65536, False), (10**30, False)])
def test_snapshot_vcpu_bound_is_the_vcpu_columns(vcpu: int, ok: bool) -> None:
    """The vcpu column is uint16 (0..65535); a snapshot path names vCPUs in the same range."""
    from difftest.trace.validate import path_ok

    assert path_ok(f"vcpu{vcpu}.pkrs") is ok


# --------------------------------------------------------------------------- a trace never names a file
@pytest.mark.parametrize("policy", ["/etc/passwd", "../../../../etc/hostname", "VARIANT", "hw,VARIANT"])
def test_metadata_naming_a_file_is_refused_without_reading_it(tmp_path: Path, policy: str) -> None:
    variant = tmp_path / "v.toml"
    variant.write_text('base = "hw"\nname = "mine"\n')
    policy = policy.replace("VARIANT", str(variant))
    trace = wd_write(tmp_path / "t.parquet", policy=policy)
    opened: list[str] = []
    real_open = Path.read_bytes

    def spy(self: Path) -> bytes:
        opened.append(str(self))
        return real_open(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Path, "read_bytes", spy)
        for cmd in (["replay", str(trace)], ["report", str(trace)], ["compare", str(trace), "--policy", "hw",
                                                                        "--against", "kvm-v7"]):
            one_line_error(run(*cmd), "t.parquet", "metadata 'pksdt.policy'", "is not a registered policy")
    assert str(variant) not in opened and "/etc/passwd" not in opened


def test_every_name_of_a_policy_list_is_checked(tmp_path: Path) -> None:
    trace = wd_write(tmp_path / "t.parquet", policy="hw,nope")
    one_line_error(run("replay", str(trace)), "t.parquet", "'nope' is not a registered policy")


def test_a_repeated_policy_runs_once(tmp_path: Path) -> None:
    """9 KB of metadata repeating hw: one hw run (plus the default kvm-v7), not 3,001."""
    trace = wd_write(tmp_path / "t.parquet", policy=",".join(["hw"] * 3001))
    res = run("report", str(trace), "--jsonl", str(tmp_path / "r.jsonl"))
    assert res.exit_code in (0, 1), res.output
    rows = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert sorted(r["policy"] for r in rows) == ["hw", "kvm-v7"]


def test_a_variant_may_not_take_a_registered_name(tmp_path: Path) -> None:
    v = tmp_path / "v.toml"
    v.write_text('base = "hw"\nname = "kvm-v7"\n')  # "policy kvm-v7, 0 divergences" while running hw
    one_line_error(run("replay", str(GOOD), "--policy", str(v)), "v.toml", "registered policy's name")


@pytest.mark.parametrize(("text", "fragment"), [
    ('base = "kvm-v7"\n' + ".".join(["a"] * 50_000) + " = 1\n", "larger than"),
    ('base = "kvm-v7"\n' + ".".join(["a"] * 5_000) + " = 1\n", "nested more than"),
    ('base = "kvm-v7"\nx = ' + "[" * 3000 + "]" * 3000 + "\n", "nested more than"),
    ('base = "kvm-v7"\nname = "v"\n[knobs]\ninit_clears_pkrs = ' + "9" * 5001 + "\n", "not a usable TOML value"),
    ('base = "hw"\nname = "a b"\n', "is not a policy name"),
    ('base = "hw"\nname = "v"\ndescription = "' + "d" * 2000 + '"\n', "longer than 1000"),
])
def test_variant_files_are_checked_against_their_schema(tmp_path: Path, text: str, fragment: str) -> None:
    v = tmp_path / "v.toml"
    v.write_text(text)
    one_line_error(run("replay", str(GOOD), "--policy", str(v)), "v.toml", fragment)


def test_generate_records_a_variant_by_name_and_knobs_not_path(tmp_path: Path) -> None:
    v = tmp_path / "secret-dir" / "v.toml"
    v.parent.mkdir()
    v.write_text('base = "kvm-v7"\nname = "v7-mine"\n')
    out = tmp_path / "g.parquet"
    assert run("generate", "--seed", "3", "--events", "40", "--policy", str(v), "-o", str(out)).exit_code == 0
    meta = {k.decode(): v.decode() for k, v in pq.ParquetFile(out).schema_arrow.metadata.items()}
    assert "secret-dir" not in json.dumps(meta)
    assert meta["pksdt.variant"].startswith("v7-mine: base kvm-v7")
    assert "pksdt.policy" not in meta
    res = run("replay", str(out), "--policy", str(v))  # the expectations are that variant's
    assert res.exit_code == 0, res.output
    assert run("replay", str(out)).exit_code in (0, 1)  # readable without it (default policy)


# --------------------------------------------------------------------------- escaping
ESC_NAME = "\x1b]0;PWNED\x07name\x9b31m\u202e"


def test_control_characters_from_a_trace_are_escaped_everywhere(tmp_path: Path) -> None:
    trace = with_meta(wd_write(tmp_path / "t.parquet"), tmp_path / "t2.parquet", name=ESC_NAME,
                      description="\x1b[2J", notes="\x1b[31m")
    res = run("replay", str(trace), "--json")
    assert res.exit_code == 0
    res = run("report", str(trace), "-o", str(tmp_path / "out"), "--junit", str(tmp_path / "j.xml"),
              "--jsonl", str(tmp_path / "r.jsonl"))
    assert res.exit_code == 0, res.output
    for text in (res.output, (tmp_path / "out" / "report.txt").read_text(), (tmp_path / "j.xml").read_text(),
                 (tmp_path / "r.jsonl").read_text(), (tmp_path / "out" / "results.jsonl").read_text()):
        assert not RAW_CONTROL.search(text)
        assert "\u202e" not in text
    # the summary on stdout names only runs that are not PASS; report.txt lists every run by name
    assert "\\x1b]0;PWNED\\x07name" in (tmp_path / "out" / "report.txt").read_text()


def test_a_megabyte_name_is_capped(tmp_path: Path) -> None:
    trace = with_meta(wd_write(tmp_path / "t.parquet"), tmp_path / "t2.parquet", name="n" * 1_000_000)
    res = run("report", str(trace), "-o", str(tmp_path / "out"))
    assert res.exit_code == 0
    assert max(len(x) for x in res.output.splitlines()) < 400
    listed = (tmp_path / "out" / "report.txt").read_text()  # every run by name (stdout names only non-PASS runs)
    assert max(len(x) for x in listed.splitlines()) < 400
    assert "\u2026" in listed


def test_printable_escapes_controls_and_caps() -> None:
    assert printable("a\x1b[2Jb\n\x85") == "a\\x1b[2Jb\\x0a\\x85"
    assert printable("x" * 1000, 10) == "x" * 9 + "\u2026"
    assert printable("caf\udce9") == "caf\\xe9"  # a file name byte that is not UTF-8


def test_a_file_name_with_a_newline_keeps_the_error_on_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "a\nb\x1b.parquet"
    bad.write_bytes(b"PAR1 not really")
    one_line_error(run("replay", str(bad)), "a\\x0ab\\x1b.parquet")


# --------------------------------------------------------------------------- importers
FTRACE_OK = " qemu-system-x86-1234  [001] d.... 100.000001: kvm_msr: msr_write 6e1 = 0x8"


def test_ftrace_counts_lines_as_grep_does(tmp_path: Path) -> None:
    """Form feed, NEL and a lone CR stay inside their line: the bad line is line 4."""
    cap = tmp_path / "cap.txt"
    cap.write_bytes((FTRACE_OK + "\x0c\n" + FTRACE_OK + "\r\n").encode() + "junk\x85more\rstill line 3\n".encode()
                    + b"this is not a trace line\n")
    line = one_line_error(run("import", "ftrace", str(cap), "-o", str(tmp_path / "o.parquet")), "cap.txt")
    assert ": line 3: " in line  # line 3 is the first bad one; NEL and CR did not start new lines
    assert not (tmp_path / "o.parquet").exists()


def test_ftrace_pathological_lines_are_rejected_not_backtracked(tmp_path: Path) -> None:
    """A 64,000-blank line took 37 s in the old pattern (quadratic); now it is one linear pass."""
    cap = tmp_path / "cap.txt"
    cap.write_text(FTRACE_OK + "\n" + " " * 64_000 + "x\n" + "a-1 " * 16_000 + "\n")
    line = one_line_error(run("import", "ftrace", str(cap), "-o", str(tmp_path / "o.parquet")), "cap.txt", "line 2")
    assert "not a trace line" in line


def test_skip_bad_names_what_it_skipped_on_stderr(tmp_path: Path) -> None:
    cap = tmp_path / "cap.txt"
    cap.write_text(FTRACE_OK + "\nnot a line\n" + FTRACE_OK + "\nalso \x1b[2J bad\n")
    res = run("import", "ftrace", str(cap), "-o", str(tmp_path / "o.parquet"), "--skip-bad")
    assert res.exit_code == 0, res.output
    assert "skipped 2 malformed line(s)" in res.stderr
    assert "line 2:" in res.stderr and "line 4:" in res.stderr
    assert not RAW_CONTROL.search(res.stderr)


def test_cpu_features_are_checked_on_import(tmp_path: Path) -> None:
    cap = tmp_path / "cap.txt"
    cap.write_text(FTRACE_OK + "\n")
    out = tmp_path / "o.parquet"
    res = run("import", "ftrace", str(cap), "-o", str(out), "--cpu-features", "bogus")
    assert res.exit_code == 2 and "--cpu-features" in res.stderr and "bogus" in res.stderr
    assert not out.exists()


def test_pkvm_import_of_many_handlers_is_linear(tmp_path: Path) -> None:
    """100,000 lines took 575 s (the total was summed once per handler); the table now sums once."""
    cap = tmp_path / "vm.txt"
    cap.write_text("".join(f"Host: h{i} 10 cycles 100 each-handler-cycle 10\n" for i in range(100_000)))
    res = run("import", "pkvm-vmexit-trace", str(cap), "-o", str(tmp_path / "o.json"))
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "o.json").read_text())["total_count"] == 1_000_000


def test_pkvm_line_numbers_ignore_form_feeds_and_nel(tmp_path: Path) -> None:
    cap = tmp_path / "vm.txt"
    cap.write_bytes("Host: a 1 cycles 2 each-handler-cycle 2\n\x0cjunk\x85x\rmore\nHost: c x\n".encode())
    one_line_error(run("import", "pkvm-vmexit-trace", str(cap)), "vm.txt", "line 3")


# --------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("cmd", [
    ["report", str(GOOD), "-o", "{bad}"], ["report", str(GOOD), "--junit", "{bad}"],
    ["report", str(GOOD), "--jsonl", "{bad}"],
    ["compare", str(GOOD), "--policy", "hw", "--against", "kvm-v7", "--html", "{bad}"],
    ["generate", "--seed", "1", "--events", "5", "-o", "{bad}"],
    ["shrink", str(GOOD), "--policy", "hw", "-o", "{bad}"],
    ["fuzz", "--policy", "hw", "--against", "kvm-v7", "--iterations", "1", "-o", "{bad}"],
    ["import", "ftrace", str(GOOD), "-o", "{bad}"], ["import", "pkvm-vmexit-trace", str(GOOD), "-o", "{bad}"],
    ["record", "qemu", "-o", "{bad}"], ["record", "kvm", "-o", "{bad}"],
])
def test_unwritable_outputs_are_exit_2_before_any_work(tmp_path: Path, cmd: list[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    bad = str(blocker / "out")
    res = run(*[c.replace("{bad}", bad) for c in cmd])
    one_line_error(res, bad, "is not a folder")


def test_report_folder_is_replaced_as_a_whole(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = wd_write(tmp_path / "c1" / "first.parquet", name="first-run")
    assert run("report", str(first), "-o", str(out)).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    second = wd_write(tmp_path / "c2" / "second.parquet", name="second-run")
    real = corpus.write_text_atomic
    calls = {"n": 0}

    def dies_after_one(path: object, text: str) -> object:  # killed after writing the first file
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(path, text)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(corpus, "write_text_atomic", dies_after_one)
        run("report", str(second), "-o", str(out))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old report, untouched
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == []  # no half-built folder
    assert run("report", str(second), "-o", str(out)).exit_code == 0
    assert b"second-run" in (out / "report.txt").read_bytes() and b"first-run" not in (out / "index.html").read_bytes()


def test_report_refuses_a_folder_holding_other_files(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    one_line_error(run("report", str(GOOD), "-o", str(tmp_path)), "holds files that are not a report")
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_stale_build_folders_of_killed_reports_are_removed(tmp_path: Path) -> None:
    dead_pid = 4_000_000  # above pid_max: no such process
    stale = tmp_path / f".out.{dead_pid}.abcdefgh.new"
    stale.mkdir()
    (stale / "index.html").write_text("half")
    assert run("report", str(GOOD), "-o", str(tmp_path / "out")).exit_code == 0
    assert not stale.exists()


def test_scratch_folders_of_killed_recorders_are_removed(tmp_path: Path) -> None:
    from difftest.capture.scratch import scratch_dir

    stale = tmp_path / "pksdt-guest-4000000-abcdefgh"
    stale.mkdir()
    with scratch_dir("guest", tmp_path) as t:
        assert t.is_dir() and not stale.exists()
    assert not t.exists()


def _killing_run_task(task: corpus._Task) -> object:
    """A worker that dies (SIGKILL) on one trace; workers must find it by name, so it lives here."""
    if task.path.endswith("t2.parquet"):
        os.kill(os.getpid(), signal.SIGKILL)
    return _REAL_RUN_TASK(task)


def test_a_dead_worker_does_not_hang_report_jobs(tmp_path: Path) -> None:
    traces = [wd_write(tmp_path / f"t{i}.parquet", name=f"t{i}") for i in range(4)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(corpus, "_run_task", _killing_run_task)
        with pytest.raises(InputError) as err:
            corpus.run_corpus(traces, ["hw"], None, jobs=2, progress=False)
    assert err.value.path.endswith("t2.parquet")
    assert "died (SIGKILL)" in str(err.value)


# --------------------------------------------------------------------------- Parquet footers
def _edited(src: Path, dest: Path, edit: object) -> Path:
    body, footer = pt.read_footer(src)
    edit(footer)  # type: ignore[operator]
    pt.write_file(dest, body, footer)
    return dest


@pytest.mark.parametrize("column", ["exp_result", "value", "msr"])
def test_a_lying_null_count_does_not_change_the_verdict(tmp_path: Path, column: str) -> None:
    """Footer says a column with values is all null: the column is decoded anyway, same verdict."""
    src = REPO / "traces" / "bugs" / "B14-nested-restore-stale-l1-pkrs.parquet"
    md = pq.ParquetFile(src).metadata
    col = pq.ParquetFile(src).schema_arrow.names.index(column)
    rows = md.row_group(0).num_rows

    def lie(footer: list) -> None:  # type: ignore[type-arg]
        pt.field(pt.column_statistics(footer, 0, col), 3)[2] = rows

    edited = _edited(src, tmp_path / "lie.parquet", lie)
    assert pq.ParquetFile(edited).metadata.row_group(0).column(col).statistics.null_count == rows
    a, b = run("replay", str(src), "--json"), run("replay", str(edited), "--json")
    assert a.exit_code == b.exit_code
    ja, jb = json.loads(a.output), json.loads(b.output)
    assert (ja["divergences"], ja["compared"]) == (jb["divergences"], jb["compared"])


@pytest.mark.parametrize("how", ["duplicate-field", "list-longer-than-footer", "nested-structs", "length-past-file"])
def test_damaged_footers_are_exit_2(tmp_path: Path, how: str) -> None:
    dest = tmp_path / "bad.parquet"
    if how == "length-past-file":
        data = bytearray(GOOD.read_bytes())
        data[-8:-4] = (len(data) * 2).to_bytes(4, "little")
        dest.write_bytes(bytes(data))
    elif how == "list-longer-than-footer":  # field 1: list<i32> claiming 2**32-1 entries, in 6 bytes
        body, _ = pt.read_footer(GOOD)
        pt.write_file(dest, body, bytes([0x19, 0xF5, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x02, 0x04, 0x00]))
    else:
        def edit(footer: list) -> None:  # type: ignore[type-arg]
            if how == "duplicate-field":
                footer.insert(1, list(footer[0]))
            else:
                inner: list = []  # type: ignore[type-arg]
                for _ in range(2000):
                    inner = [[1, pt.STRUCT, inner]]
                footer.append([99, pt.STRUCT, inner])

        sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
        _edited(GOOD, dest, edit)
    for cmd in (["replay", str(dest)], ["report", str(dest)]):
        one_line_error(run(*cmd), "bad.parquet", "not a readable Parquet file")


def test_the_parquet_librarys_death_is_the_files_error(tmp_path: Path) -> None:
    """Where the library still aborts, it does so in the helper process: exit 2 naming the file."""
    import pyarrow.parquet as pqm

    from difftest.trace import parquet_footer

    victim = tmp_path / "abort-me.parquet"
    victim.write_bytes(GOOD.read_bytes())
    real = pqm.ParquetFile

    def aborting(path: object, *a: object, **k: object) -> object:
        if str(path).endswith("abort-me.parquet"):
            os.abort()
        return real(path, *a, **k)

    probe = parquet_footer._FooterProbe()  # a new helper, forked while the library is patched
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pqm, "ParquetFile", aborting)
        mp.setattr(parquet_footer, "_PROBE", probe)
        with pytest.raises(InputError) as err:
            parquet_footer.parse_in_child(str(victim))
        assert "SIGABRT" in str(err.value) and "abort-me.parquet" in str(err.value)
        parquet_footer.parse_in_child(str(GOOD))  # the next file gets a fresh helper
    probe._stop()


# --------------------------------------------------------------------------- baselines
@pytest.mark.parametrize(("text", "fragment"), [
    ("[" * 100_000, "nested too deeply"),
    ('{"divergences": ' + "9" * 5001 + "}", "not a usable JSON value"),
])
def test_hostile_baselines_are_exit_2(tmp_path: Path, text: str, fragment: str) -> None:
    b = tmp_path / "b.jsonl"
    b.write_text(text)
    one_line_error(run("report", str(GOOD), "--baseline", str(b)), "b.jsonl", "line 1", fragment)


# --------------------------------------------------------------------------- kept inputs
FIXTURES = sorted(p for d in (HOSTILE, HOSTILE_CLI) if d.is_dir() for p in d.iterdir() if p.is_file())


def _command_for(p: Path, tmp: Path) -> list[str]:
    if p.suffix == ".parquet":
        return ["replay", str(p)]
    if p.suffix == ".toml":
        return ["replay", str(GOOD), "--policy", str(p)]
    if p.suffix == ".jsonl":
        return ["report", str(GOOD), "--baseline", str(p)]
    if p.name.startswith("pkvm"):
        return ["import", "pkvm-vmexit-trace", str(p)]
    return ["import", "ftrace", str(p), "-o", str(tmp / "o.parquet")]


# (u64-top-page-fast-engine.parquet was found by the campaign, seed 0: the fast engine's u64 page crash, now fixed)
@pytest.mark.parametrize("fixture", FIXTURES, ids=[f"{p.parent.name}/{p.name}" for p in FIXTURES])
def test_every_kept_hostile_input_is_handled(tmp_path: Path, fixture: Path) -> None:
    res = run(*_command_for(fixture, tmp_path))
    assert res.exit_code in (0, 1, 2), (res.exit_code, res.output, res.exception)
    assert isinstance(res.exception, SystemExit) or res.exception is None, res.exception
    assert not RAW_CONTROL.search(res.output)
    if res.exit_code == 2:
        one_line_error(res, printable(str(fixture), 400)[:60])


# --------------------------------------------------------------------------- the campaign, a slice
@pytest.mark.e2e
def test_campaign_slice_finds_nothing(tmp_path: Path) -> None:
    """A seeded slice of bench/fuzz_inputs.py over every class: no traceback, abort, hang or leak."""
    sys.path.insert(0, str(REPO / "bench"))
    import fuzz_inputs

    tally = fuzz_inputs.run(160, 23, list(fuzz_inputs.CLASSES), 2, 60.0, tmp_path / "kept")
    assert sum(tally.by_class.values()) == 160
    assert not tally.problems, (tally.problems, tally.kept)


# --------------------------------------------------------------------------- the HTML page in a browser
RETITLE = "\x1b]0;PWNED\x07</title><title>PWNED</title><style>body{display:none}*{color:red!important}</style>"


@pytest.mark.e2e
def test_a_hostile_name_cannot_retitle_or_restyle_the_page(tmp_path: Path) -> None:
    """Chromium loads a report whose trace name, notes and policy try to close <title>, add a <style>
    and send a terminal title sequence: the page keeps its own title, stylesheet and visible body."""
    import time

    from test_report_browser import DevToolsPipe, _chromium, _problems

    binary = _chromium()
    if binary is None:
        pytest.skip("Chromium is not installed (Debian package 'chromium'; .ci/run installs it)")
    trace = with_meta(wd_write(tmp_path / "t.parquet"), tmp_path / "hostile.parquet", name=RETITLE,
                      description=RETITLE, notes=RETITLE)
    out = tmp_path / "report"
    assert run("report", str(trace), "--policy", "hw", "-o", str(out)).exit_code == 0
    clean = tmp_path / "clean-report"
    assert run("report", str(wd_write(tmp_path / "c" / "clean.parquet")), "--policy", "hw", "-o", str(clean)).exit_code == 0

    def inspect(page: Path) -> dict[str, object]:
        cdp = DevToolsPipe(binary, tmp_path / f"profile-{page.parent.name}")
        try:
            target = next(t for t in cdp.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
            session = cdp.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})["sessionId"]
            for domain in ("Runtime", "Log", "Network", "Page"):
                cdp.send(f"{domain}.enable", session=session)
            cdp.events.clear()
            cdp.send("Page.navigate", {"url": page.as_uri()}, session=session)
            cdp.wait_for("Page.loadEventFired")
            time.sleep(0.3)

            def js(expr: str) -> object:
                res = cdp.send("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=session)
                assert "exceptionDetails" not in res, res
                return res["result"].get("value")

            return {
                "title": js("document.title"),
                "titles": js("document.querySelectorAll('title').length"),
                "styles": js("document.querySelectorAll('style, link[rel=stylesheet]').length"),
                "css": js("Array.from(document.styleSheets).map(s => s.cssRules.length).join(',')"),
                "body_display": js("getComputedStyle(document.body).display"),
                "text": js("document.body.innerText"),
                "problems": _problems(cdp.events),
            }
        finally:
            cdp.close()

    got, ref = inspect(out / "index.html"), inspect(clean / "index.html")
    assert got["problems"] == [], got["problems"]
    assert got["title"] == ref["title"] == "pks-difftest report: PASS, 1 passed (1 runs)"
    assert (got["titles"], got["styles"], got["css"]) == (ref["titles"], ref["styles"], ref["css"])
    assert got["body_display"] == "block"
    assert "</title><title>PWNED</title>" in str(got["text"])  # shown as text
    assert "\x1b" not in str(got["text"]) and "\\x1b]0;PWNED\\x07" in str(got["text"])
