"""Dashboard latency (a script, not a timed test): what a visitor waits for, in a real browser.

Browser (headless chromium via Playwright, servers started as `make app` does, tests/app_server.py):

1. First Home on a FRESH server (``--fresh`` servers, one visit each): seconds from navigation to the
   first paint of the title, to the busy placeholder, and to "Home done" (4 metric cards + 3 figures).
   Target: Home done <= 5 s. Also the server process's CPU seconds over that visit: close to the wall
   time on an idle machine, and much less sensitive to other load than the wall time.
2. Learn: open the page from the sidebar, then switch to every lab (time until settled).
3. Register: method "Affine (intensity-based)" on the 2D sample pair, click to "Saved as run".
4. Data: the 3D 2 mm sample's axial slice slider, one arrow-key step to the new picture (server + browser).

Server only (no browser): the plane fragment's work after a slider move (slice + figure + JSON), a full
AppTest rerun of the Data page, and Home in AppTest after a warm start (imports done, caches cleared).

"Settled" and the other terms: benchmarks/_app_browser.py. Each number is the median of the repeats;
min/max are kept in the JSON. Timings on a shared machine are noisy: the `uptime` before and after is
recorded with the result.

Usage: ``nice -n 10 .venv/bin/python benchmarks/app_latency.py [--fresh 3] [--repeats 5] [--no-browser]``;
writes ``benchmarks/results/app_latency.json`` and ``.md`` (the command at the top of the .md).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.chdir(ROOT)

from _app_browser import (  # noqa: E402
    chromium,
    goto_sidebar,
    machine_load,
    open_home,
    process_cpu_seconds,
    settle,
    start_app_server,
    stop_app_server,
    timed_until_settled,
)

TARGETS = {"home_done_s": 5.0, "slider_fragment_work_ms": 200.0}
LOGS = ROOT / "test-artifacts"  # server logs (ignored by git)


def _pair_3d():
    """The 3D 2 mm sample pair (built on first use)."""
    from pages import _backend as backend

    return backend.sample_pair("brain", dims=3, resolution_mm=2.0), "sample brain 3D 2 mm"


def viewer_work_ms(pair, repeats: int, planes=(2,)) -> list[float]:
    """Server work of the plane fragment after its slider moves: slice, figure, Streamlit's
    re-validation (``return_figure_from_figure_or_data``) and JSON, per plane in ``planes``."""
    import plotly.io as pio
    import plotly.tools

    from pages._widgets import landmarks_in_slice, slice_axes
    from regcore import viz

    img, lab = pair.fixed, pair.fixed_labels
    arr = img.numpy()
    labarr = lab.numpy() if lab is not None else None
    level, width = viz.auto_window(arr)
    codes = img.geometry.orientation_codes()
    times = []
    for r in range(repeats):
        t0 = (
            time.perf_counter()
        )  # single-threaded numpy/plotly work: wall ~ CPU time when the machine is idle
        for axis in planes:
            index = (arr.shape[axis] // 2 + r) % arr.shape[axis]
            pts, ids = landmarks_in_slice(pair.fixed_landmarks, img.geometry, axis, index)
            fig = viz.slice_figure(
                viz.extract_slice(arr, axis, index),
                labels=viz.extract_slice(labarr, axis, index) if labarr is not None else None,
                label_names=pair.label_names,
                points=pts,
                point_ids=ids,
                level=level,
                width=width,
                flips=viz.display_flips(codes, slice_axes(3, axis)),
            )
            pio.to_json(
                plotly.tools.return_figure_from_figure_or_data(fig, validate_figure=True), validate=False
            )
        times.append((time.perf_counter() - t0) * 1000)
    return times


def apptest_slider_ms(pair, repeats: int) -> list[float]:
    """Full AppTest reruns of the Data page after moving the axial slider of the fixed viewer."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    at.session_state["pair"] = pair
    at.run()
    at.switch_page("pages/data.py").run()
    slider = at.slider(key="view_fixed_slice2")
    times = []
    for r in range(repeats):
        slider.set_value((slider.value + 1) % (slider.max + 1))
        t0 = time.perf_counter()
        at.run()
        times.append((time.perf_counter() - t0) * 1000)
        slider = at.slider(key="view_fixed_slice2")
        if at.exception:
            raise RuntimeError(at.exception[0].value)
    return times


def home_warm_start_s() -> dict:
    """First and second Home page run after imports (caches cleared before the first)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    import regcore.data  # noqa: F401 - warm imports, like a started server
    from regcore.methods import registry

    registry.all_specs()
    st.cache_resource.clear()
    st.cache_data.clear()
    out = {}
    for name in ("first_open_s", "cached_open_s"):
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
        t0, c0 = time.perf_counter(), time.process_time()
        at.run()
        out[name] = time.perf_counter() - t0
        out[name.replace("_s", "_cpu_s")] = time.process_time() - c0  # CPU seconds: less sensitive to load
        if at.exception:
            raise RuntimeError(at.exception[0].value)
        out["shows_metrics"] = [m.label for m in at.metric]
    from pages import _state as state

    out["method"] = state.default_method(2)
    return out


def summary(values: list[float]) -> dict:
    """Median, min, max and count of ``values`` (same unit as the values)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


