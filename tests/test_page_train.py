"""The Train page (AppTest): starts a tiny run, sees metrics appear, 'use this model' sets the contract keys."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
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
    assert "Validation Dice" in labels and "Folding %" in labels
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


# -- issue #18 ------------------------------------------------------------------------------------


def _fake_run(runs_dir: Path, run_id: str, state: str = "finished", **config) -> None:
    """A run folder as jobs.start leaves it, without a worker (state on disk only)."""
    from regcore.train.status import write_status

    (runs_dir / run_id).mkdir(parents=True)
    cfg = {
        "family": "voxelmorph",
        "data": "shapes",
        "lr": 0.001,
        "dims": 2,
        "train_shape": [32, 32],
        **config,
    }
    (runs_dir / run_id / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    write_status(runs_dir / run_id, state=state, step=6, total_steps=6, message="finished: val Dice 0.500")


def _stop_all(runs_dir: Path) -> None:
    from regcore.train import jobs

    for r in jobs.list_runs():
        if r["state"] in ("queued", "running"):
            os.kill(int(r["pid"]), signal.SIGKILL)  # the worker this test started


def test_watch_run_switches_to_a_newly_started_run(runs_dir):
    _fake_run(runs_dir, "20200101-000000-old-a")
    _fake_run(runs_dir, "20200101-000001-old-b")
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    at.selectbox(key="train_watch").set_value("20200101-000000-old-a").run()
    try:
        at.button(key="train_quick_demo").click().run()
        new = at.session_state["train_selected"]
        assert new not in ("20200101-000000-old-a", "20200101-000001-old-b")
        watch = at.selectbox(key="train_watch")
        assert watch.value == new
        # the browser keeps its own choice unless the page sends a new value (set_value) with the widget
        assert watch.proto.set_value and watch.proto.raw_value == new
        at.run()  # the next rerun (e.g. the browser sending its widget values) keeps the new run
        assert at.selectbox(key="train_watch").value == new
    finally:
        _stop_all(runs_dir)


def test_runs_table_progress_and_settings_read_like_words(runs_dir):
    _fake_run(runs_dir, "20200101-000000-done", family_config={"int_steps": 7})
    at = AppTest.from_file(PAGE, default_timeout=30)
    at.run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert list(table.columns[:3]) == ["Run", "State", "Epoch"]
    assert table["State"].tolist() == ["Finished"]
    texts = [p.proto.text for p in at.get("progress")]
    assert texts == ["Finished: val Dice 0.500"], texts  # not "finished: finished: ..."
    settings = at.dataframe[1].value  # the watched run's settings: a Setting / Value table
    rows = dict(zip(settings["Setting"], settings["Value"]))
    assert rows["Learning rate"] == "0.001" and rows["Dimensions"] == "2"
    assert rows["Training grid (voxels)"] == "32 × 32" and rows["voxelmorph: Int steps"] == "7"
    assert not any("{" in v for v in rows.values())
    # the table re-reads the runs every 2 s (a timed fragment: AppTest cannot fire its timer)
    assert len(at._fragment_storage._fragments) >= 2


def test_a_run_validated_on_unlabelled_pairs_shows_its_loss(runs_dir):
    """A 3D run on a manifest of unlabelled volumes records no validation Dice: the page shows the validation
    loss instead of failing on the empty Dice."""
    _fake_run(runs_dir, "20200101-000000-unlabelled")
    epochs = [
        {"kind": "epoch", "epoch": e, "step": 10 * e, "val_dice": None, "val_dice_before": None,
         "val_folding_percent": 0.0, "val_loss": loss}
        for e, loss in ((1, -0.169), (2, -0.288))
    ]  # fmt: skip
    (runs_dir / "20200101-000000-unlabelled" / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in epochs), encoding="utf-8"
    )
    at = AppTest.from_file(PAGE, default_timeout=30)
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    metric = {m.label: m for m in at.metric}["Validation loss"]
    assert metric.value == "-0.288" and "-0.119 since epoch 1" in str(metric.proto.delta)


def test_form_labels_are_words_not_field_names(runs_dir):
    at = AppTest.from_file(PAGE, default_timeout=30)
    at.run()
    labels = {w.label for w in list(at.selectbox) + list(at.number_input) + list(at.text_input)}
    assert {"Learning rate", "Dimensions", "Training data"} <= labels
    assert not {"lr", "dims", "data"} & labels
    data = at.selectbox(key="train_voxelmorph_data")
    assert "Current pair (from the Data page)" in data.options


def test_validation_chart_axes():
    from pages._train_views import curves

    recs = [{"kind": "step", "epoch": 1, "step": s, "total": 1.0 / s, "time_s": s} for s in range(1, 7)] + [
        {"kind": "epoch", "epoch": e, "step": 3 * e, "val_dice": 0.5 + e / 10, "val_folding_percent": 0.0}
        for e in range(3)
    ]
    layout = curves({"run": recs}).layout
    assert layout.yaxis3.range[0] == 0 and layout.yaxis3.title.text == "Folding %"  # no negative folding
    assert layout.xaxis2.dtick == 1 and layout.xaxis2.tickmode == "linear"  # whole epochs only
    titled = [
        layout.xaxis.title.text,
        layout.yaxis.title.text,
        layout.xaxis2.title.text,
        layout.yaxis2.title.text,
    ]
    assert all(titled), titled


def test_preview_uses_the_viz_display_orientation():
    """Axis 0 runs to the right and axis 1 up (as regcore.viz panels), flips reverse them."""
    import numpy as np

    from regcore.train.previews import preview_figure

    f = np.zeros((16, 24))
    f[:4] = 1.0  # low axis-0 indices bright
    disp, jac = np.zeros((2, 16, 24)), np.ones((16, 24))
    fig = preview_figure(f, f, disp, jac)
    shown = fig.axes[0].images[0]
    assert shown.get_array().shape == (24, 16) and shown.origin == "lower"  # rows = axis 1, columns = axis 0
    assert fig.axes[0].get_xlim() == (-0.5, 15.5)
    flipped = preview_figure(f, f, disp, jac, flips=(True, False))
    assert flipped.axes[0].get_xlim() == (15.5, -0.5) and flipped.axes[0].get_ylim() == (-0.5, 23.5)


def test_use_this_model_names_registrations_after_the_checkpoint(runs_dir):
    _fake_run(runs_dir, "20200101-000000-done")
    (runs_dir / "20200101-000000-done" / "model.pt").write_bytes(b"weights")
    at = AppTest.from_file(PAGE, default_timeout=30)
    at.run()
    at.button(key="train_use").click().run()
    chosen = at.session_state["register_overrides"]["checkpoint"]
    assert (
        chosen.endswith("20200101-000000-done/model.pt")
        and at.session_state["register_method"] == "voxelmorph"
    )


def test_register_page_names_its_run_after_the_trained_checkpoint(runs_dir):
    """Through the whole app: Train 'Use this model', then the Register page's run name."""
    _fake_run(runs_dir, "20200101-000000-done")
    (runs_dir / "20200101-000000-done" / "model.pt").write_bytes(b"weights")
    at = AppTest.from_file(str(Path(PAGE).parents[1] / "app.py"), default_timeout=120).run()
    at.switch_page("pages/train.py").run()
    at.button(key="train_use").click().run()
    at.switch_page("pages/register.py").run()
    assert not at.exception
    name = at.text_input(key="reg_label_voxelmorph")
    assert name.value == "" and name.placeholder == "voxelmorph (20200101-000000-done/model.pt)"


