"""AppTest on the Register page: a 2D registration stored as a run, what "auto" resolves to (greyed-out boxes,
custom starting from them) and the Train page's selection."""

from __future__ import annotations

import pytest

pytest.importorskip("streamlit")
from app_kit import APP, TIMEOUT, assert_clean, open_page
from streamlit.testing.v1 import AppTest

pytestmark = pytest.mark.usefixtures("app_root_cwd")


def test_register_page_runs_a_2d_registration_and_stores_it():
    at = open_page("register")
    from pages import _state as state

    method = state.default_method(2)
    from pages import _backend as backend

    family = str(backend.get_spec(method).family)
    at.selectbox(key="reg_family").set_value(family).run()
    at.selectbox(key="reg_method").set_value(method).run()
    at.text_input(key=f"reg_label_{method}").set_value("my run").run()
    at.button(key="reg_run").click().run()
    assert_clean(at)
    assert "my run" in at.session_state["runs"]
    run = at.session_state["runs"]["my run"]
    assert run.label == "my run" and run.method == method
    assert run.result.warped.shape == run.result.fixed.shape and run.metrics["method"] == method
    assert any("Saved as run" in s.value for s in at.success)


def _auto_captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption if c.value.startswith("Auto on this pair")]


def test_register_page_shows_what_auto_settings_resolve_to_on_this_pair():
    """fireants' preset and demons' iterations and features are "auto": the page names the values they take on this pair
    (the ones the method runs, regcore's own resolution), greys out the boxes auto sets (showing those values;
    preset custom starts from them, and keeps what the user typed) and stops naming them once the user sets them."""
    import torch

    from regcore.methods.classical.demons import DemonsConfig, level_iterations
    from regcore.methods.classical.fireants import FireANTsConfig, resolve_preset

    at = open_page("register")
    fixed = at.session_state["pair"].fixed
    shape = tuple(fixed.shape)
    at.selectbox(key="reg_family").set_value("diffeomorphic").run()
    at.selectbox(key="reg_method").set_value("fireants").run()
    assert not [
        w for w in at.warning if "contrasts differ" in w.value
    ]  # T1 sample pair: one contrast, LNCC fits
    (note,) = _auto_captions(at)
    assert note.startswith(f"Auto on this pair ({' × '.join(map(str, shape))} voxels)")
    ran = resolve_preset(FireANTsConfig(), shape, fixed.spacing)
    assert f"window {ran.window}" in note and "iterations " + ", ".join(map(str, ran.iterations)) in note
    assert "greyed-out boxes" in note
    greyed = at.slider(key=f"reg_p_fireants_window_auto_{ran.window}")  # the box shows the window that runs
    assert greyed.disabled and greyed.value == ran.window
    levels = at.text_input(key=f"reg_p_fireants_levels_auto_{ran.levels}")
    assert levels.disabled and levels.value == ", ".join(map(str, ran.levels))
    assert "similarity lncc" in note
    at.selectbox(key="reg_p_fireants_preset").set_value("custom").run()
    (still_auto,) = _auto_captions(at)  # the similarity is still auto; the schedule is the user's now
    assert "similarity lncc" in still_auto and "window" not in still_auto and not at.exception
    window = at.slider(key="reg_p_fireants_window")
    assert not window.disabled and window.value == ran.window, "custom starts from what auto chose"
    assert at.text_input(key="reg_p_fireants_iterations").value == ", ".join(map(str, ran.iterations))
    at.text_input(key="reg_label_fireants").set_value("custom from auto").run()
    at.button(key="reg_run").click().run()  # custom from auto's values runs what auto runs
    at.selectbox(key="reg_p_fireants_preset").set_value("auto").run()
    at.text_input(key="reg_label_fireants").set_value("auto").run()
    at.button(key="reg_run").click().run()
    custom, auto = (at.session_state["runs"][name].result for name in ("custom from auto", "auto"))
    assert (custom.config.preset, auto.config.preset) == ("custom", "auto")
    assert torch.equal(custom.displacement, auto.displacement)
    at.selectbox(key="reg_p_fireants_preset").set_value("custom").run()
    window = at.slider(key="reg_p_fireants_window")
    window.set_value(9).run()
    at.selectbox(key="reg_p_fireants_preset").set_value("auto").run()
    assert at.slider(key=f"reg_p_fireants_window_auto_{ran.window}").disabled
    at.selectbox(key="reg_p_fireants_preset").set_value("custom").run()
    assert at.slider(key="reg_p_fireants_window").value == 9, "the user's value survives a round trip to auto"

    at.selectbox(key="reg_method").set_value("demons").run()
    (note,) = _auto_captions(at)
    assert "iterations " + ", ".join(map(str, level_iterations(DemonsConfig(), shape))) in note
    assert "Fill in those boxes" in note and not at.text_input(key="reg_p_demons_iterations").disabled
    assert (
        "compares intensities, because the intensities correlate locally at r = " in note
    )  # T1 sample pair: one contrast
    assert "bias field is removed first (N4" in note
    at.toggle(key="reg_p_demons_bias_correction").set_value(False).run()
    assert "N4" not in _auto_captions(at)[0]
    at.toggle(key="reg_p_demons_bias_correction").set_value(True).run()
    at.text_input(key="reg_p_demons_iterations").set_value("30, 20, 10").run()
    (note,) = _auto_captions(at)  # features stay auto
    assert "iterations" not in note and "compares intensities" in note and "Set features" in note
    at.selectbox(key="reg_p_demons_features").set_value("mind").run()
    assert _auto_captions(at) == []
    at.text_input(key="reg_p_demons_iterations").set_value("30, 20").run()  # invalid: no note, no crash
    assert _auto_captions(at) == [] and not at.exception


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


def test_a_small_float_box_steps_by_a_tenth_of_its_scale():
    """fireants' LNCC floor (1e-5, range 1e-8..0.1) is a typed number box: its - and + buttons move it by 1e-6
    (Streamlit's default step, 0.01, disabled -), and the value reaches the config."""
    at = open_page("register")
    at.selectbox(key="reg_family").set_value("diffeomorphic").run()
    at.selectbox(key="reg_method").set_value("fireants").run()
    box = at.number_input(key="reg_p_fireants_lncc_eps")
    assert box.value == pytest.approx(1e-5) and box.step == pytest.approx(1e-6)
    box.decrement().run()
    assert at.number_input(key="reg_p_fireants_lncc_eps").value == pytest.approx(9e-6)
    assert not at.exception


def test_a_blank_image_is_named_before_and_after_a_run():
    """A constant moving image (a failed export): the Register page says so, and a run still completes."""
    import torch

    from regcore.data import Pair

    at = open_page("register")
    pair = at.session_state["pair"]
    blank = pair.moving.with_data(torch.zeros_like(pair.moving.data))
    at.session_state["pair"] = Pair("blank moving", pair.fixed, blank)
    at.run()
    assert_clean(at)
    (warning,) = [w.value for w in at.warning if "is constant" in w.value]
    assert warning.startswith(f"moving image {blank.name!r} is constant (every voxel 0)")
    at.button(key="reg_run").click().run()
    assert_clean(at)
    run = at.session_state["runs"][at.session_state["last_run"]]
    assert run.pair.name == "blank moving" and "is constant" in " ".join(run.metrics["warnings"])
