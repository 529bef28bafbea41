"""AppTest on every dashboard page: default run, main widgets, a 2D registration, bad uploads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
PAGES = ["home", "data", "register", "evaluate", "learn"]
TIMEOUT = 240


@pytest.fixture(scope="module", autouse=True)
def _chdir():
    old = os.getcwd()
    os.chdir(ROOT)
    yield
    os.chdir(old)


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    if page != "home":
        at.switch_page(f"pages/{page}.py").run()
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_cleanly(page):
    at = open_page(page)
    assert_clean(at)
    assert at.title and at.title[0].value


def test_home_registers_the_sample_pair_and_improves_dice():
    at = open_page("home")
    dice = next(m for m in at.metric if m.label == "Mean Dice")
    assert dice.value != "n/a"
    assert dice.delta is not None and float(dice.delta) > 0, "registration must improve Dice over identity"
    assert len(at.session_state["runs"]) == 1


def test_data_page_window_slider_and_label_toggle():
    at = open_page("data")
    level = at.slider(key="view_fixed_level")
    level.set_value((level.min + level.max) / 2).run()
    at.toggle(key="view_fixed_labels").set_value(False).run()
    assert_clean(at)
    assert at.dataframe, "header facts table is shown"
    facts = at.dataframe[0].value
    assert {"shape", "spacing (mm)", "origin (mm, LPS)", "orientation"} <= set(facts.columns)


def test_data_page_corrupt_upload_gives_clear_error_and_keeps_the_pair():
    at = open_page("data")
    pair_before = at.session_state["pair"]
    at.segmented_control(key="data_source").set_value("Upload").run()
    at.file_uploader(key="up_fixed").set_value(("fixed.nii.gz", b"this is not a nifti file", "application/gzip"))
    at.file_uploader(key="up_moving").set_value(("moving.mha", b"\x00\x01garbage", "application/octet-stream"))
    at.run()
    at.button(key="data_use_upload").click().run()
    assert not at.exception
    assert at.error and "could not read" in at.error[0].value
    assert at.session_state["pair"] is pair_before, "a bad upload must not replace the loaded pair"
    assert any("Current pair" in h.value for h in at.subheader), "the page keeps working below the error"


def test_register_page_runs_a_2d_registration_and_stores_it():
    at = open_page("register")
    from pages import _state as state
    method = state.default_method(2)
    from pages import _backend as backend
    family = str(backend.get_spec(method).family)
    at.selectbox(key="reg_family").set_value(family).run()
    at.selectbox(key="reg_method").set_value(method).run()
    at.text_input(key="reg_label").set_value("my run").run()
    at.button(key="reg_run").click().run()
    assert_clean(at)
    assert "my run" in at.session_state["runs"]
    run = at.session_state["runs"]["my run"]
    assert run["result"].warped.shape == run["result"].fixed.shape
    assert any("Saved as run" in s.value for s in at.success)


def test_register_page_honours_train_page_selection():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    from pages import _backend as backend
    learned = [s for s in backend.method_specs() if s.needs_training]
    if not learned:
        pytest.skip("no learned method registered yet")
    at.session_state["register_method"] = learned[0].name
    at.session_state["register_overrides"] = {}
    at.run()
    at.switch_page("pages/register.py").run()
    assert not at.exception
    assert at.selectbox(key="reg_method").value == learned[0].name


def test_evaluate_page_shows_tables_plots_and_exports():
    at = open_page("evaluate")
    assert_clean(at)
    table = at.dataframe[0].value
    assert "mean Dice" in table.columns and len(table) >= 2, "a 'before' row and the run"
    assert any("Dice per structure" in m.value for m in at.markdown), "per-structure Dice table"
    at.slider(key="eval_tile").set_value(8).run()
    assert_clean(at)
    labels = [b.label for b in at.get("download_button")]
    assert {"Metrics CSV", "QA report (HTML)"} <= set(labels), labels


def test_learn_labs_render():
    at = open_page("learn")
    for lab in ["Transformations", "Similarity landscapes", "Diffeomorphisms and folding", "Multi-resolution",
                "FLE / FRE / TRE"]:
        at.segmented_control(key="learn_lab").set_value(lab).run()
        assert_clean(at)


@pytest.mark.slow
def test_learn_regularisation_lab_runs_its_registrations():
    at = open_page("learn")
    at.segmented_control(key="learn_lab").set_value("Regularisation trade-off").run()
    at.select_slider(key="lab_r_w").set_value(10.0).run()
    assert_clean(at)
    assert any(m.label == "Folded voxels" for m in at.metric)


def test_learn_transformations_widgets_change_the_picture():
    at = open_page("learn")
    at.radio(key="lab_t_kind").set_value("affine").run()
    at.slider(key="lab_t_shear").set_value(0.4).run()
    at.radio(key="lab_t_kind").set_value("deformable").run()
    assert_clean(at)


def test_two_sessions_do_not_share_runs():
    a, b = open_page("home"), open_page("home")
    a.session_state["runs"]["only in a"] = a.session_state["runs"][next(iter(a.session_state["runs"]))]
    b.run()
    assert "only in a" not in b.session_state["runs"]


def test_page_wrapper_turns_exceptions_into_messages():
    def script():
        import streamlit as st

        from pages import _state as state
        st.session_state["kept"] = 1

        def body():
            raise ValueError("spacing must be > 0, got -1")
        state.run_page(body, "test")
        st.write("still alive")

    at = AppTest.from_function(script, default_timeout=60).run()
    assert not at.exception
    assert "spacing must be > 0" in at.error[0].value
    assert at.session_state["kept"] == 1
    assert any("still alive" in m.value for m in at.markdown)


def test_evaluate_every_view_renders():
    from pages._panels import VIEWS
    at = open_page("evaluate")
    for view in VIEWS:
        at.segmented_control(key="eval_view").set_value(view).run()
        assert_clean(at)


def test_qa_report_is_self_contained_html():
    import numpy as np

    from pages._report import qa_report_html
    rng = np.random.default_rng(0)
    f = rng.random((32, 40))
    lab = np.zeros((32, 40), int)
    lab[8:20, 10:30] = 1
    jac = np.ones((32, 40))
    jac[3, 3] = -1
    slices = {"fixed": f, "moving": np.roll(f, 2, 0), "warped": f, "jac": jac, "fixed_labels": lab,
              "moving_labels": np.roll(lab, 2, 0), "warped_labels": lab}
    html = qa_report_html(slices, {"dice_mean": 0.9, "dice": {"cortex": 0.9}, "folding_percent": 0.1},
                          {"dice_mean": 0.6, "dice": {"cortex": 0.6}}, pair_name="a <- b", method="demo")
    assert html.startswith("<!DOCTYPE html>") and html.count("data:image/png;base64,") == 9
    assert "<script" not in html.lower() and "http://" not in html and "https://" not in html
    assert "cortex" in html and "a &lt;- b" in html
    with pytest.raises(ValueError, match="must contain 'jac'"):
        qa_report_html({k: v for k, v in slices.items() if k != "jac"}, {})


@pytest.mark.slow
def test_data_page_loads_a_pair_from_a_server_folder(shared_data):
    at = open_page("data")
    at.segmented_control(key="data_source").set_value("Server folder").run()
    at.text_input(key="data_folder_path").set_value(str(shared_data / "brain2d")).run()
    at.button(key="data_scan").click().run()
    assert_clean(at)
    names = at.selectbox(key="data_folder_pair").options
    oasis = next(n for n in names if n.count("OASIS") == 2)
    at.selectbox(key="data_folder_pair").set_value(oasis).run()
    at.button(key="data_use_folder").click().run()
    assert_clean(at)
    assert at.session_state["pair"].name == oasis
    assert at.session_state["pair"].fixed_labels is not None, "labels found next to the images"


def test_data_page_missing_folder_is_a_clear_error():
    at = open_page("data")
    at.segmented_control(key="data_source").set_value("Server folder").run()
    at.text_input(key="data_folder_path").set_value("/nonexistent/folder").run()
    at.button(key="data_scan").click().run()
    assert not at.exception
    assert "folder not found" in at.error[0].value
