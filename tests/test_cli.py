"""The ``difftest`` command line: listing commands, replay (text and JSON), report, and usage errors.

In-process tests use click's CliRunner and are fast; the ones that spawn the installed command
as a subprocess (what a user or CI sees, stderr and exit status included) are marked e2e.
Exit codes are the house rule: 0 no divergence, 1 divergence, 2 bad input or usage.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from difftest import TraceBuilder
from difftest.cli import main
from difftest.trace.schema import render_markdown
from difftest.verdict.profiles import PROFILES
from reference_model.policies import POLICIES

PKRS = 0x6E1
SUP = 0x4000_0000


def passing_trace(path: Path) -> Path:
    """WD blocks a CR0.WP=1 supervisor write: 0x23 (SPEC ARCH.RIGHTS, probe 09)."""
    t = TraceBuilder("wd-write", "WD blocks a supervisor write with WP=1", policy="hw", long_mode=True)
    t.cpuid(pks=True).cr4(pks=True).wrmsr(PKRS, 0x8)
    t.access(SUP, key=1, write=True).expect_pf(0x23, rule="ARCH.RIGHTS")
    t.snapshot("vcpu0.pkrs", 0x8)
    return t.write(path)


def diverging_trace(path: Path) -> Path:
    """Claims QEMU's 0x07 for a CPL3 write with WD, where SPEC ARCH.PFEC.CPL3 says 0x27: one divergence."""
    t = TraceBuilder("cpl3-wd-qemu-style", "CPL3 write to a supervisor page with WD", policy="hw", long_mode=True)
    t.cpuid(pks=True).cr4(pks=True).wrmsr(PKRS, 0x8)
    t.access(SUP, key=1, write=True, cpl=3).expect_pf(0x07, rule="ARCH.PFEC.CPL3")
    t.snapshot("vcpu0.pkrs", 0x8)
    return t.write(path)


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def assert_one_line_error(res: Result, *fragments: str) -> str:
    assert res.exit_code == 2, res.output
    assert isinstance(res.exception, SystemExit)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("difftest: error: ")
    assert "Traceback" not in res.output
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


# --- listing commands ------------------------------------------------------------------------

def test_schema_prints_the_rendered_format() -> None:
    res = run("schema")
    assert res.exit_code == 0
    assert res.stdout.startswith("# pks-difftest trace format v1\n")
    assert render_markdown() in res.stdout


def test_policies_lists_every_registered_policy() -> None:
    res = run("policies")
    assert res.exit_code == 0
    lines = res.stdout.splitlines()
    assert len(lines) == len(POLICIES)
    for line, (name, p) in zip(lines, POLICIES.items(), strict=True):
        assert line.startswith(name + " ")
        assert p.description in line and f"[{p.source}]" in line
    assert any(line.startswith("hw ") for line in lines)


def test_profiles_lists_masks_with_rule_and_reason() -> None:
    res = run("profiles")
    assert res.exit_code == 0
    for name, prof in PROFILES.items():
        assert f"{name}: {prof.description}" in res.stdout
        for m in prof.masks:
            assert f"  - {m.name} ({m.rule}): {m.reason}" in res.stdout
    assert "qemu-cpl3-no-pk (ARCH.PFEC.CPL3)" in res.stdout


# --- replay ----------------------------------------------------------------------------------

def test_replay_pass_exits_0(tmp_path: Path) -> None:
    res = run("replay", str(passing_trace(tmp_path / "p.parquet")), "--policy", "hw")
    assert res.exit_code == 0, res.output
    assert "0 divergences" in res.stdout
    assert res.stderr == ""


def test_replay_divergence_exits_1_and_names_the_rule(tmp_path: Path) -> None:
    path = diverging_trace(tmp_path / "d.parquet")
    res = run("replay", str(path), "--policy", "hw")
    assert res.exit_code == 1, res.output
    assert "1 divergence," in res.stdout
    assert "first divergence at event 8" in res.stdout  # 3 setup rows, cpuid, cr4, cr3, wrmsr, map, access
    assert "ARCH.PFEC.CPL3" in res.stdout
    assert "pfec: expected 0x7, got 0x27" in res.stdout


