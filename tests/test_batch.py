"""regcore.batch (serial engine): idempotent tasks, failures recorded not raised, reruns skip finished
tasks, sweeps (grid, table, Pareto HTML/PNG), background batches for the app, the Batch page, and the
DDP helpers (sharding, launcher command). The Ray engine and 2-process training: tests/test_scaleout.py."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smooth_random_field
from scipy.ndimage import gaussian_filter

from regcore.batch import PairRef, Task, manifest_refs, map_registrations, run_tasks
from regcore.batch.progress import STOP_FILE, read_status
from regcore.batch.records import result_path
from regcore.batch.sweep import expand, pareto_front, parse_grid, write_sweep_outputs
from regcore.batch.tasks import execute_task
from regcore.bench import run_benchmark
from regcore.cli import main
from regcore.image import Image
from regcore.io import save_image
from regcore.spatial.warp import warp, warp_labels

ROOT = Path(__file__).resolve().parents[1]


def make_manifest(folder: Path, n_pairs: int = 2, size: int = 32) -> Path:
    """``n_pairs`` small synthetic 2D pairs (two labelled blobs, a smooth known warp) and their CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "names.csv").write_text("value,name\n1,big\n2,small\n", encoding="utf-8")
    lines = ["name,fixed,moving,fixed_labels,moving_labels,label_names"]
    yy, xx = np.mgrid[:size, :size]
    for i in range(n_pairs):
        rng = np.random.default_rng(10 + i)
        lab = np.zeros((size, size), np.int64)
        lab[np.hypot(yy - 14, xx - 15) < 7] = 1
        lab[np.hypot(yy - 22, xx - 20) < 4] = 2
        img = gaussian_filter(lab * 0.4, 1.0) + 0.1 * gaussian_filter(rng.standard_normal((size, size)), 1.5)
        u = smooth_random_field((size, size), 2.0, seed=4 + i, sigma=4)
        m, ml = torch.tensor(img, dtype=torch.float32)[None, None], torch.tensor(lab)[None, None]
        save_image(Image.from_array(warp(m, u)[0, 0]), folder / f"f{i}.nii.gz")
        save_image(Image.from_array(m[0, 0]), folder / f"m{i}.nii.gz")
        save_image(Image.from_array(warp_labels(ml, u)[0, 0], is_labels=True), folder / f"f{i}_seg.nii.gz")
        save_image(Image.from_array(ml[0, 0], is_labels=True), folder / f"m{i}_seg.nii.gz")
        lines.append(f"pair{i},f{i}.nii.gz,m{i}.nii.gz,f{i}_seg.nii.gz,m{i}_seg.nii.gz,names.csv")
    csv = folder / "pairs.csv"
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return csv


@pytest.fixture
def manifest(tmp_path) -> Path:
    return make_manifest(tmp_path / "data")


def test_manifest_refs_and_task_keys(manifest, tmp_path):
    (manifest.parent / "bad.csv").write_text(
        "name,fixed,moving\nok,f0.nii.gz,m0.nii.gz\nmissing,f0.nii.gz,nope.nii.gz\n", encoding="utf-8"
    )
    refs, errors = manifest_refs(manifest.parent / "bad.csv")
    assert [r.name for r in refs] == ["ok"] and Path(refs[0].fixed).is_absolute()
    assert len(errors) == 1 and "line 3" in errors[0] and "nope.nii.gz" in errors[0]
    refs, errors = manifest_refs(manifest)
    assert errors == [] and len(refs) == 2 and refs[0].label_names.endswith("names.csv")
    a, b = Task("demons", refs[0], {"iterations": "5"}), Task("demons", refs[0], {"iterations": "5"})
    assert a.key == b.key and len(a.key) == 16 and a.label == "demons"
    assert (
        len(
            {
                a.key,
                Task("demons", refs[1], {"iterations": "5"}).key,
                Task("demons", refs[0]).key,
                Task("fireants", refs[0], {"iterations": "5"}).key,
            }
        )
        == 4
    )
    with pytest.raises(TypeError, match="Task.pair"):
        Task("demons", "not a pair")
    with pytest.raises(ValueError, match="pairs manifest must be an existing CSV"):
        manifest_refs(tmp_path / "none.csv")


def test_a_changed_input_file_is_a_new_task(manifest):
    """A re-run after an image was replaced must register it again, not report the result of the old file."""
    ref = manifest_refs(manifest)[0][0]
    before = Task("demons", ref).key
    assert manifest_refs(manifest)[0][0] == ref and Task("demons", ref).key == before  # unchanged: same task
    fixed = Path(ref.fixed)
    data = fixed.read_bytes()
    fixed.write_bytes(data + b"\0")  # another size (and time): as if the image had been rewritten
    assert Task("demons", manifest_refs(manifest)[0][0]).key != before
    assert ref.load().name == ref.name  # the stamps are identity only: the pair still loads