# -- browser -------------------------------------------------------------------------------------------
def fresh_home(browser, n: int) -> dict:
    """First Home visit on ``n`` fresh servers: title / placeholder / Home done seconds (median of n)."""
    runs = []
    for i in range(n):
        proc, url = start_app_server(LOGS / f"app_latency_fresh{i}.log")
        try:
            ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = ctx.new_page()
            cpu0 = process_cpu_seconds(proc.pid)
            run = open_home(page, url)
            run["server_cpu_s"] = process_cpu_seconds(proc.pid) - cpu0  # ~ wall time on an idle machine
            runs.append(run)
            ctx.close()
        finally:
            stop_app_server(proc)
    out = {
        k: summary([r[k] for r in runs if r[k] is not None])
        for k in ("title_s", "home_done_s", "server_cpu_s")
    }
    seen = [r["placeholder_s"] for r in runs if r["placeholder_s"] is not None]
    out["placeholder_s"] = summary(seen) if seen else None
    out["running_indicator_seen"] = all(r["busy_seen"] for r in runs)
    out["runs"] = runs
    return out


def learn_labs(page, repeats: int) -> dict:
    """Open Learn from the sidebar (``repeats`` times, via Home), then switch to every lab once."""
    opens = []
    for i in range(repeats):  # starts on Home
        if i:
            goto_sidebar(page, "Home")
        opens.append(goto_sidebar(page, "Learn"))
    main = page.locator('[data-testid="stMain"]')
    labs = [t.strip() for t in main.locator('[data-testid="stButtonGroup"] button').all_inner_texts()]
    per_lab = {}
    for lab in labs[1:] + labs[:1]:  # the first is open already: come back to it last
        button = main.locator('[data-testid="stButtonGroup"] button').get_by_text(lab, exact=True)
        per_lab[lab] = timed_until_settled(page, button.click)
    return {"open_page_s": summary(opens), "switch_lab_s": per_lab}


def _choose(page, label: str, option: str) -> None:
    page.get_by_label(label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).click()
    settle(page)


def register_affine(page, repeats: int) -> dict:
    """Register page, "Affine (intensity-based)" on the current (2D sample) pair: click to "Saved as run"."""
    goto_sidebar(page, "Register")
    _choose(page, "Method family", "affine")
    _choose(page, "Method", "Affine (intensity-based)")
    times = []
    for i in range(repeats):
        button = page.get_by_role("button", name="Run registration")
        t0 = time.perf_counter()
        button.click()
        page.get_by_text("Saved as run").nth(0).wait_for()
        page.wait_for_function(
            f"() => document.body.innerText.split('Saved as run').length > 1 && "
            f"document.body.innerText.includes('affine{'' if i == 0 else f' #{i + 1}'}')"
        )
        times.append(time.perf_counter() - t0)
        settle(page)
    return {"click_to_result_s": summary(times)}


def slider_3d(page, repeats: int) -> dict:
    """Data page, 3D 2 mm brain sample: one ArrowRight on the axial slider until the new slice is drawn."""
    goto_sidebar(page, "Data")
    page.get_by_text("3D", exact=True).click()  # the radio: nothing else on the page changes
    page.wait_for_timeout(500)
    settle(page)
    page.get_by_role("button", name="Use this sample pair").click()
    page.get_by_text("3D 2mm").first.wait_for()
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 3")
    settle(page)
    axial = page.get_by_role("slider").nth(2)  # level, width, then axial / coronal / sagittal
    times = []
    for _ in range(repeats):
        axial.focus()
        times.append(timed_until_settled(page, lambda: page.keyboard.press("ArrowRight")) * 1000)
    return {"key_to_new_slice_ms": summary(times)}


def browser_part(fresh: int, repeats: int) -> dict:
    with chromium() as browser:
        out: dict = {"first_home_fresh_server": fresh_home(browser, fresh)}
        proc, url = start_app_server(LOGS / "app_latency_warm.log")
        try:
            ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = ctx.new_page()
            page.set_default_timeout(240_000)
            open_home(page, url)
            settle(page)
            out["learn"] = learn_labs(page, repeats)
            out["register_affine_2d"] = register_affine(page, repeats)  # the session pair is the 2D sample
            out["data_slider_3d"] = slider_3d(page, repeats)
            ctx.close()
        finally:
            stop_app_server(proc)
    return out


