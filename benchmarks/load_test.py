"""Load test (a script, not a timed test): N concurrent browser sessions against ONE `streamlit run` server.

Each session (its own Playwright browser context = its own Streamlit session) opens Home, goes to Data,
uploads its own 2D pair (distinct names and content), registers it on the Register page with the default
method, and opens Evaluate. Checked: every session finishes; none ever sees another session's pair or
runs (each page's text is searched for the other sessions' tags); the server answers /_stcore/health
throughout (answers slower than 10 s are counted apart from refusals) and at the end. Files are picked
through the file chooser, as a person does; a file the app lost is picked again (counted). Reported: page response times (action -> the script run
has finished and the expected text is on the page; p50/p95/max), registration time including the
queue, and the machine (CPUs, load average).

Usage: ``.venv/bin/python benchmarks/load_test.py [--sessions 10]``; writes
``benchmarks/results/load_test.{json,md}``. Run when the machine is otherwise idle (``uptime`` < 1).
Needs chromium (``/usr/bin/chromium``) and the playwright package (``make test-browser`` installs both).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from app_server import start_app_server  # noqa: E402 - the tests' server starter

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 900_000


def make_pairs(folder: Path, n: int) -> list[dict]:
    """n distinct 2D pairs (64x64, 1 mm): a disk whose size and shift differ per session."""
    import nibabel as nib
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:64, :64]
    pairs = []
    for k in range(n):
        tag = f"s{k:02d}x{os.urandom(2).hex()}"
        files = {}
        for role, shift in (("fixed", 0), ("moving", 3 + k % 4)):
            img = (((yy - 32 - shift) ** 2 + (xx - 32) ** 2) < (12 + k) ** 2).astype(np.float32)
            img += 0.05 * np.sin(xx / (2.0 + k))
            files[role] = folder / f"{role}_{tag}.nii.gz"
            nib.save(nib.Nifti1Image(img.astype(np.float32), np.eye(4)), files[role])
        pairs.append({"tag": tag, **files})
    return pairs


async def settle(page) -> None:
    """Until the script run has finished (the app's script state is 'notRunning', no 'Running' status, no
    skeleton)."""
    await page.wait_for_timeout(1000)  # a rerun may take a moment to start under load
    await page.wait_for_function(
        "() => { const s = document.querySelector('[data-testid=\"stStatusWidget\"]');"
        " const app = document.querySelector('[data-testid=\"stApp\"]');"
        " return (!s || !s.innerText.includes('Running'))"
        " && !!app && app.getAttribute('data-test-script-state') === 'notRunning'; }",
        timeout=TIMEOUT_MS,
    )
    await page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stSkeleton\"]')", timeout=TIMEOUT_MS
    )


async def timed(name: str, times: list, action, page, ready_text: str | None = None) -> None:
    t0 = time.perf_counter()
    await action()
    if ready_text:
        await page.get_by_text(ready_text).first.wait_for(timeout=TIMEOUT_MS)
    await settle(page)
    times.append({"step": name, "s": time.perf_counter() - t0})
    print(f"  {getattr(page, '_tag', '?')}: {name} {times[-1]['s']:.2f} s", flush=True)


async def click_until(
    page, button: str, ready_js: str, out: dict, attempts: int = 3, wait_s: float = 90
) -> None:
    """Click ``button`` until ``ready_js`` (a JS expression) holds. Under load a click that lands while the
    previous script run is still finishing can be dropped by the browser client; re-click then (counted)."""
    for k in range(attempts):
        await page.get_by_role("button", name=button).click()
        try:
            await page.wait_for_function(f"() => {ready_js}", timeout=wait_s * 1000)
            return
        except Exception:  # noqa: BLE001 - not yet: retry unless the app is still busy with it
            busy = await page.evaluate(
                "() => { const s = document.querySelector('[data-testid=\"stStatusWidget\"]');"
                " return !!s && s.innerText.includes('Running'); }"
            )
            if busy:
                await page.wait_for_function(f"() => {ready_js}", timeout=TIMEOUT_MS)
                return
            out["clicks_repeated"] = out.get("clicks_repeated", 0) + 1
    raise TimeoutError(f"{button!r} had no effect after {attempts} clicks")


async def choose_file(page, label: str, path: Path, out: dict, attempts: int = 3, wait_s: float = 60) -> None:
    """Pick ``path`` in the uploader titled ``label`` as a person does (its Upload button, then the file
    chooser) and wait until the file is on the server (its chip shows without the upload spinner).

    Streamlit 1.67 can lose a chosen file: the browser waits, without a timeout, for the server's upload-URL
    reply, and a script run that starts meanwhile (e.g. the rerun after the previous upload) clears that reply
    from the session's outgoing queue; the uploader stays empty and shows no error (docs/RELIABILITY.md). A
    person then picks the file again; so does this, counted in ``files_picked_again``. (Playwright's
    ``set_input_files`` with the same file again fires no change event; the file chooser does.)"""
    box = page.locator('[data-testid="stFileUploader"]').filter(has_text=label).first
    chip = box.locator('[data-testid="stFileChip"]')
    for _ in range(attempts):
        await settle(page)
        async with page.expect_file_chooser(timeout=wait_s * 1000) as chooser:
            await box.locator("button").filter(has_text="Upload").click()
        await (await chooser.value).set_files(str(path))
        try:
            await chip.first.wait_for(timeout=wait_s * 1000)
        except Exception:  # noqa: BLE001 - the chosen file was lost before its upload began: pick it again
            out["files_picked_again"] = out.get("files_picked_again", 0) + 1
            continue
        await page.wait_for_function(  # uploading: the chip shows a spinner until the server has the file
            "(box) => !box.querySelector('[data-testid=\"stFileChipIconSpinner\"]')",
            arg=await box.element_handle(),
            timeout=TIMEOUT_MS,
        )
        if await box.locator('[data-testid="stFileChipIconError"]').count():
            raise RuntimeError(f"{label}: the upload failed ({await chip.first.inner_text()})")
        return
    raise TimeoutError(f"{label}: the file never showed in the uploader after {attempts} picks")


def has_text(text: str) -> str:
    return f"document.body.innerText.includes({json.dumps(text)})"


async def nav(page, label: str) -> None:
    await (
        page.locator('[data-testid="stSidebar"] [data-testid="stPageLink"]')
        .get_by_text(label, exact=True)
        .click()
    )


async def one_session(browser, url: str, pair: dict, others: list[str], out: dict) -> None:
    ctx = await browser.new_context(viewport={"width": 1400, "height": 1100})
    page = await ctx.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page._tag = pair["tag"]
    times: list = []
    seen_others: set[str] = set()

    async def check_isolation():
        text = await page.content()
        seen_others.update(t for t in others if t in text)
        if await page.locator('[data-testid="stException"]').count():
            raise RuntimeError("a traceback reached the page")

    try:
        await timed("home", times, lambda: page.goto(url), page, "Mean Dice")
        await timed("data page", times, lambda: nav(page, "Data"), page, "Current pair")
        await timed(
            "choose upload",
            times,
            lambda: page.get_by_text("Upload", exact=True).first.click(),
            page,
            "Use uploaded pair",
        )
        for label, role in (("Fixed image", "fixed"), ("Moving image", "moving")):
            await choose_file(page, label, pair[role], out)
        await settle(page)
        name = pair["fixed"].name  # the pair is '<fixed> <- <moving>'; markdown draws the arrow as a glyph
        await timed(
            "use upload",
            times,
            lambda: click_until(page, "Use uploaded pair", has_text(f"Current pair: {name}"), out),
            page,
            f"Current pair: {name}",
        )
        await check_isolation()
        await timed("register page", times, lambda: nav(page, "Register"), page, "Run registration")
        assert await page.get_by_text(name).count(), "the Register page shows this session's pair"
        t0 = time.perf_counter()
        started = (
            f"({has_text('Saved as run')} || {has_text('Waiting for a free slot')} || "
            f"!!document.querySelector('[data-testid=\"stProgress\"]'))"
        )
        await click_until(page, "Run registration", started, out)
        await page.get_by_text("Saved as run").first.wait_for(timeout=TIMEOUT_MS)
        await settle(page)
        out["registration_s"] = time.perf_counter() - t0
        await check_isolation()
        await timed(
            "evaluate page", times, lambda: nav(page, "Evaluate & compare"), page, "Dice per structure"
        )
        await check_isolation()
        out["finished"] = True
    except Exception as e:  # noqa: BLE001 - recorded and reported
        out["finished"] = False
        out["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        await page.screenshot(path=str(ROOT / "test-artifacts" / f"load_{pair['tag']}.png"), full_page=True)
    finally:
        out["times"] = times
        out["saw_other_sessions"] = sorted(seen_others)
        await ctx.close()


async def health_probe(url: str, stop: asyncio.Event, record: dict) -> None:
    """Ask /_stcore/health every second: ``ok``, ``slow`` (no answer within 10 s: the server is busy) or
    ``failed`` (refused, reset or a wrong answer: the server is down or broken)."""
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            ok = await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"{url}/_stcore/health", timeout=10).read()
            )
            record["ok" if ok == b"ok" else "failed"] += 1
            record["max_s"] = max(record["max_s"], time.perf_counter() - t0)
        except OSError as e:
            timed_out = isinstance(e, TimeoutError) or isinstance(getattr(e, "reason", None), TimeoutError)
            record["slow" if timed_out else "failed"] += 1
        await asyncio.sleep(1.0)


async def warm_up(url: str) -> float:
    """One visit to Home before the measured sessions, so the numbers are not the server's cold start."""
    from playwright.async_api import async_playwright

    t0 = time.perf_counter()
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = await browser.new_page()
        await page.goto(url)
        await page.get_by_text("Mean Dice").first.wait_for(timeout=TIMEOUT_MS)
        await settle(page)
        await browser.close()
    return time.perf_counter() - t0


