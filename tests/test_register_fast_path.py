"""The fast end-to-end `regcore register` path (issue 16, item 5).

* `regcore --help` imports no heavy library (checked in a fresh interpreter).
* HD95/ASSD of ``label_overlap`` (KD-trees over surface voxels, labels on a thread pool) agree with
  MONAI's ``compute_hausdorff_distance`` and with an independent distance-transform computation on the
  bounding box of each label pair.
* The fused compiled det J / NDV pass equals the torch maps (float32 rounding), the slab-wise torch
  maps equal the whole-volume ones bit for bit, and ``deformation_metrics`` agrees with both.
* The displacement is written uncompressed (``displacement.nii``) by default and as a multi-member
  gzip with ``compress``; SimpleITK and nibabel read both back to the same field; old run folders
  (``displacement.nii.gz``) still load; ``evaluate(warped_labels=...)`` equals the re-warping path.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import smooth_random_field
from scipy import ndimage

from regcore.image import Geometry, Image
from regcore.io import load_displacement, save_displacement
from regcore.io.gzip_parallel import gzip_file
from regcore.metrics import deformation
from regcore.metrics import deformation_kernels as kernels
from regcore.metrics.overlap import label_overlap

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "numba", "scipy", "SimpleITK", "nibabel", "monai", "matplotlib", "plotly", "ray", "pandas")


# -- start-up -----------------------------------------------------------------------------------
def heavy_imports(code: str) -> list[str]:
    """Heavy top-level packages in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    res = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_help_of_the_core_commands_imports_nothing_heavy():
    code = "import regcore.cli as cli\ncli.COMMAND_MODULES.clear()\ncli.build_parser().format_help()"
    assert heavy_imports(code) == []
    res = subprocess.run(
        [sys.executable, "-m", "regcore.cli", "register", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert res.returncode == 0 and "--compress" in res.stdout and "displacement.nii" in res.stdout


def command_modules() -> list[str]:
    from regcore.cli import COMMAND_MODULES

    return sorted(module for module, _ in COMMAND_MODULES.values())


@pytest.mark.parametrize("module", command_modules())
def test_command_modules_import_nothing_heavy_at_parser_build(module):
    """`regcore --help` imports every COMMAND_MODULES module: each must import its libraries in run()."""
    assert heavy_imports(f"import {module}") == [], (
        f"{module} (or its package __init__) imports these at import"
    )


def test_import_regcore_is_lazy_but_exports_work():
    code = "import sys, regcore; assert 'torch' not in sys.modules; from regcore import Image; print(Image.__name__)"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "Image", res.stderr[-1000:]
    import regcore

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        regcore.Nope  # noqa: B018


# -- HD95 cross-checks ------------------------------------------------------------------------------
def random_labels(shape, n_labels: int, seed: int) -> np.ndarray:
    """Blobs of ``n_labels`` values (some touching the border) from smoothed noise."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal((n_labels, *shape)), 2.5)
    labels = field.argmax(0) + 1
    labels[field.max(0) < np.quantile(field.max(0), 0.3)] = 0
    return labels.astype(np.int64)


def hd95_by_distance_transform(a: np.ndarray, b: np.ndarray, lab: int, spacing) -> tuple[float, float]:
    """(HD95, ASSD) from exact Euclidean distance transforms on the bounding box of the label pair."""
    surf = []
    for m in (a == lab, b == lab):
        surf.append(m & ~ndimage.binary_erosion(m, border_value=0))
    both = surf[0] | surf[1]
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(both))
    sa, sb = surf[0][box], surf[1][box]
    d_to_b = ndimage.distance_transform_edt(~sb, sampling=spacing)
    d_to_a = ndimage.distance_transform_edt(~sa, sampling=spacing)
    d_ab, d_ba = d_to_b[sa], d_to_a[sb]
    hd = max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))
    return float(hd), float(np.concatenate([d_ab, d_ba]).mean())


@pytest.mark.parametrize("shape,spacing", [((28, 32, 30), (1.0, 1.0, 1.0)), ((24, 30, 26), (1.5, 0.8, 1.2))])
def test_hd95_matches_monai_and_bbox_distance_transforms(shape, spacing):
    from monai.metrics import compute_hausdorff_distance

    a = random_labels(shape, 6, seed=1)
    b = random_labels(shape, 6, seed=2)
    b[b == 6] = 0  # one label absent from the warped map: Dice 0, HD95 NaN, a warning
    ov = label_overlap(a, b, spacing=spacing)
    for lab in range(1, 6):
        hd_edt, assd_edt = hd95_by_distance_transform(a, b, lab, spacing)
        hd_monai = float(
            compute_hausdorff_distance(
                torch.tensor(b == lab)[None, None],
                torch.tensor(a == lab)[None, None],
                include_background=True,
                percentile=95,
                spacing=spacing,
            ).item()
        )
        assert ov["hd95"][str(lab)] == pytest.approx(hd_edt, abs=1e-6), lab
        assert ov["hd95"][str(lab)] == pytest.approx(hd_monai, abs=1e-4), lab
        assert ov["assd"][str(lab)] == pytest.approx(assd_edt, abs=1e-6), lab
    assert np.isnan(ov["hd95"]["6"]) and ov["dice"]["6"] == 0.0 and ov["warnings"]
    compact = label_overlap(a.astype(np.uint8), b.astype(np.int16), spacing=spacing)  # no int64 copies
    assert json.dumps(compact) == json.dumps(ov)


# -- deformation metrics -------------------------------------------------------------------------------
def folding_field(shape, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    u = smooth_random_field(shape, magnitude=3.0, seed=seed, sigma=1.5)
    patch = u[0][(slice(None), *(slice(s // 4, s // 4 + max(2, s // 3)) for s in shape))]
    patch += torch.randn(patch.shape) * 2  # a rough patch: folds
    return u


@pytest.mark.skipif(not kernels.AVAILABLE, reason="numba not available")
@pytest.mark.parametrize("shape", [(17, 20, 19), (2, 5, 6), (9, 2, 3)])
def test_fused_kernel_equals_torch_maps(shape):
    u = folding_field(shape, seed=sum(shape))
    det, ndv = kernels.jacobian_and_ndv_3d(u[0].numpy())
    ref_det = deformation.jacobian_determinant_map(u)[0].numpy()
    ref_ndv = deformation.non_diffeomorphic_volume(u)[0].numpy()
    np.testing.assert_allclose(det, ref_det, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ndv, ref_ndv, rtol=1e-5, atol=1e-6)
    if shape[0] > 5:
        assert (ref_det <= 0).any() and ref_ndv.sum() > 0, "the test field must fold"
    fast = deformation.deformation_metrics(u)
    slow = deformation.deformation_metrics(u.double())  # float64: the torch path
    for key, value in slow.items():
        assert fast[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


@pytest.mark.parametrize("ndim", [2, 3])
def test_slabwise_maps_are_bit_identical(monkeypatch, ndim):
    from regcore.spatial.jacobian import jacobian_determinant

    shape = (23, 11, 9) if ndim == 3 else (31, 12)
    u = folding_field(shape, seed=5) if ndim == 3 else smooth_random_field(shape, 2.0, seed=5, sigma=1.0)
    whole_det = jacobian_determinant(u)
    whole_ndv = deformation._ndv_map(u)
    monkeypatch.setattr(deformation, "SLAB_VOXELS", int(np.prod(shape[1:])) * 4)  # slabs of 4 planes
    assert torch.equal(deformation.jacobian_determinant_map(u), whole_det)
    assert torch.equal(deformation.non_diffeomorphic_volume(u), whole_ndv)


# -- displacement files and run folders --------------------------------------------------------------------
GEOM = Geometry(
    (14, 12, 10), (1.2, 0.9, 2.0), (5.0, -3.0, 7.0), ((0.0, 1.0, 0.0), (-1.0, 0.0, 0.0), (0.0, 0.0, 1.0))
)


def test_displacement_plain_and_parallel_gzip_round_trip(tmp_path, monkeypatch):
    u = smooth_random_field(GEOM.shape, magnitude=2.0, seed=4, sigma=2.0)
    monkeypatch.setattr("regcore.io.gzip_parallel.CHUNK_BYTES", 1024)  # many gzip members
    plain = save_displacement(u, GEOM, tmp_path / "f.nii")
    packed = save_displacement(u, GEOM, tmp_path / "f.nii.gz")
    assert plain.stat().st_size > 3 * 4 * np.prod(GEOM.shape) and not (tmp_path / "f.tmp.nii").exists()
    with gzip.open(packed) as f:
        assert f.read() == plain.read_bytes(), "the multi-member gzip holds exactly the .nii bytes"
    a = sitk.ReadImage(str(plain), sitk.sitkVectorFloat64)
    b = sitk.ReadImage(str(packed), sitk.sitkVectorFloat64)
    assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    for path in (plain, packed):
        back, geom = load_displacement(path)
        torch.testing.assert_close(back, u, atol=1e-5, rtol=0)
        assert geom.same_grid(GEOM, tol=1e-5)
    import nibabel as nib

    assert np.array_equal(np.asarray(nib.load(packed).dataobj), np.asarray(nib.load(plain).dataobj))


def test_gzip_file_edge_cases(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    gzip_file(tmp_path / "empty", tmp_path / "empty.gz")
    assert gzip.decompress((tmp_path / "empty.gz").read_bytes()) == b""
    with pytest.raises(ValueError, match="level must be 1..9"):
        gzip_file(tmp_path / "empty", tmp_path / "x.gz", level=0)


def small_record():
    from regcore.data import Pair
    from regcore.methods.base import RegistrationResult
    from regcore.metrics import evaluate
    from regcore.run_record import RunRecord
    from regcore.spatial.warp import warp, warp_labels

    geom = Geometry(
        (20, 18, 16), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    )
    lab = torch.from_numpy(random_labels(geom.shape, 3, seed=9))
    fixed = Image(lab[None].float() / 3, geom)
    fixed_labels = Image(lab[None], geom, is_labels=True)
    u = smooth_random_field(geom.shape, magnitude=1.5, seed=3, sigma=2.0)
    moving_labels = Image(warp_labels(lab[None, None], -u)[0], geom, is_labels=True)
    moving = Image(moving_labels.data.float() / 3, geom)
    warped_labels = moving_labels.with_data(warp_labels(moving_labels.data[None], u)[0])
    result = RegistrationResult(
        method="oracle",
        fixed=fixed,
        moving=moving,
        warped=moving.with_data(warp(moving.batch(), u)[0]),
        displacement=u,
    )
    result.extras["warped_labels"] = warped_labels
    kw = {"fixed_labels": fixed_labels, "moving_labels": moving_labels}
    fast, slow = evaluate(result, **kw, warped_labels=warped_labels), evaluate(result, **kw)
    pair = Pair(name="p", fixed=fixed, moving=moving, **kw)
    return RunRecord(pair, result, fast, label="oracle"), fast, slow


def test_evaluate_with_warped_labels_equals_rewarping():
    _, fast, slow = small_record()
    assert fast == slow and fast["dice_mean"] is not None


def test_run_folder_plain_compressed_and_old_style(tmp_path):
    from regcore.run_folder import RUN_FILES, load_run, save_run

    record, metrics, _ = small_record()
    plain = save_run(record, tmp_path / "plain")
    packed = save_run(record, tmp_path / "packed", compress=True)
    assert plain["displacement"].name == RUN_FILES["displacement"] == "displacement.nii"
    assert packed["displacement"].name == "displacement.nii.gz"
    assert not (tmp_path / "packed" / "displacement.nii").exists()
    old = tmp_path / "old"  # a folder written before: displacement.nii.gz
    os.rename(tmp_path / "packed", old)
    for folder in (tmp_path / "plain", old):
        back = load_run(folder)
        torch.testing.assert_close(back.result.displacement, record.result.displacement, atol=1e-5, rtol=0)
        assert (
            back.metrics == json.loads(json.dumps(metrics))
            or back.metrics["dice_mean"] == metrics["dice_mean"]
        )
    (old / "displacement.nii.gz").unlink()
    with pytest.raises(ValueError, match=r"displacement\.nii: file not found"):
        load_run(old)


def test_run_folder_takes_metrics_still_being_computed(tmp_path):
    """`regcore register` evaluates beside the volume writes: save_run waits for the metrics, stores them
    in the record and writes them to metrics.json."""
    from regcore.run_folder import load_run, save_run
    from regcore.run_record import RunRecord

    record, metrics, _ = small_record()
    pending = RunRecord(record.pair, record.result, {}, label="oracle")
    calls = []
    save_run(pending, tmp_path / "run", pending_metrics=lambda: calls.append(1) or dict(metrics))
    assert calls == [1] and pending.metrics["dice_mean"] == metrics["dice_mean"]
    assert load_run(tmp_path / "run").metrics["dice_mean"] == pytest.approx(metrics["dice_mean"])


def test_register_pair_then_evaluate_equals_run_pair():
    from regcore.data import Pair
    from regcore.register import register_pair, run_pair

    record, _, _ = small_record()
    pair = Pair(
        name="p",
        fixed=record.pair.fixed,
        moving=record.pair.moving,
        fixed_labels=record.pair.fixed_labels,
        moving_labels=record.pair.moving_labels,
    )
    overrides = {"iterations": 3, "levels": 1}
    registration = register_pair(pair, "demons", overrides, device="cpu")
    assert "warped_labels" in registration.result.extras
    later = registration.evaluate()
    _, at_once = run_pair(pair, "demons", overrides, device="cpu")
    assert later["method"] == at_once["method"] == "demons"
    for key in ("dice_mean", "hd95_mean_mm", "folding_percent", "sdlogj", "ncc"):
        assert later[key] == pytest.approx(at_once[key], rel=1e-6), key


def test_a_classical_method_is_found_without_importing_the_learned_families():
    code = (
        "import sys\nfrom regcore.methods.registry import get\nget('fireants')\n"
        "assert not any(m.startswith('regcore.methods.learned') for m in sys.modules)\n"
        "get('voxelmorph')\nprint('ok')"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-1000:]
    from regcore.methods.registry import get

    with pytest.raises(ValueError, match="unknown method 'nope'; known methods: .*voxelmorph"):
        get("nope")


def test_console_script_exit_flushes_output_and_keeps_the_exit_code(tmp_path):
    """The console script ends without interpreter teardown: its piped output is complete and its exit code
    is the command's (0, or 2 for bad input)."""
    script = "import sys\nfrom regcore.cli import console_main\nsys.argv[0] = 'regcore'\nconsole_main()"
    ok = subprocess.run(
        [sys.executable, "-c", script, "methods", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr[-1000:]
    assert any(m["name"] == "fireants" for m in json.loads(ok.stdout))  # the whole JSON arrived
    bad = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            "register",
            "--fixed",
            str(tmp_path / "no.nii.gz"),
            "--moving",
            "x.nii.gz",
        ]
        + ["--method", "demons", "--out", str(tmp_path / "run")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "no.nii.gz" in bad.stderr and bad.stderr.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_compact_labels_keeps_values_and_metrics():
    from regcore.metrics import evaluate
    from regcore.register import compact_labels

    record, metrics, _ = small_record()
    fl, ml = record.pair.fixed_labels, record.pair.moving_labels
    small = compact_labels(fl)
    assert small.data.dtype == torch.uint8 and torch.equal(small.data.long(), fl.data)
    wide = fl.with_data(fl.data * 100)  # values up to 300: int16
    assert compact_labels(wide).data.dtype == torch.int16
    assert compact_labels(None) is None and compact_labels(small) is small
    compact = evaluate(
        record.result, fixed_labels=small, moving_labels=compact_labels(ml), warped_labels=None
    )
    assert compact == metrics


def test_cli_register_3d_metrics_equal_the_reference_path(tmp_path, monkeypatch):
    """A short real 3D `regcore register`: its metrics.json equals the reference computation (int64 labels,
    labels re-warped, det J / NDV by the torch maps) on the field it wrote, within 1e-6."""
    from regcore.cli import main
    from regcore.io import save_image
    from regcore.metrics import evaluate
    from regcore.run_folder import load_run

    geom = Geometry(
        (26, 24, 22), (1.0, 1.1, 0.9), (0.0, 0.0, 0.0), ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    )
    lab = torch.from_numpy(random_labels(geom.shape, 4, seed=3))
    u = smooth_random_field(geom.shape, magnitude=2.0, seed=8, sigma=3.0)
    from regcore.spatial.warp import warp_labels

    moved = warp_labels(lab[None, None], u)[0]

    def smooth(labels: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(ndimage.gaussian_filter(labels.numpy() * 0.3, 1.0).astype(np.float32))[None]

    files = {
        "fixed": Image(smooth(lab), geom),
        "moving": Image(smooth(moved[0]), geom),
        "fixed-labels": Image(lab[None], geom, is_labels=True),
        "moving-labels": Image(moved, geom, is_labels=True),
    }
    argv = ["register", "--method", "demons", "--set", "iterations=15", "--set", "levels=2", "--quiet"]
    for role, img in files.items():
        argv += [f"--{role}", str(save_image(img, tmp_path / f"{role}.nii.gz"))]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    assert main([*argv, "--out", str(tmp_path / "packed"), "--compress"]) == 0
    assert (tmp_path / "run" / "displacement.nii").is_file()
    assert (tmp_path / "packed" / "displacement.nii.gz").is_file()
    written = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))
    packed = json.loads((tmp_path / "packed" / "metrics.json").read_text(encoding="utf-8"))
    assert written["dice_mean"] > 0 and written["hd95_mean_mm"] is not None

    record = load_run(tmp_path / "run")
    monkeypatch.setattr(kernels, "AVAILABLE", False)  # det J and NDV by the torch maps
    result = record.result
    result.extras.pop("warped_labels", None)
    ref = evaluate(
        result,
        fixed_labels=record.pair.fixed_labels.with_data(record.pair.fixed_labels.data.long()),
        moving_labels=record.pair.moving_labels.with_data(record.pair.moving_labels.data.long()),
    )
    keys = (
        "dice_mean",
        "hd95_mean_mm",
        "assd_mean_mm",
        "folding_percent",
        "sdlogj",
        "ndv_percent",
        "jacobian_min",
    )
    for key in keys:
        assert written[key] == pytest.approx(ref[key], rel=1e-6, abs=1e-6), key
        assert packed[key] == pytest.approx(written[key], rel=1e-6, abs=1e-6), key
    assert written["dice"] == pytest.approx(ref["dice"], abs=1e-9)
    assert written["hd95"] == pytest.approx(ref["hd95"], abs=1e-6)
    for role, name in (("fixed", "fixed"), ("moving", "moving"), ("fixed-labels", "fixed_labels")):
        # inputs on the fixed grid, read unchanged: copied, not re-encoded
        assert (tmp_path / "run" / f"{name}.nii.gz").read_bytes() == (
            tmp_path / f"{role}.nii.gz"
        ).read_bytes()
    assert torch.equal(record.pair.moving_labels.data.long(), files["moving-labels"].data.long())


def test_run_folder_copies_only_unchanged_nifti_gz_inputs(tmp_path):
    """``regcore register``'s inputs are copied into the run folder only when the record holds the very Image
    read from a .nii.gz file, never modified in place; ``save_run`` rejects unknown roles."""
    from types import SimpleNamespace

    from regcore.io import load_image, save_image
    from regcore.register_cli import _unchanged_inputs
    from regcore.run_folder import save_run

    geom = Geometry(
        (6, 7, 5), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    )
    paths = {
        "fixed": save_image(Image(torch.rand(1, 6, 7, 5), geom), tmp_path / "f.nii.gz"),
        "moving": save_image(Image(torch.rand(1, 6, 7, 5), geom), tmp_path / "m.nii"),
    }
    inputs = {role: load_image(p) for role, p in paths.items()}
    inputs.update(fixed_labels=None, moving_labels=None)
    args = SimpleNamespace(
        fixed=str(paths["fixed"]), moving=str(paths["moving"]), fixed_labels=None, moving_labels=None
    )

    def record_of(fixed: Image, moving: Image):
        return SimpleNamespace(
            result=SimpleNamespace(fixed=fixed, moving=moving), fixed_labels=None, moving_labels=None
        )

    assert _unchanged_inputs(args, inputs, record_of(inputs["fixed"], inputs["moving"])) == {
        "fixed": paths["fixed"]  # .nii is not the run folder's .nii.gz: re-encoded
    }
    rewritten = inputs["fixed"].with_data(inputs["fixed"].data * 2)
    assert _unchanged_inputs(args, inputs, record_of(rewritten, inputs["moving"])) == {}
    inputs["fixed"].data.mul_(1.0)  # in place: the tensor no longer vouches for the file
    assert _unchanged_inputs(args, inputs, record_of(inputs["fixed"], inputs["moving"])) == {}
    with pytest.raises(ValueError, match="warped"):
        save_run(SimpleNamespace(), tmp_path / "run", sources={"warped": paths["fixed"]})
