"""A server others can use: data roots, traversal and symlinks refused, sessions isolated (uploads,
training views, exports), per-visitor and server-wide run limits, failures that keep earlier runs."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hostile_inputs import write_pair
from streamlit.testing.v1 import AppTest

from pages import _limits as limits
from pages import _roots as roots
from regcore.io import ImageIOError, load_image
from regcore.io.confine import confined_to

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")


@pytest.fixture(autouse=True)
def _chdir(monkeypatch):
    monkeypatch.chdir(ROOT)


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """A configured data root holding a valid folder, plus a secret file and folder outside it."""
    root = tmp_path / "data"
    pair = write_pair(root / "study" / "images")
    for p in list(pair.values()):
        if "labels" in p.name or p.suffix == ".csv":
            p.unlink()
    secret = tmp_path / "secret"
    secret.mkdir()
    nib.save(nib.Nifti1Image(np.ones((8, 8), np.float32), np.eye(4)), secret / "private.nii.gz")
    (root / "escape").symlink_to(secret, target_is_directory=True)
    monkeypatch.setenv("REGLAB_DATA_ROOTS", str(root))
    return root, secret


def test_default_roots_are_the_sample_data_and_a_data_folder_beside_the_app(monkeypatch, tmp_path):
    monkeypatch.delenv("REGLAB_DATA_ROOTS", raising=False)
    monkeypatch.setenv("REGLAB_SAMPLE_DIR", str(tmp_path))
    assert roots.data_roots() == [tmp_path.resolve()] + (
        [(ROOT / "data").resolve()] if (ROOT / "data").is_dir() else []
    )
    assert "REGLAB_DATA_ROOTS" in roots.HOW_TO_ADD


def test_traversal_absolute_paths_and_symlinks_out_of_a_root_are_refused(data_root):
    root, secret = data_root
    assert roots.resolve_folder(str(root), "study") == (root / "study").resolve()
    for text, match in (
        ("../secret", "leads outside"),
        ("study/../../secret", "leads outside"),
        ("escape", "leads outside"),
        (str(secret), "outside the data folders"),
        ("/etc", "outside the data folders"),
        ("nothere", "folder not found"),
    ):
        with pytest.raises(ValueError, match=match):
            roots.resolve_folder(str(root), text)


def test_confined_reads_refuse_symlinked_files_that_lead_out_of_the_roots(data_root):
    root, secret = data_root
    (root / "study" / "images" / "linked.nii.gz").symlink_to(secret / "private.nii.gz")
    with confined_to([root]):
        with pytest.raises(
            ImageIOError,
            match=r"linked\.nii\.gz: is outside the allowed data folders \(through a "
            "symbolic link\\)",
        ):
            load_image(root / "study" / "images" / "linked.nii.gz")
        with pytest.raises(ImageIOError, match="outside the allowed data folders"):
            load_image(secret / "private.nii.gz")
        assert load_image(root / "study" / "images" / "fixed.nii.gz").shape == (32, 32)
    assert load_image(secret / "private.nii.gz").shape == (8, 8), "outside a confined block: unrestricted"
    from regcore.data import load_folder

    with roots.confined():
        ds = load_folder(root / "study")
    assert any("linked.nii.gz" in e and "outside the allowed data folders" in e for e in ds.errors), ds.errors


def _data_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=240).run()
    at.switch_page("pages/data.py").run()
    return at


def test_data_page_lists_only_configured_roots_and_refuses_the_rest(data_root):
    root, secret = data_root
    at = _data_page()
    at.segmented_control(key="data_source").set_value("Server folder").run()
    assert at.selectbox(key="data_root").options == [str(root.resolve())]
    assert any("REGLAB_DATA_ROOTS" in c.value for c in at.caption), "the page explains how to add a folder"
    for text, match in (
        ("../secret", "leads outside"),
        ("escape", "leads outside"),
        ("/etc", "outside the data"),
    ):
        at.text_input(key="data_folder_path").set_value(text).run()
        at.button(key="data_scan").click().run()
        assert not at.exception and match in at.error[0].value, [e.value for e in at.error]
    at.text_input(key="data_folder_path").set_value("study").run()
    at.button(key="data_scan").click().run()
    assert not at.error, [e.value for e in at.error]
    assert at.selectbox(key="data_folder_pair").options


def _upload(at: AppTest, tag: str, folder: Path) -> None:
    pair = write_pair(folder)
    at.segmented_control(key="data_source").set_value("Upload").run()
    for key, role in (("up_fixed", "fixed"), ("up_moving", "moving")):
        at.file_uploader(key=key).set_value(
            (f"{role}_{tag}.nii.gz", pair[role].read_bytes(), "application/gzip")
        )
    at.run()
    at.button(key="data_use_upload").click().run()
    assert not at.error, [e.value for e in at.error]


def test_uploads_are_isolated_between_sessions(tmp_path):
    a, b = _data_page(), _data_page()
    _upload(a, "alice", tmp_path / "a")
    assert a.session_state["pair"].name == "fixed_alice.nii.gz <- moving_alice.nii.gz"
    b.run()
    assert "alice" not in b.session_state["pair"].name
    assert "uploads" not in b.session_state or not b.session_state["uploads"], (
        "B never holds A's decoded files"
    )
    _upload(b, "bob", tmp_path / "b")
    a.run()
    assert "bob" not in a.session_state["pair"].name
    assert set(a.session_state["uploads"]).isdisjoint(b.session_state["uploads"]) or all(
        a.session_state["uploads"][k] is not b.session_state["uploads"][k]
        for k in set(a.session_state["uploads"]) & set(b.session_state["uploads"])
    )


def _fake_start(runs: Path):
    def start(config, run_id=None, pair=None):
        from regcore.train.config import save_config
        from regcore.train.status import write_status

        run_id = f"fake-{len(list(runs.glob('*')))}"
        (runs / run_id).mkdir(parents=True)
        save_config(config, runs / run_id / "config.json")
        write_status(
            runs / run_id, state="running", pid=os.getpid(), step=1, total_steps=4, message="epoch 1/2"
        )
        return run_id

    return start


def test_training_views_and_controls_are_isolated(tmp_path, monkeypatch):
    from regcore.train import jobs

    runs = tmp_path / "runs"
    monkeypatch.setenv("REGLAB_RUNS_DIR", str(runs))
    runs.mkdir()
    monkeypatch.setattr(jobs, "start", _fake_start(runs))
    page = str(ROOT / "pages" / "train.py")
    a, b = (
        AppTest.from_file(page, default_timeout=60).run(),
        AppTest.from_file(page, default_timeout=60).run(),
    )
    a.button(key="train_quick_demo").click().run()
    assert not a.error, [e.value for e in a.error]
    mine = a.session_state["train_selected"]
    b.run()
    assert b.session_state["train_selected"] == mine, "B may watch the shared runs list"
    stop_b = b.button(key="train_stop")
    assert stop_b.disabled and any("another visitor" in c.value for c in b.caption), (
        "only the owner may stop it"
    )
    assert not a.button(key="train_stop").disabled
    a.button(key="train_use").click().run() if not a.button(key="train_use").disabled else None
    b.run()
    assert "register_method" not in b.session_state, "A's 'use this model' never reaches B"


def test_exports_carry_only_the_sessions_own_run(monkeypatch):
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    stored: dict[str, bytes] = {}
    real = MemoryMediaFileStorage.load_and_get_id

    def record(self, path_or_data, mimetype, kind, filename=None):
        file_id = real(self, path_or_data, mimetype, kind, filename)
        stored[file_id] = path_or_data if isinstance(path_or_data, bytes) else b""
        return file_id

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", record)
    from pages import _backend as backend

    sessions = {}
    for who, method in (("alice", None), ("bob", "bspline")):  # alice keeps the default sample run
        at = AppTest.from_file(APP, default_timeout=240).run()
        run = next(iter(at.session_state["runs"].values()))
        if method:  # bob's own registration of the same pair
            result, metrics = backend.run_registration(run.pair, method, {"iterations": 10}, device="cpu")
            run = backend.RunRecord(run.pair, result, metrics, label=f"run of {who}")
        at.session_state["runs"] = {f"run of {who}": run}
        at.switch_page("pages/evaluate.py").run()
        assert not at.exception
        csv_button = next(x for x in at.get("download_button") if x.proto.label == "Metrics CSV")
        sessions[who] = stored[Path(csv_button.proto.url).stem]
    assert sessions["alice"] != sessions["bob"]
    assert b"bspline" in sessions["bob"] and b"bspline" not in sessions["alice"]


def test_run_queue_limits_per_visitor_and_server(monkeypatch):
    q = limits.RunQueue()
    monkeypatch.setenv("REGLAB_MAX_CONCURRENT_RUNS", "4")
    monkeypatch.setenv("REGLAB_MAX_RUNS_PER_IP", "2")
    with (
        q.slot(("session:x", "ip:1.2.3.4")),
        q.slot(("session:y", "ip:1.2.3.4")),
        pytest.raises(limits.ServerBusy, match="from your address"),
    ):  # a third tab behind the same address
        with q.slot(("session:z", "ip:1.2.3.4")):
            pass
    monkeypatch.setenv("REGLAB_MAX_CONCURRENT_RUNS", "1")
    monkeypatch.setenv("REGLAB_MAX_QUEUED_RUNS", "1")
    order, started = [], threading.Event()
    release = threading.Event()

    def hold(who):
        with q.slot(who):
            order.append(who)
            started.set()
            release.wait(10)

    t1 = threading.Thread(target=hold, args=("v1",))
    t1.start()
    started.wait(5)
    with pytest.raises(limits.ServerBusy, match="in this browser session are already running"):
        with q.slot("v1"):
            pass
    t2 = threading.Thread(target=hold, args=("v2",))
    t2.start()
    deadline = time.time() + 5
    while q.snapshot()["waiting"] < 1 and time.time() < deadline:
        time.sleep(0.01)
    with pytest.raises(limits.ServerBusy, match="server is busy"):  # 1 running + 1 waiting: full
        with q.slot("v3"):
            pass
    release.set()
    t1.join(10)
    t2.join(10)
    assert order == ["v1", "v2"] and q.snapshot() == {"running": 0, "waiting": 0}

    def give_up(position):
        raise RuntimeError("visitor left")

    blocker = threading.Event()

    def hold_long():
        with q.slot("v9"):
            blocker.wait(10)

    t3 = threading.Thread(target=hold_long)
    t3.start()
    time.sleep(0.1)
    with pytest.raises(RuntimeError, match="visitor left"):  # leaving the queue frees its place
        with q.slot("v4", on_wait=give_up):
            pass
    blocker.set()
    t3.join(10)
    assert q.snapshot() == {"running": 0, "waiting": 0}


def test_two_registrations_at_once_both_finish_correctly(tmp_path):
    from regcore.data import sample_pair
    from regcore.register import run_pair

    pairs = [sample_pair("shapes", 2, k, k + 1) for k in (0, 2)]
    serial = [run_pair(p, "demons", {"iterations": 20}, device="cpu")[1]["dice_mean"] for p in pairs]
    results: dict[int, float] = {}

    def work(k):
        with limits.RUNS.slot(f"visitor-{k}"):
            results[k] = run_pair(pairs[k], "demons", {"iterations": 20}, device="cpu")[1]["dice_mean"]

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == pytest.approx({0: serial[0], 1: serial[1]}, abs=1e-6)


def test_a_failed_registration_keeps_the_sessions_earlier_runs(monkeypatch):
    at = AppTest.from_file(APP, default_timeout=240).run()
    at.switch_page("pages/register.py").run()
    before = dict(at.session_state["runs"])
    assert before, "home registered the sample pair"
    from pages import _backend as backend

    def broken(*a, **k):
        raise RuntimeError("the method crashed half-way")

    monkeypatch.setattr(backend, "run_registration", broken)
    at.button(key="reg_run").click().run()
    assert not at.exception and any("crashed half-way" in e.value for e in at.error)
    assert dict(at.session_state["runs"]) == before


def test_a_visitor_cannot_point_a_checkpoint_outside_the_allowed_folders():
    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["register_method"] = "voxelmorph"
    at.session_state["register_overrides"] = {"checkpoint": "/etc/passwd"}
    at.run()
    at.switch_page("pages/register.py").run()
    at.button(key="reg_run").click().run()
    assert any("outside the folders this server allows" in e.value for e in at.error), [
        e.value for e in at.error
    ]
    with pytest.raises(ValueError, match="outside"):
        roots.check_model_path(json.__file__)
