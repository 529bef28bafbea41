"""AppTest on every dashboard page: default run, main widgets, bad uploads, the page and view registries, typed
runs (RunRecord) and the Home fallback sample. The Register page's own tests: ``test_app_register.py``."""

from __future__ import annotations

import pytest

pytest.importorskip("streamlit")
from app_kit import APP, ROOT, TIMEOUT, assert_clean, open_page, registered_pages
from streamlit.testing.v1 import AppTest

pytestmark = pytest.mark.usefixtures("app_root_cwd")


@pytest.mark.parametrize("page", registered_pages())
def test_every_page_renders_cleanly(page):
    at = open_page(page)
    assert_clean(at)
    assert at.title and at.title[0].value


def test_page_registry_matches_the_pages_folder():
    from pages import _nav as nav

    scripts = {f"pages/{f.name}" for f in (ROOT / "pages").glob("*.py") if not f.name.startswith("_")}
    assert {p.path for p in nav.PAGES} == scripts, "every page script is registered once, nothing else"
    assert sum(p.default for p in nav.PAGES) == 1 and nav.PAGES[0].default
    assert len({p.name for p in nav.PAGES}) == len(nav.PAGES)
    with pytest.raises(ValueError, match="unknown page 'nope'"):
        nav.page("nope")


def test_app_draws_one_sidebar_link_per_registered_page_and_hides_the_folder_listing():
    import tomllib

    from pages import _nav as nav

    at = open_page("home")
    links = [el.proto.label for el in at.sidebar.get("page_link")]
    assert links == [p.title for p in nav.PAGES]
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert config["client"]["showSidebarNavigation"] is False, "Streamlit's pages/ listing is never drawn"
    assert config["server"]["fileWatcherType"] == "none"


@pytest.mark.parametrize("page", registered_pages())
def test_a_fresh_server_opens_a_page_url_inside_the_app_navigation(page, monkeypatch):
    """A fresh server with a pages/ folder starts in Streamlit's legacy mode (until the first
    st.navigation call) and runs a page URL's script without app.py. The page must go through app.py
    (pages/_nav.py ensure_app_navigation, called by state.run_page) and end on itself, with the
    app's sidebar. Reproduces what tests/test_browser.py sees in chromium on a fresh server."""
    from streamlit.runtime.pages_manager import PagesManager

    from pages import _nav as nav

    monkeypatch.setattr(PagesManager, "uses_pages_directory", True)  # as on a fresh server
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.switch_page(nav.page(page).path).run()  # before the first run: the URL's page, as the browser asks
    assert_clean(at)
    assert PagesManager.uses_pages_directory is False, (
        f"pages/{page}.py ran without app.py's navigation "
        f"(call pages._nav.ensure_app_navigation({page!r}) first, or run the page body with state.run_page)"
    )
    assert [el.proto.label for el in at.sidebar.get("page_link")] == [p.title for p in nav.PAGES]
    assert at.title, "the page itself was drawn"


def test_home_registers_the_sample_pair_and_improves_dice():
    from regcore.metrics import evaluate_identity
    from regcore.run_record import RunRecord

    at = open_page("home")
    dice = next(m for m in at.metric if m.label == "Mean Dice")
    assert dice.value != "n/a"
    assert dice.delta is not None and float(dice.delta) > 0, "registration must improve Dice over identity"
    assert len(at.session_state["runs"]) == 1
    run = next(iter(at.session_state["runs"].values()))
    assert isinstance(run, RunRecord)
    # the delta is after - before, where before is regcore's evaluate_identity on the same pair
    r = run.result
    before = evaluate_identity(
        r.fixed,
        r.moving,
        fixed_labels=run.fixed_labels,
        moving_labels=run.moving_labels,
        fixed_landmarks=run.pair.fixed_landmarks,
        moving_landmarks=run.pair.moving_landmarks,
        label_names=run.label_names,
    )
    assert float(dice.delta) == pytest.approx(run.metrics["dice_mean"] - before["dice_mean"], abs=1e-3)
    tre = next(m for m in at.metric if m.label == "Mean TRE")
    assert float(tre.delta.split()[0]) == pytest.approx(
        run.metrics["tre_mean_mm"] - before["tre_mean_mm"], abs=1e-2
    )


