"""Open a report in headless Chromium and record what happened: plots drawn, requests, JS errors.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: commands
on fd 3, replies on fd 4, each a JSON message ended by a NUL byte), so no Python package beyond
the standard library is needed. Every other descriptor of this process is non-inheritable
(PEP 446), so only the two pipe ends reach Chromium. Host names resolve nowhere
(``--host-resolver-rules``), so a report that tried to reach the network would fail loudly as
well as show up in ``requests``.

Only the tests use it (tests/test_report.py and tests/test_report_large.py, as ``from browser
import ...``: pytest puts tests/ on sys.path), so it lives here rather than in the package; it was
also used once by hand to take the README screenshot (docs/report.md).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privdyn.errors import PrivdynError
from privdyn.store import atomic

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND", "--remote-debugging-pipe",
)
#: URL schemes a self-contained report may load (everything else counts as a network request).
LOCAL_SCHEMES = ("file:", "data:", "about:", "blob:", "chrome:", "devtools:")

#: Run in the page once it has loaded: every plotly div and whether it has drawn its SVG.
_PLOTS_JS = """JSON.stringify(Array.from(document.querySelectorAll('div.js-plotly-plot')).map(d => ({
  id: d.id, svg: d.querySelectorAll('.main-svg').length,
  points: d.querySelectorAll('.point, .heatmaplayer image, .bars path, .js-line').length})))"""


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageReport:
    """What a page did in the browser."""

    plots: list[dict[str, Any]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    title: str = ""
    probe: Any = None   # what the optional ``script`` returned

    @property
    def network_requests(self) -> list[str]:
        """Requests to anything but local files and inline data."""
        return [u for u in self.requests if not u.startswith(LOCAL_SCHEMES)]


class _Pipe:
    """A DevTools session over Chromium's debugging pipe (synchronous, events buffered)."""

    def __init__(self, proc: subprocess.Popen, write_fd: int, read_fd: int):
        self.proc, self.wfd, self.rfd = proc, write_fd, read_fd
        self.buf = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.rfd], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self.rfd, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium closed the DevTools pipe (exit code {self.proc.poll()})")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session is not None:
            msg["sessionId"] = self.session
        os.write(self.wfd, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"DevTools {method} failed: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method: str, timeout: float) -> bool:
        """Read events until ``method`` arrives (True) or the time is up (False)."""
        if any(e["method"] == method for e in self.events):
            return True
        deadline = time.monotonic() + timeout
        try:
            while True:
                ev = self._read_message(deadline)
                if "method" in ev:
                    self.events.append(ev)
                    if ev["method"] == method:
                        return True
        except TimeoutError:
            return False

    def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` (awaited when it is a promise); page errors raise."""
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in res:
            d = res["exceptionDetails"]
            raise RuntimeError(f"script failed: {d.get('exception', {}).get('description') or d.get('text')}")
        return res.get("result", {}).get("value")


def _errors(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for ev in events:
        p = ev.get("params", {})
        if ev["method"] == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            out.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
        elif ev["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console.error: " + " ".join(str(a.get("value", a.get("description", "")))
                                                    for a in p.get("args", [])))
        elif ev["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}".strip())
    return out


def _moved_up(fd: int, low: int = 10) -> int:
    """``fd`` duplicated to a number >= ``low`` (the original is closed)."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, low)
    os.close(fd)
    return high


def inspect_page(html: Path, screenshot: Path | None = None, width: int = 1280, height: int = 1600,
                 settle_s: float = 60.0, script: str | None = None, chromium: str | None = None) -> PageReport:
    """Load ``html`` from a file:// URL, wait until every plot has drawn, optionally take a
    screenshot (the top ``width`` x ``height`` CSS pixels) and run ``script`` in the page (a JS
    expression; a promise is awaited; its JSON value lands in ``probe``), after the screenshot.
    """
    exe = chromium or find_chromium()
    if exe is None:
        raise PrivdynError("Chromium is not installed: `apt-get install chromium` (Debian) to check reports "
                           "in a browser")
    cmd_r, cmd_w = os.pipe()   # we write commands, Chromium reads them on fd 3
    res_r, res_w = os.pipe()   # Chromium writes replies on fd 4, we read them
    # Chromium's ends move to fds >= 10 so that placing them on 3 and 4 cannot overwrite each other.
    cmd_r, res_w = _moved_up(cmd_r), _moved_up(res_w)
    with tempfile.TemporaryDirectory(prefix="privdyn-chromium-") as profile:
        args = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"]

        def place_pipe() -> None:  # in the child, before exec: the ends on 3 and 4, inheritable
            os.dup2(cmd_r, 3)
            os.dup2(res_w, 4)

        proc = subprocess.Popen(args, preexec_fn=place_pipe, close_fds=False, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(res_w)
        pipe = _Pipe(proc, cmd_w, res_r)
        try:
            return _drive(pipe, html, screenshot, width, height, settle_s, script)
        finally:
            os.close(cmd_w)
            try:
                proc.wait(timeout=10)  # closing the pipe makes Chromium exit
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            os.close(res_r)


def _drive(pipe: _Pipe, html: Path, screenshot: Path | None, width: int, height: int,
           settle_s: float, script: str | None) -> PageReport:
    targets = pipe.send("Target.getTargets")["targetInfos"]
    page = next(t for t in targets if t["type"] == "page")
    pipe.session = pipe.send("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Network", "Log"):
        pipe.send(f"{domain}.enable")
    pipe.send("Emulation.setDeviceMetricsOverride",
              {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    pipe.events.clear()
    pipe.send("Page.navigate", {"url": html.resolve().as_uri()})
    if not pipe.wait_event("Page.loadEventFired", settle_s):
        raise TimeoutError(f"{html} did not finish loading within {settle_s:.0f} s")
    deadline = time.monotonic() + settle_s
    plots: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        plots = json.loads(pipe.evaluate(_PLOTS_JS) or "[]")
        if plots and all(p["svg"] > 0 for p in plots):
            break
        time.sleep(0.2)
    report = PageReport(plots=plots, title=pipe.evaluate("document.title") or "")
    if screenshot is not None:
        shot = pipe.send("Page.captureScreenshot", {"format": "png"}, timeout=60)
        atomic.write_bytes(screenshot, base64.b64decode(shot["data"]))
    if script is not None:
        report.probe = pipe.evaluate(script)
    pipe.wait_event("Never.arrives", 0.3)  # collect the events still in flight
    report.requests = [e["params"]["request"]["url"] for e in pipe.events
                       if e["method"] == "Network.requestWillBeSent"]
    report.errors = _errors(pipe.events)
    return report