async def run(n: int, url: str, pairs: list[dict]) -> tuple[list[dict], dict]:
    from playwright.async_api import async_playwright

    health = {"ok": 0, "slow": 0, "failed": 0, "max_s": 0.0}
    stop = asyncio.Event()
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        probe = asyncio.create_task(health_probe(url, stop, health))
        results = [{"tag": pr["tag"]} for pr in pairs]
        tags = [pr["tag"] for pr in pairs]
        await asyncio.gather(
            *(
                one_session(browser, url, pr, [t for t in tags if t != pr["tag"]], res)
                for pr, res in zip(pairs, results)
            )
        )
        stop.set()
        await probe
        await browser.close()
    return results, health


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(round(q * (len(v) - 1)))))] if v else float("nan")


def main() -> int:
    global TIMEOUT_MS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--timeout-s", type=float, default=TIMEOUT_MS / 1000, help="longest wait for one step")
    args = ap.parse_args()
    TIMEOUT_MS = int(args.timeout_s * 1000)
    if not Path(CHROMIUM).exists():
        print("chromium not installed (apt-get install -y chromium)", file=sys.stderr)
        return 2
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="reglab_load_"))
    pairs = make_pairs(work / "pairs", args.sessions)
    # PYTHONFAULTHANDLER: when a session does not finish, SIGABRT makes the server write every thread's stack
    # to its log (test-artifacts/load_test_server.log) before it stops: where it waited, not just that it did.
    env = {
        **os.environ,
        "REGLAB_RUNS_DIR": str(work / "runs"),
        "PYTHONUNBUFFERED": "1",
        "PYTHONFAULTHANDLER": "1",
    }
    load_before = os.getloadavg()
    proc, url = start_app_server(ROOT / "test-artifacts" / "load_test_server.log", env)
    try:
        # first visit: imports, sample pair, compiled kernels (not counted)
        asyncio.run(warm_up(url))
        t0 = time.perf_counter()
        results, health = asyncio.run(run(args.sessions, url, pairs))
        health_url = f"{url}/_stcore/health"  # 60 s: a busy server is not a server that is down
        alive = proc.poll() is None and urllib.request.urlopen(health_url, timeout=60).read() == b"ok"
    finally:
        done = locals().get("results")
        if proc.poll() is None and (done is None or not all(r.get("finished") for r in done)):
            import signal

            proc.send_signal(signal.SIGABRT)  # thread stacks into the server log
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()
    page_times = [t["s"] for r in results for t in r["times"]]
    reg = [r["registration_s"] for r in results if "registration_s" in r]
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "sessions": args.sessions,
        "wall_s": wall,
        "all_finished": all(r.get("finished") for r in results),
        "isolation_ok": not any(r["saw_other_sessions"] for r in results),
        "server_up": bool(alive),
        "clicks_repeated": sum(r.get("clicks_repeated", 0) for r in results),
        "files_picked_again": sum(r.get("files_picked_again", 0) for r in results),
        "health_checks": health,
        "page_response_s": {
            "n": len(page_times),
            "p50": pct(page_times, 0.5),
            "p95": pct(page_times, 0.95),
            "max": max(page_times, default=0),
        },
        "registration_s": {
            "p50": pct(reg, 0.5),
            "p95": pct(reg, 0.95),
            "max": max(reg, default=0),
            "mean": statistics.fmean(reg) if reg else None,
        },
        "sessions_detail": results,
    }
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "load_test.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    pr, rg = report["page_response_s"], report["registration_s"]
    md = [
        f"# Load test: {args.sessions} concurrent browser sessions, one server",
        "",
        f"{report['date']}, {report['cpus']} CPUs ({report['cpu']}), load average before "
        f"{', '.join(f'{x:.2f}' for x in load_before)}, after {', '.join(f'{x:.2f}' for x in load_after)}; "
        f"wall {wall:.0f} s.",
        "",
        "| check | result |",
        "|---|---|",
        f"| every session finished (upload, register, evaluate) | {report['all_finished']} |",
        f"| no session saw another's pair or runs | {report['isolation_ok']} |",
        f"| server up throughout ({health['ok']} health checks ok, {health['slow']} slower than 10 s, "
        f"{health['failed']} failed) and at the end | "
        f"{report['server_up'] and not health['failed']} |",
        f"| page response p50 / p95 / max ({pr['n']} page loads and clicks) | {pr['p50']:.2f} / {pr['p95']:.2f} / "
        f"{pr['max']:.2f} s |",
        f"| registration incl. queue p50 / p95 / max | {rg['p50']:.1f} / {rg['p95']:.1f} / {rg['max']:.1f} s |",
        f"| clicks repeated because the browser dropped them under load | {report['clicks_repeated']} |",
        f"| files picked again because the app lost the chosen file (Streamlit drops the upload-URL reply when "
        f"a script run starts; docs/RELIABILITY.md) | {report['files_picked_again']} |",
        "",
        "Page response = from a click or navigation until the script run has finished and the expected text is "
        "on the page; the browsers (one chromium, one context per session) share the same 2 cores.",
        "",
    ]
    failed = [r for r in results if not r.get("finished")]
    md += [f"- session {r['tag']}: {r.get('error')}" for r in failed]
    (out / "load_test.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))
    return 0 if report["all_finished"] and report["isolation_ok"] and report["server_up"] else 1


if __name__ == "__main__":
    sys.exit(main())