def test_home_falls_back_to_the_shapes_sample_when_the_brain_sample_fails(monkeypatch):
    import streamlit as st

    from pages import _backend as backend

    real = backend.sample_pair

    def no_brain(dataset="brain", dims=2, **kw):
        if dataset == "brain":
            raise FileNotFoundError("MNI152 template not found")
        return real(dataset, dims, **kw)

    st.cache_resource.clear()
    monkeypatch.setattr(backend, "sample_pair", no_brain)
    try:
        at = open_page("home")
        assert not at.exception and not at.error
        assert any("brain sample is unavailable" in w.value and "shapes" in w.value for w in at.warning)
        run = next(iter(at.session_state["runs"].values()))
        assert run.pair_name.startswith("shapes")
        assert next(m for m in at.metric if m.label == "Mean Dice").value != "n/a"
    finally:
        st.cache_resource.clear()


def test_data_page_window_slider_and_label_toggle():
    at = open_page("data")
    level = at.slider(key="view_fixed_level")
    level.set_value((level.min + level.max) / 2).run()
    at.toggle(key="view_fixed_labels").set_value(False).run()
    assert_clean(at)
    assert at.dataframe, "header facts table is shown"
    facts = at.dataframe[0].value
    assert {"shape", "spacing (mm)", "origin (mm, LPS)", "orientation"} <= set(facts.columns)


def test_data_page_shows_the_coil_shading_n4_finds_and_says_why_ct_has_none():
    """The sample subjects are synthesised with MR coil shading (strength 0.15: up to ~35 % between two places):
    the Data page's N4 estimate shows it for both images, with the field itself; an image with negative values
    (CT in HU) gets a one-line reason instead of a field."""
    from regcore.data.pairs import Pair
    from regcore.image import Image

    at = open_page("data")
    at.button(key="data_bias_estimate").click().run()
    assert_clean(at)
    ranges = [m.value for m in at.markdown if m.value.startswith("Over the object the shading runs from")]
    assert len(ranges) == 2, ranges
    spans = [float(r.split("up to ")[1].split(" %")[0]) for r in ranges]
    assert all(10 <= s <= 60 for s in spans), ranges  # the synthesised shading, not noise and not anatomy
    assert at.slider(key="bias_view_fixed_level") and at.slider(key="bias_view_moving_level")

    pair = at.session_state["pair"]
    hounsfield = Image(pair.fixed.data * 2000.0 - 1000.0, pair.fixed.geometry, name="ct.nii.gz")
    at.session_state["pair"] = Pair("ct pair", hounsfield, hounsfield)
    at.run()
    assert not [m for m in at.markdown if m.value.startswith("Over the object")], (
        "the old pair's fields are gone"
    )
    at.button(key="data_bias_estimate").click().run()
    assert_clean(at)
    assert any("non-negative intensities (MR), but 'ct.nii.gz' reaches -1000" in i.value for i in at.info)


def test_data_page_corrupt_upload_gives_clear_error_and_keeps_the_pair():
    at = open_page("data")
    pair_before = at.session_state["pair"]
    at.segmented_control(key="data_source").set_value("Upload").run()
    at.file_uploader(key="up_fixed").set_value(
        ("fixed.nii.gz", b"this is not a nifti file", "application/gzip")
    )
    at.file_uploader(key="up_moving").set_value(
        ("moving.mha", b"\x00\x01garbage", "application/octet-stream")
    )
    at.run()
    at.button(key="data_use_upload").click().run()
    assert not at.exception
    assert at.error and "could not read" in at.error[0].value
    assert at.session_state["pair"] is pair_before, "a bad upload must not replace the loaded pair"
    assert any("Current pair" in h.value for h in at.subheader), "the page keeps working below the error"


def test_evaluate_page_shows_tables_plots_and_exports():
    at = open_page("evaluate")
    assert_clean(at)
    from pages import _tables as tables
    from regcore.metrics.presence import mean_over_present

    table = at.dataframe[0].value
    assert tables.DICE_IN_BOTH in table.columns and len(table) >= 2, "a 'before' row and the run"
    assert not any("_" in c for c in table.columns), "column titles for people"
    run = next(iter(at.session_state["runs"].values()))
    before_row = table[table["Run"].str.startswith("before")].iloc[0]
    expected = mean_over_present(run.before_metrics["dice"], tables.presence(run)).mean
    assert before_row[tables.DICE_IN_BOTH] == pytest.approx(expected), "before = RunRecord.before_metrics"
    at.toggle(key="eval_all_labels").set_value(True).run()
    assert_clean(at)
    table = at.dataframe[0].value
    before_row = table[table["Run"].str.startswith("before")].iloc[0]
    assert before_row[tables.DICE_ALL] == pytest.approx(run.before_metrics["dice_mean"]), "all = stored mean"
    assert any("Dice per structure" in m.value for m in at.markdown), "per-structure Dice table"
    assert any(e.label.startswith("Settings of each run") for e in at.expander), "the settings table"
    at.slider(key="eval_tile").set_value(8).run()
    assert_clean(at)
    labels = [b.label for b in at.get("download_button")]
    assert {"Metrics CSV", "QA report (HTML)"} <= set(labels), labels


