"""regcore.report: the offline one-page HTML QA report (no scripts, no links, everything inline)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_run_record import oracle_record

from regcore.data import Pair
from regcore.image import Geometry, Image
from regcore.methods.base import RegistrationResult
from regcore.report import REPORT_FILE, qa_report_html, run_report_html, write_report
from regcore.run_folder import save_run
from regcore.run_record import RunRecord, RunSlice

ROOT = Path(__file__).resolve().parents[1]


def synthetic_slice(labels: bool = True) -> RunSlice:
    rng = np.random.default_rng(0)
    f = rng.random((32, 40))
    lab = np.zeros((32, 40), int)
    lab[8:20, 10:30] = 1
    jac = np.ones((32, 40))
    jac[3, 3] = -1
    extra = {"fixed_labels": lab, "moving_labels": np.roll(lab, 2, 0), "warped_labels": lab} if labels else {}
    return RunSlice(fixed=f, moving=np.roll(f, 2, 0), warped=f, disp=np.zeros((2, 32, 40)), jac=jac, **extra)


def assert_offline(html: str) -> None:
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "<script" not in html.lower() and "http://" not in html and "https://" not in html
    assert not re.search(r"src=['\"](?!data:)", html), "every image is inline"


def test_qa_report_is_self_contained_html():
    html = qa_report_html(
        synthetic_slice(),
        {"dice_mean": 0.9, "dice": {"cortex": 0.9}, "folding_percent": 0.1},
        {"dice_mean": 0.6, "dice": {"cortex": 0.6}},
        pair_name="a <- b",
        method="demo",
    )
    assert_offline(html)
    assert html.count("data:image/png;base64,") == 10, "8 panels + contours before/after"
    assert "cortex" in html and "a &lt;- b" in html and "0.600" in html and "0.900" in html
    assert "None" not in html and "red squares" not in html and "green = values <= 0" in html


def test_qa_report_without_labels_has_no_contour_panels_and_checks_input():
    html = qa_report_html(synthetic_slice(labels=False), {"dice_mean": None})
    assert_offline(html)
    assert html.count("data:image/png;base64,") == 8 and "Per structure" not in html
    with pytest.raises(TypeError, match="view must be a RunSlice"):
        qa_report_html({"fixed": np.zeros((4, 4))}, {})
    with pytest.raises(TypeError, match="metrics must be a dict"):
        qa_report_html(synthetic_slice(), [0.5])


def test_run_report_shows_before_and_after_of_the_record():
    rec = oracle_record()
    html = run_report_html(rec)
    assert_offline(html)
    assert "oracle" in html and "Per landmark" in html
    from regcore.viz import format_number

    assert format_number(rec.before_metrics["dice_mean"]) in html and "disk" in html
    assert html.count("data:image/png;base64,") == 10


def test_write_report_for_a_record_and_a_run_folder(tmp_path):
    rec = oracle_record()
    with pytest.raises(ValueError, match="path is required"):
        write_report(rec)
    assert write_report(rec, tmp_path / "r.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    save_run(rec, tmp_path / "run")
    out = write_report(tmp_path / "run")
    assert out == tmp_path / "run" / REPORT_FILE and "oracle" in out.read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="metrics.json: file not found"):
        (tmp_path / "run" / "metrics.json").unlink()
        write_report(tmp_path / "run")


def test_3d_report_pictures_the_middle_axial_slice_unless_told():
    geom = Geometry.identity((12, 14, 10), (1.0, 1.0, 2.0))
    img = Image.from_array(np.random.default_rng(1).random((12, 14, 10)).astype(np.float32), geom)
    rec = RunRecord(
        Pair("3d", img, img), RegistrationResult("x", img, img, img, torch.zeros(1, 3, 12, 14, 10)), {}
    )
    assert "axial slice 5" in run_report_html(rec)
    assert "sagittal slice 2" in run_report_html(rec, 0, 2)


def test_report_module_never_imports_streamlit():
    code = "import sys, regcore.report, regcore.run_record; assert 'streamlit' not in sys.modules"
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


def test_report_mean_dice_over_labels_in_both_lists_the_skipped_ones_and_shows_a_legend():
    from regcore.metrics.presence import LabelPresence

    metrics = {
        "dice_mean": 0.45,
        "dice": {"cortex": 0.9, "tumour": 0.0},
        "hd95": {"cortex": 1.0, "tumour": None},
    }
    before = {"dice_mean": 0.3, "dice": {"cortex": 0.6, "tumour": 0.0}}
    presence = LabelPresence(both=("cortex",), only_fixed=("tumour",), only_moving=())
    html = qa_report_html(synthetic_slice(), metrics, before, label_names={1: "cortex"}, presence=presence)
    assert "Mean Dice (labels in both images)" in html and "Mean Dice (all labels)" in html
    assert "present in only one image): tumour" in html and "tumour (in one image only)" in html
    row = re.search(r"<tr><td>Mean Dice \(labels in both images\)</td><td>([^<]*)</td><td>([^<]*)</td>", html)
    assert row and row.groups() == ("0.600", "0.900"), "the mean of cortex alone, before and after"
    assert "rl-label-legend" in html and "#e6194b" in html and "1&nbsp;cortex" in html, "label 1's colour"
    plain = qa_report_html(synthetic_slice(), metrics, before)
    assert "labels in both" not in plain and "rl-label-legend" in plain, "no presence: engine means only"