def test_run_names_follow_the_checkpoint_unless_typed():
    from pages._state import suggested_run_name

    assert suggested_run_name("voxelmorph", None) == "voxelmorph"
    assert suggested_run_name("voxelmorph", "/x/runs/r1/model.pt") == "voxelmorph (r1/model.pt)"
    assert suggested_run_name("voxelmorph", "/x/runs/r2/best.pt") != suggested_run_name(
        "voxelmorph", "/x/runs/r1/model.pt"
    )


def test_start_on_the_session_pair_writes_it_into_the_run(runs_dir):
    from regcore.data import sample_pair

    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["pair"] = sample_pair(dataset="shapes", dims=2)
    at.run()
    at.selectbox(key="train_voxelmorph_data").set_value("pair")
    at.number_input(key="train_voxelmorph_epochs").set_value(1)
    at.number_input(key="train_voxelmorph_steps_per_epoch").set_value(1)
    at.text_input(key="train_voxelmorph_train_shape").set_value("32, 32")
    try:
        [b for b in at.button if b.label == "Start training"][0].click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        run = runs_dir / at.session_state["train_selected"]
        cfg = json.loads((run / "config.json").read_text(encoding="utf-8"))
        assert cfg["data"] == "folder" and cfg["data_path"] == str((run / "pair" / "pairs.csv").resolve())
        assert (run / "pair" / "images" / "fixed.nii.gz").is_file()
        assert at.dataframe[0].value["Data"].tolist() == ["Current pair"]
    finally:
        _stop_all(runs_dir)


def test_a_short_training_on_one_pair_runs_both_directions(tmp_path):
    """Real training (2 steps, 32x32, CPU) on a pair written as the recipe's folder source."""
    from regcore.data import sample_pair
    from regcore.train.config import config_from_dict, save_config
    from regcore.train.datasets import PairSource
    from regcore.train.loop import run_training
    from regcore.train.pair_folder import write_pair_folder

    pair = sample_pair(dataset="brain", dims=2)
    manifest = write_pair_folder(pair, tmp_path / "pair")
    cfg = config_from_dict(
        {
            "data": "folder",
            "data_path": str(manifest),
            "epochs": 1,
            "steps_per_epoch": 2,
            "batch_size": 1,
            "train_shape": [48, 48],
            "val_pairs": 2,
            "device": "cpu",
            "threads": 1,
        }
    )
    source = PairSource(cfg)
    a, b = source._real
    assert torch.equal(a["fixed"], b["moving"]) and torch.equal(a["moving"], b["fixed"])  # both directions
    assert source.orientation == pair.fixed.geometry.orientation_codes()
    save_config(cfg, tmp_path / "config.json")
    t0 = time.time()
    run_training(tmp_path / "config.json", tmp_path / "run")
    assert time.time() - t0 < 60
    status = json.loads((tmp_path / "run" / "status.json").read_text(encoding="utf-8"))
    assert status["state"] == "finished" and status["step"] == 2
    assert (tmp_path / "run" / "model.pt").is_file() and (
        tmp_path / "run" / "previews" / "epoch_001.png"
    ).is_file()
