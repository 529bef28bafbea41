"""Shared by the dashboard benchmarks: a headless chromium (Playwright) driving the real app.

"Home done" = the four metric cards and the three Plotly figures of Home are on the page. "Settled" =
the main area (its text and every Plotly figure's data) changed and then stayed the same for
``QUIET_S`` with no running indicator, stale element or skeleton; the time reported is that of the
LAST change (when the user saw the final picture), not the end of the quiet window. Times are wall-clock
seconds measured in this process from the click or navigation.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tests/app_server.py: start/stop a server as `make app` does

from app_server import start_app_server, stop_app_server  # noqa: E402

__all__ = [
    "start_app_server",
    "stop_app_server",
    "chromium",
    "open_home",
    "settle",
    "timed_until_settled",
    "goto_sidebar",
    "machine_load",
    "process_cpu_seconds",
]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-dev-shm-usage"]
TIMEOUT_MS = 240_000
PLOTS = ".js-plotly-plot"
_HOME_STATE_JS = """() => {
  const main = document.querySelector('[data-testid="stMain"]');
  const text = main ? main.innerText : '';
  return {
    title: [...document.querySelectorAll('h1')].some((h) => h.innerText.includes('RegLab')),
    placeholder: text.includes('Registering the sample pair'),
    metrics: document.querySelectorAll('[data-testid="stMetric"]').length,
    plots: document.querySelectorAll('.js-plotly-plot').length,
    running: !!document.querySelector('[data-testid="stStatusWidget"]'),
  };
}"""
QUIET_S = 0.8
# [hash of the main area's text + every Plotly figure's data, busy?]; busy = Streamlit's running widget,
# a stale (greyed) element or a loading skeleton is on the page.
_SIGNATURE_JS = """() => {
  const h = (s) => { let x = 2166136261; for (let i = 0; i < s.length; i++) { x ^= s.charCodeAt(i);
    x = Math.imul(x, 16777619); } return x >>> 0; };
  const main = document.querySelector('[data-testid="stMain"]');
  let s = main ? main.innerText : '';
  for (const gd of document.querySelectorAll('.js-plotly-plot')) {
    try { s += '|' + JSON.stringify(gd.data || []); } catch (e) { s += '|?'; }
  }
  const busy = !!(document.querySelector('[data-testid="stStatusWidget"]')
    || document.querySelector('[data-stale="true"]') || document.querySelector('[data-testid="stSkeleton"]'));
  return [h(s), busy];
}"""


@contextmanager
def chromium():
    """A headless chromium Browser (Debian's /usr/bin/chromium); one-line error when it is missing."""
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} not found: apt-get install -y chromium (or `make browser-deps`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def settle(page, timeout_ms: int = TIMEOUT_MS) -> None:
    """Wait until Streamlit's script run has finished (no 'Running' status, no skeleton)."""
    page.wait_for_function(
        "() => { const w = document.querySelector('[data-testid=\"stStatusWidget\"]');"
        " return !w || !w.innerText.includes('Running'); }",
        timeout=timeout_ms,
    )
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stSkeleton\"]')", timeout=timeout_ms
    )


def timed_until_settled(
    page, action, quiet_s: float = QUIET_S, timeout_s: float = TIMEOUT_MS / 1000
) -> float:
    """Run ``action()`` (a click, a key press) and return the seconds until the page settled after it
    (see the module docstring). Raises TimeoutError when nothing changed or it never settled."""
    before, _ = page.evaluate(_SIGNATURE_JS)
    t0 = time.perf_counter()
    action()
    last_sig, last_change = before, None
    while time.perf_counter() - t0 < timeout_s:
        sig, busy = page.evaluate(_SIGNATURE_JS)
        now = time.perf_counter()
        if sig != last_sig:
            last_sig, last_change = sig, now
        if last_change is not None and not busy and now - last_change >= quiet_s:
            return last_change - t0
        page.wait_for_timeout(40)
    raise TimeoutError(f"the page did not change and settle within {timeout_s:.0f} s")


def goto_sidebar(page, label: str) -> float:
    """Click the sidebar link ``label``; seconds until the new page settled."""
    link = page.locator('[data-testid="stSidebar"] [data-testid="stPageLink"]').get_by_text(label, exact=True)
    return timed_until_settled(page, link.click)


def open_home(page, url: str, shots: Path | None = None, poll_ms: int = 50) -> dict:
    """Navigate to Home and time the milestones (seconds from the start of the navigation).

    Returns ``{"title_s", "placeholder_s" (None if never seen), "home_done_s", "busy_seen"}``; with
    ``shots`` set, screenshots are saved at title paint, placeholder paint and Home done.
    """
    t0 = time.perf_counter()
    page.goto(url, wait_until="commit")
    out: dict = {"title_s": None, "placeholder_s": None, "home_done_s": None, "busy_seen": False}
    deadline = t0 + TIMEOUT_MS / 1000
    while time.perf_counter() < deadline:
        state = page.evaluate(_HOME_STATE_JS)  # one snapshot: the milestones are compared at one instant
        now = time.perf_counter() - t0
        new = [k for k in ("title", "placeholder") if state[k] and out[f"{k}_s"] is None]
        for key in new:
            out[f"{key}_s"] = now
        out["busy_seen"] = out["busy_seen"] or state["running"]
        if state["metrics"] >= 4 and state["plots"] >= 3:
            out["home_done_s"] = now
            break
        for key in new if shots else ():  # after the times are taken: a screenshot takes a while
            page.screenshot(path=str(shots / f"home_{key}_paint.png"))
        page.wait_for_timeout(poll_ms)
    if out["home_done_s"] is None:
        raise TimeoutError(f"Home was not done within {TIMEOUT_MS / 1000:.0f} s at {url}")
    if shots:
        page.screenshot(path=str(shots / "home_done.png"))
    return out


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live children (psutil, else /proc/<pid>/stat)."""
    try:
        import psutil

        proc = psutil.Process(pid)
        total = sum(proc.cpu_times()[:2])
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                total += sum(child.cpu_times()[:2])
        return total
    except ImportError:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def machine_load() -> dict:
    """Load averages and CPU count, recorded with every result (timings on a shared machine are noisy)."""
    one, five, fifteen = os.getloadavg()
    try:
        uptime = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except OSError:
        uptime = ""
    return {
        "cpus": os.cpu_count(),
        "load_1_5_15": [round(one, 2), round(five, 2), round(fifteen, 2)],
        "uptime": uptime,
    }