def test_replay_qemu_profile_masks_the_documented_deviation(tmp_path: Path) -> None:
    """The qemu profile hides exactly the PK bit of a CPL3 access (pks_semantics deviation 1)."""
    path = diverging_trace(tmp_path / "d.parquet")
    res = run("replay", str(path), "--policy", "hw", "--profile", "qemu")
    assert res.exit_code == 0, res.output
    assert "masked by qemu-cpl3-no-pk: 1" in res.stdout


JSON_KEYS = {
    "trace", "name", "policy", "profile", "passed", "rows", "events", "compared", "snapshots", "not_modelled",
    "divergences", "masked", "masked_by", "first_divergence", "first_rule", "first_rule_text", "context",
    "later_divergences", "counters", "rule_hits", "meta",
}
ROW_KEYS = {"index", "seq", "event", "expected", "actual", "status", "rules", "primary_rule", "diffs", "masked",
            "consequential", "note"}


def test_replay_json_pass(tmp_path: Path) -> None:
    path = passing_trace(tmp_path / "p.parquet")
    res = run("replay", str(path), "--policy", "hw", "--json")
    assert res.exit_code == 0
    doc = json.loads(res.stdout)
    assert set(doc) >= JSON_KEYS
    assert doc["passed"] is True and doc["divergences"] == 0 and doc["first_divergence"] is None
    assert doc["policy"] == "hw" and doc["profile"] == "strict" and doc["trace"] == str(path)
    assert doc["compared"] == 2 and doc["snapshots"] == 1
    assert doc["rule_hits"]["ARCH.RIGHTS"] >= 1
    assert doc["meta"]["name"] == "wd-write"


def test_replay_json_divergence(tmp_path: Path) -> None:
    path = diverging_trace(tmp_path / "d.parquet")
    res = run("replay", str(path), "--policy", "hw", "--json")
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert set(doc) >= JSON_KEYS
    assert doc["passed"] is False and doc["divergences"] == 1
    assert doc["first_rule"] == "ARCH.PFEC.CPL3"
    first = doc["first_divergence"]
    assert set(first) >= ROW_KEYS
    assert first["index"] == 8 and first["status"] == "diverge"
    assert first["diffs"] == [{"field": "pfec", "expected": 0x07, "actual": 0x27}]
    assert "ARCH.PFEC.CPL3" in first["rules"]
    assert any(r["index"] == 9 for r in doc["context"])  # context after the divergence (the snapshot)