def test_changed_regcore_code_is_a_new_task(manifest, tmp_path, monkeypatch):
    """Results computed by other regcore code are not reused: the code fingerprint is part of the key."""
    import regcore
    from regcore.batch.code_version import code_fingerprint

    package = tmp_path / "regcore"
    (package / "methods").mkdir(parents=True)
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "methods" / "demons.py").write_text("STEP = 1\n", encoding="utf-8")
    monkeypatch.setattr(regcore, "__file__", str(package / "__init__.py"))
    first = code_fingerprint.__wrapped__()
    assert code_fingerprint.__wrapped__() == first and len(first) == 12
    (package / "methods" / "demons.py").write_text("STEP = 2\n", encoding="utf-8")
    second = code_fingerprint.__wrapped__()
    (package / "notes.txt").write_text("not code", encoding="utf-8")
    assert second != first and code_fingerprint.__wrapped__() == second  # .py files only
    ref = manifest_refs(manifest)[0][0]
    assert Task("demons", ref, code=first).key != Task("demons", ref, code=second).key
    assert Task("demons", ref).code == code_fingerprint()  # the running code by default


def test_execute_task_is_idempotent_and_records_failures(manifest, tmp_path, monkeypatch):
    ref = manifest_refs(manifest)[0][0]
    out = tmp_path / "out"
    out.mkdir()
    task = Task("demons", ref, {"iterations": "5"})
    rec = execute_task(task, out)
    assert rec["status"] == "ok" and rec["dice_mean"] > 0 and rec["attempts"] == 1
    assert json.loads(result_path(out, task).read_text(encoding="utf-8"))["dice_mean"] == rec["dice_mean"]
    assert "done:" in (out / "tasks" / f"{task.key}.log").read_text(encoding="utf-8")
    from regcore import register

    monkeypatch.setattr(register, "run_pair", lambda *a, **k: pytest.fail("a finished task ran again"))
    assert execute_task(task, out)["dice_mean"] == rec["dice_mean"]
    bad = Task("demons", PairRef("broken", fixed=str(tmp_path / "gone.nii.gz"), moving=ref.moving))
    failed = execute_task(bad, out)  # a data error: recorded, never raised
    assert failed["status"] == "failed" and "gone.nii.gz" in failed["error"]
    assert any("failed:" in line for line in failed["log"])


def test_serial_run_skips_finished_tasks_after_an_interrupted_run(manifest, tmp_path):
    refs = manifest_refs(manifest)[0]
    tasks = [
        Task(m, r, {"iterations": "5"} if m == "demons" else {}) for r in refs for m in ("identity", "demons")
    ]
    out = tmp_path / "batch"

    def interrupt(status):  # a STOP file after the first finished task = an interrupted run
        if status["done"] == 1:
            (out / STOP_FILE).touch()

    first = run_tasks(tasks, out, callback=interrupt)
    assert len(first) == 1 and read_status(out)["state"] == "stopped"
    kept = result_path(out, tasks[0])
    mtime = kept.stat().st_mtime_ns
    seen = []
    records = run_tasks(tasks, out, on_record=lambda t, r: seen.append(t.key))
    assert [r["status"] for r in records] == ["ok"] * 4
    assert tasks[0].key not in seen and len(seen) == 3 and kept.stat().st_mtime_ns == mtime
    status = read_status(out)
    assert status["state"] == "finished" and status["skipped"] == 1 and status["done"] == 4
    assert json.loads((out / "tasks.json").read_text(encoding="utf-8"))[0]["key"] == tasks[0].key


def test_map_registrations_generic_api_with_outputs(manifest, tmp_path):
    from regcore.data import load_manifest

    pair = load_manifest(manifest).manifest_pairs[0]  # an in-memory Pair
    records = map_registrations(
        [Task("demons", pair, {"iterations": "5"}, save_outputs=True), ("identity", pair)],
        out_dir=tmp_path / "atlas",
    )
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert (
        Path(records[0]["outputs"]["warped"]).is_file()
        and Path(records[0]["outputs"]["displacement"]).is_file()
    )
    with pytest.raises(TypeError, match="tasks must hold"):
        map_registrations(["demons"])
    with pytest.raises(ValueError, match="engine must be one of"):
        map_registrations([("demons", pair)], engine="dask")