def test_learn_labs_render():
    at = open_page("learn")
    for lab in [
        "Transformations",
        "Similarity landscapes",
        "Diffeomorphisms and folding",
        "Multi-resolution",
        "FLE / FRE / TRE",
    ]:
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
    from pages._views import VIEWS

    at = open_page("evaluate")
    run = next(iter(at.session_state["runs"].values()))
    shown = [v for v in VIEWS if v.when is None or v.when(run)]
    assert at.segmented_control(key="eval_view").options == [v.title for v in shown]
    assert "Mechanism" not in [v.title for v in shown], "a classical run has no mechanism to show"
    for view in shown:
        at.segmented_control(key="eval_view").set_value(view.title).run()
        assert_clean(at)
        if view.title == "Jacobian":  # the number comes from the run's metrics, not from the page
            from regcore.viz import format_number

            folded = format_number(run.metrics["folding_percent"])
            assert any(f"{folded} %" in c.value for c in at.caption)
        if view.title == "Contours" and run.fixed_labels is not None:  # the label legend is on screen
            assert any("rl-label-legend" in str(e.proto) for e in at.get("html"))
        if view.title == "Landmarks":
            assert any(
                f"{run.before_metrics['tre_mean_mm']:.2f} mm before -> {run.metrics['tre_mean_mm']:.2f} mm"
                in c.value
                for c in at.caption
            )


def test_a_neural_ode_run_shows_its_trajectory_in_the_mechanism_view():
    at = open_page("register")
    at.selectbox(key="reg_family").set_value("learned").run()
    at.selectbox(key="reg_method").set_value("neural_ode").run()
    at.slider(key="reg_p_neural_ode_iterations").set_value(5).run()
    at.text_input(key="reg_label_neural_ode").set_value("ode").run()
    at.button(key="reg_run").click().run()
    assert_clean(at)
    at.switch_page("pages/evaluate.py").run()
    at.selectbox(key="eval_focus").set_value("ode").run()
    assert "Mechanism" in at.segmented_control(key="eval_view").options
    at.segmented_control(key="eval_view").set_value("Mechanism").run()
    assert_clean(at)
    steps = len(at.session_state["runs"]["ode"].result.extras["trajectory"])
    assert at.slider(key="eval_traj").max == steps - 1 and steps > 2
    at.slider(key="eval_traj").set_value(0).run()
    assert_clean(at)
    assert any("Convergence" in m.value for m in at.markdown)
    at.selectbox(key="eval_focus").set_value(next(k for k in at.session_state["runs"] if k != "ode")).run()
    assert_clean(at)  # back to a run without a mechanism: the view falls back to the first one
    assert "Mechanism" not in at.segmented_control(key="eval_view").options


def test_a_new_view_is_one_registered_function():
    import streamlit as st

    from pages import _views as views

    with pytest.raises(ValueError, match="already registered"):
        views.view("Checkerboard")(lambda ctx: None)
    n = len(views.VIEWS)

    @views.view("Test-only view", "draws the run's method")
    def _test_view(ctx):
        st.write(f"method={ctx.record.method} shape={ctx.view.fixed.shape}")

    try:
        at = open_page("evaluate")
        at.segmented_control(key="eval_view").set_value("Test-only view").run()
        assert_clean(at)
        assert any(m.value.startswith("method=") for m in at.markdown)
    finally:
        del views.VIEWS[n:]


@pytest.mark.slow
def test_data_page_loads_a_pair_from_a_server_folder(shared_data, monkeypatch):
    monkeypatch.setenv("REGLAB_DATA_ROOTS", str(shared_data))  # a configured data root (pages/_roots.py)
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
    at.text_input(key="data_folder_path").set_value("nonexistent/folder").run()
    at.button(key="data_scan").click().run()
    assert not at.exception
    assert "folder not found" in at.error[0].value


def test_default_method_follows_the_image_dimension():
    """demons in 2D, fireants in 3D (regcore.methods.registry.DEFAULT_DEFORMABLE, chosen on the dev benchmark)."""
    from pages import _state as state

    assert (state.default_method(2), state.default_method(3)) == ("demons", "fireants")


def test_parameter_titles_capitalise_acronyms_but_not_units():
    from pages._widgets import param_title

    assert param_title("ncc_window") == "NCC window"
    assert param_title("smooth_in_mm") == "Smooth in mm"
    assert param_title("lr") == "Learning rate"