def test_replay_with_a_variant_file(tmp_path: Path) -> None:
    variant = tmp_path / "my-hw.toml"
    variant.write_text('base = "hw"\nname = "my-hw"\ndescription = "hw, renamed"\n', encoding="utf-8")
    res = run("replay", str(passing_trace(tmp_path / "p.parquet")), "--policy", str(variant), "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["policy"] == "my-hw"


# --- report ----------------------------------------------------------------------------------

def test_report_writes_report_and_results_exit_1_on_divergence(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    passing_trace(corpus / "a" / "pass.parquet")
    diverging_trace(corpus / "b" / "fail.parquet")
    out = tmp_path / "out"
    res = run("report", str(corpus), "-o", str(out), "--policy", "hw")
    assert res.exit_code == 1, res.output
    assert "2 runs, 1 failed, 1 passed" in res.stdout
    text = (out / "report.txt").read_text(encoding="utf-8")
    assert "FAIL  cpl3-wd-qemu-style" in text and "PASS  wd-write" in text
    assert "ARCH.PFEC.CPL3" in text  # the failing run's detail names the rule
    results = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["name"]: r["passed"] for r in results} == {"wd-write": True, "cpl3-wd-qemu-style": False}
    assert all(set(r) >= JSON_KEYS for r in results)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")]  # atomic writes


def test_report_all_passing_exits_0(tmp_path: Path) -> None:
    passing_trace(tmp_path / "c" / "one.parquet")
    passing_trace(tmp_path / "c" / "two.parquet")
    res = run("report", str(tmp_path / "c"), "-o", str(tmp_path / "out"), "--policy", "hw")
    assert res.exit_code == 0, res.output
    assert "2 runs, 0 failed, 2 passed" in res.stdout
    assert len((tmp_path / "out" / "results.jsonl").read_text(encoding="utf-8").splitlines()) == 2


def test_report_bad_trace_in_corpus_exits_2(tmp_path: Path) -> None:
    passing_trace(tmp_path / "c" / "good.parquet")
    bad = tmp_path / "c" / "zz-bad.parquet"
    bad.write_bytes(b"not parquet")
    res = run("report", str(tmp_path / "c"), "-o", str(tmp_path / "out"))
    assert_one_line_error(res, str(bad), "not a readable Parquet file")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_report_empty_directory_exits_2(tmp_path: Path) -> None:
    assert_one_line_error(run("report", str(tmp_path)), "no *.parquet traces found")


def test_report_missing_path_exits_2(tmp_path: Path) -> None:
    assert_one_line_error(run("report", str(tmp_path / "nope")), str(tmp_path / "nope"), "no such file or directory")


# --- usage errors: unknown names, bad variant files -------------------------------------------

def test_unknown_policy_exits_2(tmp_path: Path) -> None:
    res = run("replay", str(passing_trace(tmp_path / "p.parquet")), "--policy", "kvm-v99")
    assert_one_line_error(res, "unknown policy 'kvm-v99'", "known: ", "hw")


def test_unknown_policy_in_report_exits_2(tmp_path: Path) -> None:
    passing_trace(tmp_path / "c" / "p.parquet")
    assert_one_line_error(run("report", str(tmp_path / "c"), "--policy", "nope"), "unknown policy 'nope'")


def test_unknown_profile_exits_2(tmp_path: Path) -> None:
    res = run("replay", str(passing_trace(tmp_path / "p.parquet")), "--policy", "hw", "--profile", "lenient")
    assert_one_line_error(res, "unknown profile 'lenient'", "strict", "qemu")


def test_missing_trace_exits_2(tmp_path: Path) -> None:
    assert_one_line_error(run("replay", str(tmp_path / "nope.parquet")), str(tmp_path / "nope.parquet"), "no such file")


BAD_VARIANTS = [
    ("syntax", 'base = "hw\n', "not valid TOML"),
    ("unknown-key", 'base = "hw"\ncolour = "red"\n', "unknown key 'colour'"),
    ("no-base", 'name = "x"\n', "'base' must name a registered policy"),
    ("base-not-string", "base = 7\n", "'base' must name a registered policy"),
    ("unknown-base", 'base = "kvm-v99"\n', "base: unknown policy 'kvm-v99'"),
    ("unknown-knob", 'base = "hw"\n[knobs]\nfrobnicate = true\n', "knobs.frobnicate: unknown knob for hw"),
    ("knobs-not-table", 'base = "hw"\nknobs = 3\n', "[knobs] must be a table"),
    ("name-not-string", 'base = "hw"\nname = 3\n', "name: expected a string"),
]


@pytest.mark.parametrize(("case", "text", "fragment"), BAD_VARIANTS, ids=[c[0] for c in BAD_VARIANTS])
def test_bad_variant_file_exits_2(tmp_path: Path, case: str, text: str, fragment: str) -> None:
    variant = tmp_path / f"{case}.toml"
    variant.write_text(text, encoding="utf-8")
    res = run("replay", str(passing_trace(tmp_path / "p.parquet")), "--policy", str(variant))
    assert_one_line_error(res, str(variant), fragment)


def test_variant_file_not_utf8_exits_2(tmp_path: Path) -> None:
    variant = tmp_path / "latin1.toml"
    variant.write_bytes(b'base = "hw"\nname = "caf\xe9"\n')
    res = run("replay", str(passing_trace(tmp_path / "p.parquet")), "--policy", str(variant))
    assert_one_line_error(res, str(variant), "not UTF-8")


def test_missing_variant_file_exits_2(tmp_path: Path) -> None:
    res = run("replay", str(passing_trace(tmp_path / "p.parquet")), "--policy", str(tmp_path / "gone.toml"))
    assert_one_line_error(res, "gone.toml", "no such policy variant file")


# --- end to end: the installed command in a subprocess ----------------------------------------

def difftest(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "difftest.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


@pytest.mark.e2e
@pytest.mark.parametrize("content", [b"", b"\x00\x01garbage" * 20], ids=["empty", "garbage"])
def test_e2e_bad_file_one_line_exit_2(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(content)
    proc = difftest("replay", str(bad))
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"difftest: error: {bad}: not a readable Parquet file")
    assert "Traceback" not in proc.stderr


@pytest.mark.e2e
def test_e2e_truncated_trace_exit_2(tmp_path: Path) -> None:
    data = passing_trace(tmp_path / "p.parquet").read_bytes()
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(data[: len(data) // 2])
    proc = difftest("replay", str(cut), "--policy", "hw")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.mark.e2e
def test_e2e_row_error_names_event_and_column(tmp_path: Path) -> None:
    t = TraceBuilder("bad-key", policy="hw", long_mode=True)
    t.cpuid(pks=True).map(SUP, key=1).access(SUP).expect_ok()
    path = t.write(tmp_path / "k.parquet")
    import pyarrow as pa
    import pyarrow.parquet as pq

    tb = pq.read_table(path)
    keys = tb.column("key").to_pylist()
    row = keys.index(1)
    keys[row] = 16
    pq.write_table(tb.set_column(tb.schema.get_field_index("key"), "key", pa.array(keys, pa.uint8())), path)
    proc = difftest("replay", str(path))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"difftest: error: {path}: event {row}: column 'key': value out of range (at most 15)"


@pytest.mark.e2e
def test_e2e_replay_json_and_exit_codes(tmp_path: Path) -> None:
    good = difftest("replay", str(passing_trace(tmp_path / "p.parquet")), "--json")
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["passed"] is True
    bad = difftest("replay", str(diverging_trace(tmp_path / "d.parquet")), "--json")
    assert bad.returncode == 1, bad.stderr
    doc = json.loads(bad.stdout)
    assert set(doc) >= JSON_KEYS and doc["first_rule"] == "ARCH.PFEC.CPL3"


@pytest.mark.e2e
def test_e2e_report_writes_outputs(tmp_path: Path) -> None:
    passing_trace(tmp_path / "c" / "p.parquet")
    diverging_trace(tmp_path / "c" / "d.parquet")
    proc = difftest("report", str(tmp_path / "c"), "-o", str(tmp_path / "out"), "--policy", "hw")
    assert proc.returncode == 1, proc.stderr
    assert (tmp_path / "out" / "report.txt").is_file()
    assert len((tmp_path / "out" / "results.jsonl").read_text(encoding="utf-8").splitlines()) == 2


@pytest.mark.e2e
def test_e2e_schema_command() -> None:
    proc = difftest("schema")
    assert proc.returncode == 0
    assert render_markdown() in proc.stdout


SUBCOMMANDS = {(): {"compare", "fuzz", "generate", "import", "policies", "profiles", "record", "replay", "report",
                    "schema", "shrink"},
               ("record",): {"kvm", "qemu"}, ("import",): {"ftrace", "pkvm-vmexit-trace"}}


@pytest.mark.parametrize("group", list(SUBCOMMANDS), ids=lambda g: " ".join(g) or "difftest")
def test_help_lists_every_subcommand(group: tuple[str, ...]) -> None:
    """Subcommands defined in their own modules (imported when used) are listed and run like the others."""
    res = run(*group, "--help")
    assert res.exit_code == 0, res.output
    listed = set()
    in_commands = False
    for line in res.output.splitlines():
        if line.strip() == "Commands:":
            in_commands = True
        elif in_commands and line.startswith("  ") and line.strip():
            listed.add(line.split()[0])
    assert listed == SUBCOMMANDS[group]
    for name in SUBCOMMANDS[group]:
        sub = run(*group, name, "--help")
        assert sub.exit_code == 0 and "Usage:" in sub.output, (name, sub.output)


@pytest.mark.e2e
def test_e2e_replay_does_not_import_the_recorders(tmp_path: Path) -> None:
    """`difftest replay` starts without the KVM recorder, the QEMU compiler, the importers or the generator."""
    trace = passing_trace(tmp_path / "p.parquet")
    code = ("import sys\nfrom difftest.cli import main\n"
            f"try:\n    main(['replay', {str(trace)!r}])\nexcept SystemExit as e:\n    code = e.code\n"
            "heavy = sorted(m for m in sys.modules if m.startswith(('difftest.capture', 'difftest.search',"
            " 'difftest.engine.fast.compare')))\n"
            "print(code, heavy)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "0 []"
