"""The Train page (AppTest): starts a tiny run, sees metrics appear, 'use this model' sets the contract keys."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "train.py")


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("REGLAB_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path / "runs"


def _texts(at) -> str:
    parts = [e.value for e in at.markdown] + [e.value for e in at.caption] + [str(e.label) for e in at.metric]
    return "\n".join(str(p) for p in parts)


def test_page_starts_a_run_and_shows_metrics(runs_dir):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception and not at.error
    assert any("No runs yet" in i.value for i in at.info)
    at.button(key="train_quick_demo").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    run_id = at.session_state["train_selected"]
    assert (runs_dir / run_id / "config.json").is_file()
    deadline = time.time() + 90
    while time.time() < deadline:
        at.run()
        if at.metric and (runs_dir / run_id / "model.pt").is_file():
            break
        time.sleep(1.0)
    assert not at.exception and not at.error, [e.value for e in at.error]
    labels = [m.label for m in at.metric]
    assert "validation Dice" in labels and "folding %" in labels
    assert len(at.get("plotly_chart")) >= 1
    at.run()
    at.button(key="train_use").click().run()
    assert at.session_state["register_method"] == "voxelmorph"
    assert at.session_state["register_overrides"]["checkpoint"].endswith(".pt")
    assert isinstance(at.session_state["train_selected"], str)  # the page keeps only run ids


def test_bad_form_values_show_an_error_not_a_traceback(runs_dir):
    at = AppTest.from_file(PAGE, default_timeout=30)
    at.run()
    at.text_input(key="train_voxelmorph_train_shape").set_value("48, 50")
    submit = [b for b in at.button if b.label == "Start training"][0]
    submit.click().run()
    assert not at.exception
    assert any("Cannot start" in e.value and "multiples of 16" in e.value for e in at.error)
    assert not list(runs_dir.glob("*/config.json"))


def test_every_trainable_family_gets_its_own_form(runs_dir):
    """The form is built from the family registry: picking a family shows its card and its own fields."""
    from regcore.methods.learned.family import all_families

    at = AppTest.from_file(PAGE, default_timeout=30)
    at.run()
    for fam in (f for f in all_families() if f.needs_training):
        at.selectbox(key="train_family").set_value(fam.name).run()
        assert not at.exception and not at.error
        assert any(fam.summary[:40] in c.value for c in at.caption)
        keys = {
            w.key
            for w in list(at.text_input) + list(at.number_input) + list(at.checkbox) + list(at.selectbox)
        }
        for field in fam.config_dict(fam.make_config({})):
            assert f"train_{fam.name}_fam_{field}" in keys, (fam.name, field)


def test_tuple_fields_keep_their_number_type_and_name_bad_items():
    from pages._widgets import parse_numbers

    assert parse_numbers("16, 32,32", (16, 32), "widths") == [16, 32, 32]
    assert parse_numbers("(1.5, 0.5)", (1.0, 2.0), "sigmas") == [1.5, 0.5]
    assert parse_numbers("2, 0.25", (2, 0.5), "steps") == [2.0, 0.25]
    with pytest.raises(ValueError, match="widths: 'x' is not a number; give whole numbers"):
        parse_numbers("16, x", (16, 32), "widths")