def test_grid_parsing_and_expansion():
    grid = parse_grid(["weight=0.1,1", "demons.sigma_elastic=0.5,2"], ["dense", "svf", "demons"])
    assert grid == {
        "dense": {"weight": ["0.1", "1"]},
        "svf": {"weight": ["0.1", "1"]},
        "demons": {"sigma_elastic": ["0.5", "2"]},
    }
    variants = expand(["dense", "demons"], grid, {"demons": {"iterations": "5"}})
    assert [v.label for v in variants] == [
        "dense[weight=0.1]",
        "dense[weight=1]",
        "demons[sigma_elastic=0.5]",
        "demons[sigma_elastic=2]",
    ]
    assert variants[2].overrides == {"iterations": "5", "sigma_elastic": "0.5"}
    for bad, msg in (
        (["weight"], "KEY=V1,V2"),
        (["nope=1,2"], "has a parameter 'nope'"),
        (["fireants.weight=1"], "not in --methods"),
        (["demons.bogus=1"], "unknown parameter 'bogus'"),
    ):
        with pytest.raises(ValueError, match=msg):
            parse_grid(bad, ["demons", "dense"])
    with pytest.raises(ValueError, match="sigma_elastic"):
        expand(["demons"], {"demons": {"sigma_elastic": ["-5"]}})


def test_pareto_front():
    pts = [(0.0, 0.5), (1.0, 0.7), (0.5, 0.4), (2.0, 0.7), (0.2, 0.6), (None, 0.9)]
    assert pareto_front(pts) == [0, 4, 1]


def test_cli_sweep_writes_table_and_pareto_plots(manifest, tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(
        [
            "sweep",
            "--pairs",
            str(manifest),
            "--methods",
            "demons",
            "--set",
            "demons.iterations=5",
            "--grid",
            "sigma_elastic=0.5,3",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "results.json").read_text(encoding="utf-8"))
    labels = [s["method"] for s in report["summary"]]
    assert labels == ["identity", "demons[sigma_elastic=0.5]", "demons[sigma_elastic=3]"]
    assert report["summary"][1]["params"] == {"sigma_elastic": "0.5"} and report["summary"][1]["pairs"] == 2
    smooth, rough = report["summary"][2], report["summary"][1]
    assert smooth["sdlogj"] < rough["sdlogj"]  # the teaching point: more regularisation, smoother field
    assert "| demons[sigma_elastic=3] |" in (out / "sweep.md").read_text(encoding="utf-8")
    html = (out / "pareto.html").read_text(encoding="utf-8")
    assert "Dice vs folding %" in html and "Dice vs runtime" in html
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["sweep", "--pairs", str(manifest), "--methods", "demons", "--out", str(out)]) == 2
    assert "needs at least one --grid" in capsys.readouterr().err


def test_bench_grid_and_write_sweep_outputs_without_registration(tmp_path):
    report = {
        "manifest": "m.csv",
        "grid": {"dense": {"weight": ["0.1", "1"]}},
        "summary": [
            {
                "method": "identity",
                "pairs": 1,
                "failed": 0,
                "dice_mean": 0.4,
                "folding_percent": 0.0,
                "runtime_s": 0.01,
            },
            {
                "method": "dense[weight=0.1]",
                "base_method": "dense",
                "params": {"weight": "0.1"},
                "pairs": 1,
                "failed": 0,
                "dice_mean": 0.7,
                "folding_percent": 0.5,
                "runtime_s": 1.0,
            },
            {
                "method": "dense[weight=1]",
                "base_method": "dense",
                "params": {"weight": "1"},
                "pairs": 1,
                "failed": 0,
                "dice_mean": 0.65,
                "folding_percent": 0.0,
                "runtime_s": 1.1,
            },
        ],
    }
    paths = write_sweep_outputs(report, tmp_path)
    md = Path(paths["sweep_markdown"]).read_text(encoding="utf-8")
    rows = [ln for ln in md.splitlines() if ln.startswith(("| dense", "| identity"))]
    assert rows[0].startswith("| dense[weight=0.1]") and all(r.endswith("yes |") for r in rows)
    assert Path(paths["pareto_png"]).stat().st_size > 1000


def test_bench_engine_arguments_are_checked(manifest, tmp_path, capsys):
    assert (
        main(
            [
                "bench",
                "--pairs",
                str(manifest),
                "--methods",
                "demons",
                "--out",
                str(tmp_path / "x"),
                "--address",
                "auto",
            ]
        )
        == 2
    )
    assert "--address needs --engine ray" in capsys.readouterr().err
    with pytest.raises(ValueError, match="engine must be one of"):
        run_benchmark(manifest, ["demons"], engine="spark")


