"""Three people use RegLab in a real browser, end to end (Playwright on Debian's chromium).

- A lecturer opens a fresh server, shows the registered sample on Home, a Learn lab and the glossary, and
  saves the session under a name; a student's browser reopens it.
- A researcher uploads their own pair (NIfTI images + labels), registers it with a busy state shown,
  compares it on Evaluate (label legend), reloads the page and finds everything still there.
- A clinician is shown a histology pair with landmarks (``../shared/data``, downsampled 3x to keep the test
  short): the default pipeline (affine stage, then a deformable method) lowers the landmark error.

Screenshots land in test-artifacts/walk_*.png. Timings are printed, never asserted (see
benchmarks/app_latency.py for the measured first-Home time).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from app_server import stop_app_server
from browser_kit import (
    ARTIFACTS,
    SLOW_MS,
    goto_nav,
    no_traceback,
    settle,
    start_server,
)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server():
    proc, url = start_server("walkthrough.log")
    yield url
    stop_app_server(proc)


def new_page(browser):
    ctx = browser.new_context(viewport={"width": 1440, "height": 1100})
    pg = ctx.new_page()
    pg.set_default_timeout(SLOW_MS)
    return ctx, pg


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"walk_{name}.png"), full_page=True)


def upload(page, label: str, path: Path) -> None:
    """Choose ``path`` in the file uploader labelled ``label`` and wait until its file chip shows."""
    box = page.locator('[data-testid="stFileUploader"]').filter(has_text=label).first
    box.locator("input[type=file]").set_input_files(str(path))
    # The chip shows a shortened name ("subject...ing.nii.gz"); its aria-label has the whole one.
    box.locator(f'[data-testid="stFileChip"][aria-label^="{path.name},"]').first.wait_for()
    settle(page)


def use_uploaded_pair(page, server: str, files: dict[str, Path]) -> None:
    """On the Data page: Upload, choose ``files`` (``{uploader label: path}``, fixed image first), use them."""
    page.goto(f"{server}/data")
    page.get_by_text("Current pair").first.wait_for()
    settle(page)
    page.get_by_text("Upload", exact=True).click()
    settle(page)
    for label, path in files.items():
        upload(page, label, path)
    page.get_by_role("button", name="Use uploaded pair").click()
    page.get_by_text(f"Current pair: {next(iter(files.values())).name}").first.wait_for()
    settle(page)


def choose(page, label: str, option: str) -> None:
    page.get_by_label(label, exact=True).click()
    page.get_by_role("option").filter(has_text=option).first.click()
    settle(page)


def metric(page, title: str) -> tuple[float, float]:
    """``(value, change)`` of the st.metric titled ``title`` (numbers parsed from its text)."""
    box = page.locator('[data-testid="stMetric"]').filter(has_text=title).first
    value = box.locator('[data-testid="stMetricValue"]').inner_text()
    delta = box.locator('[data-testid="stMetricDelta"]').inner_text()
    number = re.compile(r"[-+\u2212]?\d+(?:\.\d+)?")
    v, d = number.search(value), number.search(delta)
    assert v and d, f"{title}: {value!r} / {delta!r}"
    return float(v.group()), float(d.group().replace("\u2212", "-"))


def run_and_watch_busy(page, who: str, seconds_long: bool = True) -> float:
    """Click "Run registration"; the progress bar shows (for a run of ``seconds_long``: while nothing is
    saved yet). Returns seconds."""
    t0 = time.perf_counter()
    page.get_by_role("button", name="Run registration").click()
    page.locator('[data-testid="stProgress"]').first.wait_for(timeout=30_000)
    if seconds_long:
        assert page.get_by_text("Saved as run").count() == 0, "the busy state shows before the result"
    shot(page, f"{who}_busy")
    page.get_by_text("Saved as run").first.wait_for()
    settle(page)
    return time.perf_counter() - t0


@pytest.fixture(scope="module")
def researcher_files(tmp_path_factory) -> dict[str, Path]:
    """The 2D brain sample pair written as the NIfTI files a researcher would bring."""
    from pages import _backend as backend
    from regcore.io import save_image

    folder = tmp_path_factory.mktemp("researcher")
    pair = backend.sample_pair(dataset="brain", dims=2)
    files = {}
    for role in ("fixed", "moving", "fixed_labels", "moving_labels"):
        files[role] = save_image(getattr(pair, role), folder / f"subject_{role}.nii.gz")
    return files


@pytest.fixture(scope="module")
def histology_files(shared_data, tmp_path_factory) -> dict[str, Path]:
    """The CIMA histology pair resampled to 3x coarser pixels (same physical space, so the landmark CSVs
    in mm keep their meaning) and its landmarks."""
    from regcore.data.folder import load_folder
    from regcore.image import Geometry
    from regcore.io import save_image, save_landmarks
    from regcore.preprocess import resample_to

    folder = tmp_path_factory.mktemp("histology")
    src = shared_data / "histology2d"
    pair = load_folder(src).pairs()[0]
    files = {}
    for role in ("fixed", "moving"):
        g = getattr(pair, role).geometry
        coarse = Geometry(
            shape=tuple(max(8, n // 3) for n in g.shape),
            spacing=tuple(s * 3 for s in g.spacing),
            origin=g.origin,
            direction=g.direction,
        )
        files[role] = save_image(resample_to(getattr(pair, role), coarse), folder / f"{role}_coarse.nii.gz")
    for role in ("fixed_landmarks", "moving_landmarks"):
        files[role] = save_landmarks(getattr(pair, role), folder / f"{role}.csv")
    return files


def test_lecturer_shows_home_a_lab_and_the_glossary_then_shares_the_session(browser):
    proc, url = start_server("walkthrough_fresh.log")
    ctx, page = new_page(browser)
    other, student = new_page(browser)
    try:
        t0 = time.perf_counter()
        page.goto(url)
        page.get_by_role("heading", name="RegLab").first.wait_for()
        first_paint = time.perf_counter() - t0
        page.get_by_text("Mean Dice").first.wait_for()
        print(
            f"fresh server: title after {first_paint:.1f} s, Home done after {time.perf_counter() - t0:.1f} s"
        )
        settle(page)
        no_traceback(page)
        assert "session=" in page.url, "the session id is in the address, so a reload finds it"
        shot(page, "lecturer_home")

        goto_nav(page, "Learn")
        page.locator(".js-plotly-plot").first.wait_for()
        no_traceback(page)
        shot(page, "lecturer_learn")

        goto_nav(page, "Glossary")
        page.get_by_text("Dice", exact=False).first.wait_for()
        assert page.get_by_text("HD95").count() and page.get_by_text("TRE").count()
        no_traceback(page)
        shot(page, "lecturer_glossary")

        goto_nav(page, "Register")  # the demo run the class will reopen
        page.get_by_role("textbox", name="Run name").fill("class demo")
        page.get_by_role("textbox", name="Run name").press("Enter")
        settle(page)
        run_and_watch_busy(page, "lecturer", seconds_long=False)  # the sample's default method: < 1 s
        assert page.get_by_text("Saved as run class demo").count()
        no_traceback(page)

        page.get_by_text("Session", exact=True).first.click()
        page.get_by_label("Save as").fill("lecture 1")
        page.get_by_role("button", name="Save session").click()
        page.get_by_text("Saved the session").first.wait_for()
        settle(page)

        student.goto(url)
        student.get_by_text("Mean Dice").first.wait_for()
        settle(student)
        student.get_by_text("Session", exact=True).first.click()
        student.get_by_role("button", name="Open session").click()
        student.get_by_text("Opened 'lecture 1'").first.wait_for()  # the open has run before we navigate
        settle(student)
        goto_nav(student, "Evaluate & compare")
        student.locator('[data-testid="stMain"]').get_by_text("class demo").first.wait_for()
        no_traceback(student)
        shot(student, "student_opened")
    finally:
        ctx.close()
        other.close()
        stop_app_server(proc)


def test_researcher_uploads_registers_compares_and_reloads(server, browser, researcher_files):
    ctx, page = new_page(browser)
    try:
        use_uploaded_pair(
            page,
            server,
            {
                "Fixed image": researcher_files["fixed"],
                "Moving image": researcher_files["moving"],
                "Fixed labels (optional)": researcher_files["fixed_labels"],
                "Moving labels (optional)": researcher_files["moving_labels"],
            },
        )
        no_traceback(page)
        shot(page, "researcher_data")

        goto_nav(page, "Register")
        choose(page, "Method family", "diffeomorphic")
        choose(page, "Method", "Diffeomorphic demons")
        seconds = run_and_watch_busy(page, "researcher")
        print(f"researcher: demons after affine on the uploaded pair in {seconds:.1f} s")
        dice, change = metric(page, "Mean Dice")
        assert change > 0, f"Dice {dice} changed by {change}"
        no_traceback(page)
        shot(page, "researcher_register")

        goto_nav(page, "Evaluate & compare")
        page.get_by_text("Dice per structure").first.wait_for()
        page.locator('[data-testid="stMain"]').get_by_text("Contours", exact=True).first.click()
        settle(page)
        page.locator(".rl-label-legend").first.wait_for()
        no_traceback(page)
        shot(page, "researcher_evaluate")

        page.reload()
        page.get_by_text("Runs to compare").first.wait_for()
        settle(page)
        main = page.locator('[data-testid="stMain"]')
        assert main.get_by_text("demons").count(), "the run is back after a reload"
        no_traceback(page)
        shot(page, "researcher_reloaded")
        goto_nav(page, "Data")
        page.get_by_text("Current pair: subject_fixed.nii.gz").first.wait_for()  # so is the uploaded pair
        assert page.get_by_text("Upload", exact=True).count(), "and the page's source choice"
        no_traceback(page)
    finally:
        ctx.close()


def test_clinician_sees_the_default_pipeline_lower_the_landmark_error(server, browser, histology_files):
    ctx, page = new_page(browser)
    try:
        use_uploaded_pair(
            page,
            server,
            {
                "Fixed image": histology_files["fixed"],
                "Moving image": histology_files["moving"],
                "Fixed landmarks CSV (optional)": histology_files["fixed_landmarks"],
                "Moving landmarks CSV (optional)": histology_files["moving_landmarks"],
            },
        )

        goto_nav(page, "Register")
        choose(page, "Method family", "diffeomorphic")
        choose(page, "Method", "Diffeomorphic demons")
        start_with = page.locator('[data-testid="stSelectbox"]').filter(has_text="Start with").first
        shown = start_with.locator("input").first.input_value() or start_with.inner_text()
        assert "Affine" in shown, f"the default pipeline starts with an affine stage, not {shown!r}"
        seconds = run_and_watch_busy(page, "clinician")
        tre, change = metric(page, "Mean TRE")
        print(f"clinician: histology TRE {tre - change:.1f} -> {tre:.1f} mm in {seconds:.1f} s")
        assert change < 0, f"the landmark error got worse: {tre - change:.1f} -> {tre:.1f} mm"
        assert page.get_by_text("Pipeline:").count() and page.get_by_text("affine").count()
        assert page.get_by_text("worse").count() == 0, "no worsening warning"
        no_traceback(page)
        shot(page, "clinician_register")
    finally:
        ctx.close()
