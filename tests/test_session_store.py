"""A browser session survives a reload (pair, runs, page choices), sessions stay apart, named sessions
reopen, and bad names or damaged folders give one clear line (pages/_session_store.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
TIMEOUT = 240


@pytest.fixture(autouse=True)
def _private_store(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("REGLAB_SESSION_DIR", str(tmp_path / "sessions"))
    return tmp_path / "sessions"


def open_app(page: str = "home", session: str | None = None) -> AppTest:
    from pages import _nav as nav

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if session:
        at.query_params["session"] = session
    at.run()
    if not nav.page(page).default:
        at.switch_page(nav.page(page).path).run()
    return at


def session_of(at: AppTest) -> str:
    return at.session_state["_reglab_browser_session"]


def register(at: AppTest, label: str) -> None:
    from pages import _backend as backend
    from pages import _state as state

    method = state.default_method(2)
    at.selectbox(key="reg_family").set_value(str(backend.get_spec(method).family)).run()
    at.selectbox(key="reg_method").set_value(method).run()
    at.text_input(key=f"reg_label_{method}").set_value(label).run()
    at.button(key="reg_run").click().run()
    assert not at.exception and label in at.session_state["runs"]


def test_a_reload_restores_the_runs_and_the_pair():
    from pages import _session_store as session_store

    first = open_app("register")
    sid = session_of(first)
    assert len(sid) == 32 and first.query_params["session"] in ([sid], sid), "the id is in the URL"
    register(first, "kept run")
    session_store.flush()
    before = first.session_state["runs"]["kept run"]

    again = open_app("evaluate", session=sid)  # a reload: a new Streamlit session, the same URL
    assert not again.exception
    restored = again.session_state["runs"]["kept run"]
    assert restored.method == before.method
    assert restored.metrics["dice_mean"] == pytest.approx(before.metrics["dice_mean"])
    assert torch.allclose(restored.result.displacement, before.result.displacement.float(), atol=1e-5)
    assert restored.pair.has_ground_truth, "a sample pair comes back as itself, ground truth included"
    assert "kept run" in again.session_state["eval_runs"]


def test_another_session_does_not_see_the_runs():
    from pages import _session_store as session_store

    first = open_app("register")
    register(first, "private run")
    session_store.flush()
    other = open_app("evaluate")
    assert session_of(other) != session_of(first)
    assert "private run" not in other.session_state["runs"]


def test_removed_runs_stay_removed_after_a_reload():
    from pages import _session_store as session_store

    at = open_app("register")
    register(at, "to remove")
    at.multiselect(key="reg_drop").set_value(["to remove"]).run()
    at.button(key="reg_drop_btn").click().run()
    session_store.flush()
    again = open_app("register", session=session_of(at))
    assert "to remove" not in again.session_state["runs"]


def test_page_choices_survive_other_pages_and_a_reload():
    from pages import _session_store as session_store

    at = open_app("data")
    at.segmented_control(key="data_source").set_value("Upload").run()
    at.switch_page("pages/register.py").run()
    at.switch_page("pages/data.py").run()
    assert at.segmented_control(key="data_source").value == "Upload"
    session_store.flush()
    again = open_app("data", session=session_of(at))
    assert again.segmented_control(key="data_source").value == "Upload"


def test_an_uploaded_pair_round_trips_through_the_store(tmp_path):
    from pages import _session_store as session_store
    from regcore.data import Pair
    from regcore.image import Geometry, Image, Landmarks

    g = Geometry(shape=(12, 10), spacing=(1.5, 2.0), origin=(3.0, -4.0), direction=((1.0, 0.0), (0.0, 1.0)))
    fixed = Image(torch.rand(1, 12, 10), g)
    labels = Image(torch.randint(0, 4, (1, 12, 10)).to(torch.uint8), g, is_labels=True)
    marks = Landmarks(points=np.array([[3.0, -4.0], [6.0, 0.0]]), ids=("a", "b"))
    pair = Pair("up.nii <- up2.nii", fixed, fixed, labels, labels, marks, marks, label_names={1: "one"})
    session_store._write_pair(tmp_path, pair)
    back = session_store._read_pair(tmp_path, sample_pair=None)
    assert back.name == pair.name and back.label_names == {1: "one"}
    assert torch.allclose(back.fixed.data, fixed.data) and back.fixed.geometry.same_grid(g)
    assert torch.equal(back.moving_labels.data.to(torch.uint8), labels.data)
    assert np.allclose(back.fixed_landmarks.points, marks.points)


def test_named_sessions_save_and_reopen_in_another_browser():
    from pages import _session_store as session_store

    at = open_app("register")
    register(at, "for class")
    session_store.flush()
    at.text_input(key="session_name").set_value("lecture 3").run()
    at.button(key="session_save").click().run()
    assert not at.error, [e.value for e in at.error]
    assert session_store.saved_names() == ["lecture 3"]

    other = open_app("register")
    assert "for class" not in other.session_state["runs"]
    other.selectbox(key="session_open_name").set_value("lecture 3").run()
    other.button(key="session_open").click().run()
    assert "for class" in other.session_state["runs"]


@pytest.mark.parametrize("name", ["", "../escape", "a/b", "x" * 80, ".hidden"])
def test_bad_session_names_are_one_clear_line(name):
    from pages import _session_store as session_store

    with pytest.raises(ValueError, match="session name"):
        session_store._named_dir(name)


def test_a_forged_session_id_in_the_url_is_replaced():
    at = open_app("home", session="../../etc")
    sid = session_of(at)
    assert sid != "../../etc" and len(sid) == 32 and all(c in "0123456789abcdef" for c in sid)


def test_a_damaged_session_folder_is_a_warning_not_a_lockout(_private_store):
    sid = "ab" * 16
    folder = _private_store / "live" / sid
    folder.mkdir(parents=True)
    (folder / "runs.json").write_text("{not json", encoding="utf-8")
    at = open_app("home", session=sid)
    assert not at.exception and not at.error
    assert any("Could not restore" in t.value for t in at.toast)


def test_persistence_can_be_turned_off(monkeypatch, tmp_path):
    from pages import _session_store as session_store

    monkeypatch.setenv("REGLAB_SESSION_DIR", "")
    at = open_app("register")
    register(at, "not stored")
    session_store.flush()
    assert session_store.root() is None and not any(tmp_path.rglob("run.json"))
    assert os.environ["REGLAB_SESSION_DIR"] == ""


def test_files_chosen_for_upload_survive_a_visit_to_another_page():
    at = open_app("data")
    at.segmented_control(key="data_source").set_value("Upload").run()
    at.file_uploader(key="up_fixed").set_value(("fixed.nii.gz", b"not read yet", "application/gzip")).run()
    at.switch_page("pages/register.py").run()
    at.switch_page("pages/data.py").run()
    assert any("Chosen earlier" in c.value and "fixed.nii.gz" in c.value for c in at.caption)
    at.file_uploader(key="up_fixed").set_value(None).run()  # removed by the visitor: forgotten
    assert not any("Chosen earlier" in c.value for c in at.caption)
