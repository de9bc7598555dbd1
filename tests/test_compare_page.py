"""``difftest compare --html`` (issue 19 item 5): sorted by differences, both sides' values in the
first-difference row, both policies' timelines one above the other.

B16 (sources/kvm_pks_series.md §11 B16) differs between kvm-v7 and kvm-v7r from the first host
write of the host PKRS (0x55): kvm-v7 keeps it in vCPU 0's observed PKRS, kvm-v7r shows 0; the
other bug traces used here (B1, B3) behave the same under both.
"""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from difftest.cli import main

ROOT = Path(__file__).resolve().parents[1]
BUGS = ROOT / "traces" / "bugs"


def test_compare_page_sorted_with_values_and_two_timelines(tmp_path: Path) -> None:
    page = tmp_path / "c.html"
    traces = [str(BUGS / f"{n}.parquet") for n in ("B1-pdpte-reload", "B3-mmu-role-pks", "B16-cpuid-while-l2-active")]
    res = CliRunner().invoke(main, ["compare", *traces, "--policy", "kvm-v7", "--against", "kvm-v7r", "--html", str(page)])
    assert res.exit_code == 1, res.output
    text = page.read_text()
    sections = re.findall(r'<details class="trace[^"]*" id="c\d+" open>\s*<summary class="head"><h3>([^<]+)</h3>', text)
    assert sections[0] == "B16-cpuid-while-l2-active"  # the one that differs comes first
    first = text[text.index("B16-cpuid-while-l2-active</h3>"):]
    first = first[:first.index("</details>")]
    # the first difference's row names the state and both values (it used to read "ok | ok")
    assert re.search(r"<br>vcpu0\.pkrs = 0x55</td>.*?<br>vcpu0\.pkrs = 0x0</td>", first, re.S)
    assert first.count("<svg") == 2 and first.index("<b>A</b>") < first.index("<b>B</b>")
