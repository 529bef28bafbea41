"""regcore.bench and `regcore bench`: identity as row 0, per-pair tables, failures recorded,
bad arguments refused, and the committed manifests load (shared data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smooth_random_field
from scipy.ndimage import gaussian_filter

from regcore.bench import run_benchmark
from regcore.cli import main
from regcore.image import Image
from regcore.io import save_image
from regcore.spatial.warp import warp, warp_labels

MANIFESTS = Path(__file__).resolve().parents[1] / "benchmarks" / "manifests"


@pytest.fixture
def tiny_manifest(tmp_path) -> Path:
    rng = np.random.default_rng(11)
    size = 32
    yy, xx = np.mgrid[:size, :size]
    lab = np.zeros((size, size), np.int64)
    lab[np.hypot(yy - 14, xx - 15) < 7] = 1
    lab[np.hypot(yy - 22, xx - 20) < 4] = 2
    img = gaussian_filter(lab * 0.4, 1.0) + 0.1 * gaussian_filter(rng.standard_normal((size, size)), 1.5)
    u = smooth_random_field((size, size), 2.0, seed=4, sigma=4)
    m, ml = torch.tensor(img, dtype=torch.float32)[None, None], torch.tensor(lab)[None, None]
    save_image(Image.from_array(warp(m, u)[0, 0]), tmp_path / "f.nii.gz")
    save_image(Image.from_array(m[0, 0]), tmp_path / "m.nii.gz")
    save_image(Image.from_array(warp_labels(ml, u)[0, 0], is_labels=True), tmp_path / "f_seg.nii.gz")
    save_image(Image.from_array(ml[0, 0], is_labels=True), tmp_path / "m_seg.nii.gz")
    (tmp_path / "names.csv").write_text("value,name\n1,big\n2,small\n", encoding="utf-8")
    csv = tmp_path / "pairs.csv"
    csv.write_text(
        "name,fixed,moving,fixed_labels,moving_labels,label_names\n"
        "tiny,f.nii.gz,m.nii.gz,f_seg.nii.gz,m_seg.nii.gz,names.csv\n",
        encoding="utf-8",
    )
    return csv


def test_run_benchmark_identity_first_and_improvement(tiny_manifest, tmp_path, monkeypatch):
    import regcore.extras as extras

    monkeypatch.setattr(extras, "extra_available", lambda name: False)  # ants_syn must fail, not stop the run
    report = run_benchmark(
        tiny_manifest,
        ["demons", "ants_syn"],
        overrides={"demons": {"iterations": "20"}},
        out_dir=tmp_path / "res",
    )
    assert [s["method"] for s in report["summary"]] == ["identity", "demons", "ants_syn"]
    ident, demons, ants = report["summary"]
    assert ident["folding_percent"] == 0 and ident["dice_mean"] is not None
    assert demons["dice_mean"] > ident["dice_mean"]
    assert ants["pairs"] == 0 and ants["failed"] == 1
    failed = [r for r in report["pairs"] if r["method"] == "ants_syn"][0]
    assert "MissingExtraError" in failed["error"] and "make bench-env" in failed["error"]
    saved = json.loads((tmp_path / "res" / "results.json").read_text(encoding="utf-8"))
    assert saved["summary"][0]["method"] == "identity" and set(saved["pairs"][1]["dice"]) == {"big", "small"}
    md = (tmp_path / "res" / "results.md").read_text(encoding="utf-8")
    rows = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert rows[1].startswith("| identity |") and "## tiny" in md and "failed: MissingExtraError" in md


def test_cli_bench_writes_results(tiny_manifest, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(
        [
            "bench",
            "--pairs",
            str(tiny_manifest),
            "--methods",
            "demons",
            "--set",
            "demons.iterations=10",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert data["summary"][0]["method"] == "identity" and data["overrides"] == {
        "demons": {"iterations": "10"}
    }
    assert (out / "results.md").read_text(encoding="utf-8").count(
        "| identity |"
    ) == 2  # summary + per-pair table


def test_cli_bench_rerun_reuses_finished_tasks_unless_fresh(tiny_manifest, tmp_path, capsys):
    """A second run into the same folder reuses the finished tasks and says so; ``--fresh`` runs them again."""
    out = tmp_path / "res"
    argv = ["bench", "--pairs", str(tiny_manifest), "--methods", "demons", "--set", "demons.iterations=5"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    assert "reused" not in capsys.readouterr().err
    record = next((out / "tasks").glob("*.json"))
    mtime = record.stat().st_mtime_ns
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "2 task(s) reused" in err and "--fresh" in err  # identity and demons
    assert record.stat().st_mtime_ns == mtime
    assert main([*argv, "--out", str(out), "--quiet", "--fresh"]) == 0
    assert "reused" not in capsys.readouterr().err
    assert record.stat().st_mtime_ns != mtime  # ran again
    assert json.loads((out / "results.json").read_text(encoding="utf-8"))["reused"] == 0


@pytest.mark.parametrize(
    "argv_tail,expected",
    [
        (["--methods", "nope"], "unknown method 'nope'"),
        (["--methods", "demons", "--set", "demons.bogus=1"], "unknown parameter 'bogus'"),
        (["--methods", "demons", "--set", "iterations=1"], "method.key=value"),
        (["--methods", "demons", "--set", "bspline.iterations=1"], "not in --methods"),
    ],
)
def test_cli_bench_bad_arguments(tiny_manifest, tmp_path, capsys, argv_tail, expected):
    assert main(["bench", "--pairs", str(tiny_manifest), "--out", str(tmp_path / "x"), *argv_tail]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_missing_manifest_is_refused(tmp_path):
    with pytest.raises(ValueError, match="pairs manifest must be an existing CSV file"):
        run_benchmark(tmp_path / "none.csv", ["demons"])
    with pytest.raises(TypeError, match="list of method names"):
        run_benchmark(tmp_path / "none.csv", "demons")


@pytest.mark.parametrize(
    "name,pairs",
    [("brain2d", 1), pytest.param("brain3d", 2, marks=pytest.mark.slow), ("histology2d", 1), ("spine", 1)],
)
def test_committed_manifests_load(shared_data, name, pairs):
    from regcore.bench import load_pairs

    loaded, errors = load_pairs(MANIFESTS / f"{name}.csv")
    assert errors == [] and len(loaded) == pairs
    for p in loaded:
        assert (p.fixed_labels is not None) or (
            p.fixed_landmarks is not None and len(p.fixed_landmarks) == 80
        )