# -- report --------------------------------------------------------------------------------------------
def _fmt(stat: dict | None, unit: str = "s", digits: int = 2) -> str:
    if not stat:
        return "not seen"
    return f"{stat['median']:.{digits}f} {unit} (min {stat['min']:.{digits}f}, max {stat['max']:.{digits}f}, n {stat['n']})"


def markdown(r: dict) -> str:
    lines = [
        "# Dashboard latency",
        "",
        f"Command: `{r['command']}`",
        "",
        f"{r['date']}; {r['machine']['cpus']} CPUs; `uptime` before: `{r['machine']['uptime']}`; "
        f"after: `{r['machine_after']['uptime']}`. Medians (min, max, n); wall-clock.",
        "",
        "| what | result |",
        "|---|---|",
    ]
    b = r.get("browser")
    if b:
        h = b["first_home_fresh_server"]
        lines += [
            f"| fresh server, first Home: title painted | {_fmt(h['title_s'])} |",
            f"| fresh server, first Home: busy placeholder shown | {_fmt(h['placeholder_s'])} |",
            f"| fresh server, first Home: Home done (target <= {TARGETS['home_done_s']:g} s) | "
            f"{_fmt(h['home_done_s'])} |",
            f"| fresh server, first Home: server CPU seconds until Home done (load-independent) | "
            f"{_fmt(h['server_cpu_s'])} |",
            f"| Streamlit's running indicator seen during it | {h['running_indicator_seen']} |",
            f"| Learn: open from the sidebar | {_fmt(b['learn']['open_page_s'])} |",
        ]
        lines += [
            f"| Learn: switch to lab '{k}' | {v:.2f} s |" for k, v in b["learn"]["switch_lab_s"].items()
        ]
        lines += [
            f"| Register: affine on the 2D sample, click to result | "
            f"{_fmt(b['register_affine_2d']['click_to_result_s'])} |",
            f"| Data: 3D axial slider step to new slice (server + browser) | "
            f"{_fmt(b['data_slider_3d']['key_to_new_slice_ms'], 'ms', 0)} |",
        ]
    s = r["server"]
    lines += [
        f"| server only: plane fragment work after a slider move (target <= "
        f"{TARGETS['slider_fragment_work_ms']:g} ms) | {_fmt(s['slider_fragment_work_ms'], 'ms', 1)} |",
        f"| server only: window change, all three planes | {_fmt(s['window_change_all_three_planes_ms'], 'ms', 1)} |",
        f"| server only: full AppTest rerun of the Data page | {_fmt(s['slider_full_apptest_rerun_ms'], 'ms', 1)} |",
        f"| server only: Home in AppTest after a warm start, first / cached | "
        f"{s['home']['first_open_s']:.2f} / {s['home']['cached_open_s']:.2f} s |",
        "",
        "Settled = the main area's text and figure data stopped changing with no running indicator; the time "
        "is that of the last change. Definitions: `benchmarks/_app_browser.py`.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--fresh", type=int, default=3, help="fresh servers for the first-Home timing (default 3)"
    )
    ap.add_argument("--repeats", type=int, default=5, help="repeats of every other measurement (default 5)")
    ap.add_argument("--no-browser", action="store_true", help="server-side measurements only")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "app_latency"), help="output stem")
    args = ap.parse_args()
    if args.fresh < 1 or args.repeats < 1:
        raise SystemExit("--fresh and --repeats must be >= 1")
    LOGS.mkdir(exist_ok=True)
    before = machine_load()
    # as `make app`: build the sample data first, so no measurement includes building it
    subprocess.run([sys.executable, "-m", "regcore.data.samples", "--quiet"], cwd=ROOT, check=True)
    result: dict = {
        "command": "nice -n 10 .venv/bin/python benchmarks/app_latency.py " + shlex.join(sys.argv[1:]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": before,
        "targets": TARGETS,
    }
    if not args.no_browser:
        result["browser"] = browser_part(args.fresh, args.repeats)
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    pair, source = _pair_3d()
    result["server"] = {
        "volume": f"{source} {list(pair.fixed.shape)}",
        "slider_fragment_work_ms": summary(viewer_work_ms(pair, args.repeats)),
        "window_change_all_three_planes_ms": summary(viewer_work_ms(pair, args.repeats, planes=(2, 1, 0))),
        "slider_full_apptest_rerun_ms": summary(apptest_slider_ms(pair, args.repeats)),
        "home": home_warm_start_s(),
    }
    result["machine_after"] = machine_load()
    passed = {"slider_fragment_work": result["server"]["slider_fragment_work_ms"]["median"] <= 200}
    if "browser" in result:
        home = result["browser"]["first_home_fresh_server"]["home_done_s"]["median"]
        passed["home_done_fresh_server"] = home <= TARGETS["home_done_s"]
    result["pass"] = passed
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))


if __name__ == "__main__":
    main()
