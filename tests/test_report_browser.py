"""The report page in a real browser: headless Chromium driven over the DevTools protocol.

Chromium runs with ``--remote-debugging-pipe`` (commands on fd 3, replies on fd 4, NUL-separated
JSON), so nothing listens on a port.  The test fails on any console error, uncaught exception,
dialog or network request that is not the page itself, checks that hostile trace metadata shows
as text (and injected no element), and saves screenshots under ``artifacts/``.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from report_corpus import HOSTILE_STRINGS, build_corpus

from difftest.report.html import FILTER_SCRIPT

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
    "--remote-debugging-pipe",
)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class DevToolsPipe:
    """A minimal DevTools-protocol client over Chromium's debugging pipe."""

    def __init__(self, binary: str, profile_dir: Path) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire_fds() -> None:  # runs in the child: the pipe ends become fds 3 and 4 (inheritable)
            high_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)  # out of the way of 3 and 4 first
            high_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=wire_fds, close_fds=False,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from Chromium")
            ready, _, _ = select.select([self._from_chrome], [], [], left)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the debugging pipe")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict[str, Any]:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        for ev in self.events:
            if ev.get("method") == method:
                return ev
        deadline = time.monotonic() + timeout
        while True:
            ev = self._read_message(deadline)
            self.events.append(ev)
            if ev.get("method") == method:
                return ev

    def close(self) -> str:
        with contextlib.suppress(Exception):  # already gone is fine
            self.send("Browser.close", timeout=5)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        os.close(self._to_chrome)
        os.close(self._from_chrome)
        return err.decode(errors="replace")


def _problems(events: list[dict[str, Any]]) -> list[str]:
    """Console errors, exceptions, dialogs and requests for anything but the page itself."""
    out = []
    for ev in events:
        m, p = ev.get("method"), ev.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
            out.append(f"console {p['type']}: {p.get('args')}")
        elif m == "Runtime.exceptionThrown":
            out.append(f"exception: {p.get('exceptionDetails', {}).get('text')}")
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
            out.append(f"log {p['entry']['level']}: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        elif m == "Page.javascriptDialogOpening":
            out.append(f"dialog: {p.get('message')}")
        elif m == "Network.requestWillBeSent":
            url = p.get("request", {}).get("url", "")
            if not (url.startswith("file://") and url.endswith("/index.html")) and not url.startswith("data:"):
                out.append(f"request: {url}")
    return out


@pytest.mark.e2e
def test_report_page_in_chromium(tmp_path: Path) -> None:
    binary = _chromium()
    if binary is None:
        pytest.skip("Chromium is not installed (Debian package 'chromium'; .ci/run installs it)")
    corpus = tmp_path / "corpus"
    facts = build_corpus(corpus)
    paths = [str(corpus)]
    arch = REPO / "traces" / "arch"
    if any(arch.glob("*.parquet")):
        paths.append(str(arch))
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "difftest.cli", "report", *paths, "--policy", "hw", "-o", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 1, proc.stderr  # the hostile trace diverges
    page = out / "index.html"
    assert page.is_file()

    cdp = DevToolsPipe(binary, tmp_path / "chromium-profile")
    try:
        target = next(t for t in cdp.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        session = cdp.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            cdp.send(f"{domain}.enable", session=session)
        cdp.send("Emulation.setDeviceMetricsOverride",
                 {"width": 1400, "height": 1800, "deviceScaleFactor": 1, "mobile": False}, session=session)
        cdp.events.clear()
        cdp.send("Page.navigate", {"url": page.as_uri()}, session=session)
        cdp.wait_for("Page.loadEventFired")
        time.sleep(0.3)  # let late console messages arrive

        def js(expr: str) -> Any:
            res = cdp.send("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=session)
            assert "exceptionDetails" not in res, res
            return res["result"].get("value")

        ARTIFACTS.mkdir(exist_ok=True)
        shot = cdp.send("Page.captureScreenshot", {"format": "png"}, session=session)
        (ARTIFACTS / "report-top.png").write_bytes(base64.b64decode(shot["data"]))
        height = min(int(js("document.documentElement.scrollHeight")), 12000)
        full = cdp.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                   "clip": {"x": 0, "y": 0, "width": 1400, "height": height, "scale": 1}},
                        session=session)
        (ARTIFACTS / "report-full.png").write_bytes(base64.b64decode(full["data"]))

        problems = _problems(cdp.events)
        text = js("document.body.innerText")
        scripts = js("Array.from(document.querySelectorAll('script')).map(s => s.textContent)")
        imgs = js("document.querySelectorAll('img, iframe, object, embed').length")
        bolds = js("Array.from(document.querySelectorAll('b')).filter(b => b.textContent === 'not bold').length")
        title = js("document.title")
        svgs = js("document.querySelectorAll('svg').length")
        diverge_marks = js("document.querySelectorAll('svg .m-div').length")
        first_rule = js("Array.from(document.querySelectorAll('.first .rule')).map(e => e.textContent)")
    finally:
        stderr = cdp.close()
    assert not problems, "\n".join(problems) + "\n" + stderr[-2000:]
    # Hostile strings are shown as text, character for character, and injected nothing.
    for s in HOSTILE_STRINGS:
        assert s.replace("  ", " ") in text, s
    assert scripts == [FILTER_SCRIPT]  # the filters, and nothing a trace injected
    assert imgs == 0
    assert bolds == 0
    assert title.startswith("pks-difftest report: FAIL")
    # The diverging run in detail: its timeline with the diverging event highlighted, its rule named.
    assert svgs >= 1
    assert diverge_marks >= 1
    assert "ARCH.RIGHTS" in first_rule
    assert f"event {facts['diverging_event']}" in text