def _wait(predicate, timeout: float = 180.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def test_background_batch_job_runs_and_survives_as_files(manifest, tmp_path, monkeypatch):
    from regcore.batch import jobs

    monkeypatch.setenv("REGLAB_BATCH_DIR", str(tmp_path / "batches"))
    with pytest.raises(ValueError, match="choose at least one method"):
        jobs.start(manifest, [])
    with pytest.raises(ValueError, match="unknown method"):
        jobs.start(manifest, ["nope"])
    batch_id = jobs.start(manifest, ["demons"], overrides={"demons": {"iterations": "5"}})
    assert _wait(
        lambda: jobs.status(batch_id)["state"] in ("finished", "failed") and jobs.report(batch_id)
    ), (jobs.batch_path(batch_id) / "worker.log").read_text(encoding="utf-8")
    status = jobs.status(batch_id)
    assert status["state"] == "finished" and status["done"] == status["total"] == 4 and status["failed"] == 0
    rows = jobs.tasks(batch_id)
    assert {r["state"] for r in rows} == {"ok"} and len(rows) == 4
    assert "done:" in jobs.task_log(batch_id, rows[1]["key"])
    assert [s["method"] for s in jobs.report(batch_id)["summary"]] == ["identity", "demons"]
    assert jobs.list_batches()[0]["batch_id"] == batch_id
    with pytest.raises(ValueError, match="unknown batch"):
        jobs.status("nope")


def test_batch_page_shows_a_finished_batch(manifest, tmp_path, monkeypatch):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from regcore.batch import jobs

    monkeypatch.setenv("REGLAB_BATCH_DIR", str(tmp_path / "batches"))
    folder = jobs.batches_dir() / "20000101-000000-test"
    folder.mkdir(parents=True)
    (folder / "job.json").write_text(
        json.dumps({"manifest": str(manifest), "methods": ["demons"], "engine": "serial"}), encoding="utf-8"
    )
    run_benchmark(
        manifest,
        ["demons"],
        overrides={"demons": {"iterations": "5"}},
        grid=["sigma_elastic=1,2"],
        out_dir=folder,
    )
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240).run()
    at.switch_page("pages/batch.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value.startswith("Batch")
    texts = " ".join(str(m.value) for m in at.metric)
    assert "6/6" in texts  # 2 pairs x (identity + 2 grid points)
    frames = [df.value for df in at.dataframe]
    assert any("demons[sigma_elastic=2]" in df.astype(str).to_string() for df in frames)
    overview = next(df for df in frames if "batch" in df.columns)
    assert overview["state"].tolist() == ["finished"]
    # the results table has the summary's columns, as `regcore bench` prints them
    (results,) = [df for df in frames if "peak MiB" in df.columns]
    assert results["pairs"].tolist() == [2, 2, 2] and results["Dice"].notna().all()


# -- DDP helpers (the 2-process runs are in tests/test_scaleout.py) ---------------------------------
def test_ddp_sharding_and_launch_command():
    from regcore.train.distributed import DistContext, launch_command

    batch = {"moving": torch.arange(8).view(8, 1), "has_true": torch.ones(8, dtype=torch.bool)}
    shard = DistContext(rank=1, world_size=4).shard(batch)
    assert shard["moving"].flatten().tolist() == [1, 5] and shard["has_true"].shape == (2,)
    assert DistContext().shard(batch) is batch and DistContext().is_main
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        DistContext(rank=0, world_size=3).check_batch_size(4)
    cmd = launch_command("runs/x", 2, resume=True)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"] and "--standalone" in cmd
    assert cmd[-4:] == ["-m", "regcore.train.worker", "runs/x", "--resume"]
    multi = launch_command("runs/x", 4, nnodes=2, node_rank=1, master_addr="10.0.0.1", master_port=29511)
    assert multi[multi.index("--nnodes") + 1] == "2" and multi[multi.index("--master-addr") + 1] == "10.0.0.1"
    with pytest.raises(ValueError, match="needs --master-addr"):
        launch_command("runs/x", 2, nnodes=2)
    with pytest.raises(ValueError, match="--nproc must be"):
        launch_command("runs/x", 0)


def test_import_regcore_batch_stays_light():
    import subprocess

    code = (
        "import sys, regcore, regcore.batch, regcore.cli; regcore.cli.build_parser(); "
        "print('ray' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ},
        timeout=120,
        check=False,
    )
    assert out.stdout.split() == ["False"], out.stderr
