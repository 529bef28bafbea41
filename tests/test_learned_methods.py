"""Learned methods in the registry: shipped weights, inference conventions, errors, real pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from regcore.image import Image
from regcore.methods import registry
from regcore.methods.learned.family import get_family
from regcore.methods.learned.inference import MODELS_DIR
from regcore.methods.registry import Family
from regcore.nets.spatial_ops import affine_to_displacement
from regcore.spatial.warp import warp_labels
from regcore.train.checkpoint import CheckpointError, save_checkpoint
from regcore.train.datasets import shapes_pair
from regcore.train.objectives import dice_per_pair

METHODS = ("voxelmorph", "transmorph", "affine_net")


def _pair(shape=(80, 96), seed=4):
    s = shapes_pair(shape, np.random.default_rng(seed), affine=False)
    f = Image.from_array(s["fixed"][0], spacing=2.0)
    m = Image.from_array(s["moving"][0], spacing=2.0)
    return f, m, s["fixed_labels"][None], s["moving_labels"][None]


def _tmp_checkpoint(tmp_path, family="voxelmorph", dims=2, spacing=2.0):
    torch.manual_seed(0)
    fam = get_family(family)
    values = {"channels": [8, 8, 8, 8]} if family == "voxelmorph" else {}
    nets = fam.build(dims, fam.make_config(values))
    return save_checkpoint(
        tmp_path / f"{family}{dims}d.pt",
        {
            "family": family,
            "dims": dims,
            "family_config": values,
            "spacing_mm": spacing,
            "state_dict": nets.state_dict(),
        },
    )


@pytest.mark.parametrize("name", METHODS)
def test_registered_with_shipped_2d_weights(name):
    spec = registry.get(name)
    assert spec.family == Family.LEARNED and spec.needs_training and spec.dims == (2, 3)
    weights = spec.factory().default_checkpoint(2)
    assert weights.is_file() and weights.parent == MODELS_DIR, weights
    assert weights.with_suffix(".md").is_file()  # every shipped weight file has its model card


@pytest.mark.parametrize("name", METHODS)
def test_shipped_model_improves_dice_on_a_sample_brain_pair(name):
    """A short real registration: the default sample data (regcore.data), pair 3 -> 7."""
    from regcore.data import sample_pair

    pair = sample_pair("brain", 2, 3, 7, resolution_mm=2.0)
    f, m, fl, ml = pair.fixed, pair.moving, pair.fixed_labels.data[None], pair.moving_labels.data[None]
    spec = registry.get(name)
    res = spec.factory().register(f, m, spec.make_config())
    assert res.displacement.shape == (1, 2, *f.shape) and res.warped.shape == f.shape
    before = dice_per_pair(fl, ml, torch.zeros_like(res.displacement))
    after = dice_per_pair(fl, ml, res.displacement)
    assert after > before, (float(before), float(after))


def test_affine_net_result_is_consistent():
    spec = registry.get("affine_net")
    f, m, _, _ = _pair()
    res = spec.factory().register(f, m, spec.make_config())
    assert res.affine.shape == (2, 3)
    dense = affine_to_displacement(res.affine[None], f.shape)
    assert torch.allclose(
        dense, res.displacement, atol=0.05
    )  # bilinear resize of an affine field is exact-ish


def test_identical_images_give_small_displacement():
    spec = registry.get("voxelmorph")
    f, _, _, _ = _pair()
    res = spec.factory().register(f, f, spec.make_config())
    assert res.displacement.abs().mean() < 0.5


def test_3d_checkpoint_runs_and_keeps_conventions(tmp_path):
    ckpt = _tmp_checkpoint(tmp_path, dims=3)
    img = Image.from_array(torch.rand(18, 22, 26), spacing=2.0)
    spec = registry.get("voxelmorph")
    res = spec.factory().register(img, img, spec.make_config({"checkpoint": str(ckpt)}))
    assert res.displacement.shape == (1, 3, 18, 22, 26)
    assert res.extras["model_shape"] == (20, 24, 28)  # padded to the U-Net's divisor (4)


def test_bad_inputs_give_clear_errors(tmp_path):
    spec = registry.get("voxelmorph")
    method = spec.factory()
    f, m, _, _ = _pair()
    with pytest.raises(CheckpointError, match="not found"):
        method.register(f, m, spec.make_config({"checkpoint": str(tmp_path / "none.pt")}))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        method.register(f, m, spec.make_config({"checkpoint": str(bad)}))
    with pytest.raises(ValueError, match="is a 3D model but the images are 2D"):
        method.register(f, m, spec.make_config({"checkpoint": str(_tmp_checkpoint(tmp_path, dims=3))}))
    with pytest.raises(ValueError, match="holds a 'affine_net' model"):
        method.register(
            f, m, spec.make_config({"checkpoint": str(_tmp_checkpoint(tmp_path, family="affine_net"))})
        )
    old = save_checkpoint(
        tmp_path / "v1.pt", {"arch": {"model": "voxelmorph"}, "state_dict": {}, "spacing_mm": 2.0}
    )
    torch.save({**torch.load(old, weights_only=True), "version": 1}, old)
    with pytest.raises(CheckpointError, match="made by an older RegLab"):
        method.register(f, m, spec.make_config({"checkpoint": str(old)}))
    import regcore.methods.learned.inference as inference

    shipped = inference.MODELS_DIR
    try:
        inference.MODELS_DIR = inference.REPO_ROOT / "assets" / "no_such_models"  # a checkout without weights
        with pytest.raises(CheckpointError, match="no shipped 2D weights for 'lku_net'"):
            registry.get("lku_net").factory().register(f, m, registry.get("lku_net").make_config())
    finally:
        inference.MODELS_DIR = shipped
    with pytest.raises(ValueError, match="resample moving onto the fixed grid"):
        method.register(f, Image.from_array(torch.rand(10, 10)), spec.make_config())
    with pytest.raises(TypeError, match="fixed must be a regcore.image.Image"):
        method.register(torch.rand(1, 8, 8), m, spec.make_config())


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["voxelmorph", "transmorph"])
def test_real_oasis_slice_dice_improves(shared_data, name):
    """Never trained on OASIS: the shipped 2D model still raises Dice on the real 0456 -> 0455 slice."""
    import nibabel as nib

    d = shared_data / "brain2d"
    load = lambda p: np.asarray(nib.load(p).dataobj).squeeze()  # noqa: E731
    fixed = Image.from_array(load(d / "images/OASIS_OAS1_0455_MR1_axial103.nii.gz").astype(np.float32))
    moving = Image.from_array(load(d / "images/OASIS_OAS1_0456_MR1_axial103.nii.gz").astype(np.float32))
    fl = torch.from_numpy(load(d / "labels/OASIS_OAS1_0455_MR1_axial103_seg35.nii.gz").astype(np.int64))[
        None, None
    ]
    ml = torch.from_numpy(load(d / "labels/OASIS_OAS1_0456_MR1_axial103_seg35.nii.gz").astype(np.int64))[
        None, None
    ]
    spec = registry.get(name)
    res = spec.factory().register(fixed, moving, spec.make_config())
    before = float(dice_per_pair(fl, ml, torch.zeros_like(res.displacement)))
    after = float(dice_per_pair(fl, ml, res.displacement))
    assert after > before + 0.01, (before, after)
    assert torch.equal(warp_labels(ml, torch.zeros_like(res.displacement)), ml)


def test_instance_optimisation_refines_the_network_field():
    """refine_iterations > 0 starts from the network's field and raises Dice on a real sample pair."""
    from regcore.data import sample_pair
    from regcore.register import run_pair

    pair = sample_pair("brain", 2, 3, 7, resolution_mm=2.0)
    plain, m0 = run_pair(pair, "voxelmorph", {"refine_iterations": 0}, device="cpu")
    refined, m1 = run_pair(pair, "voxelmorph", {"refine_iterations": 30}, device="cpu")
    assert m1["dice_mean"] > m0["dice_mean"] + 0.005, (m0["dice_mean"], m1["dice_mean"])
    assert not torch.equal(plain.displacement, refined.displacement)
    assert refined.extras["refine_s"] > 0 and m1["folding_percent"] < 1.0


def test_probabilistic_family_returns_a_variance_map(tmp_path):
    fam = get_family("prob_voxelmorph")
    nets = fam.build(2, fam.make_config({"widths": [8, 8]}))
    ckpt = save_checkpoint(
        tmp_path / "p.pt",
        {
            "family": fam.name,
            "dims": 2,
            "family_config": {"widths": [8, 8]},
            "spacing_mm": 2.0,
            "state_dict": nets.state_dict(),
        },
    )
    f, m, _, _ = _pair()
    spec = registry.get("prob_voxelmorph")
    res = spec.factory().register(f, m, spec.make_config({"checkpoint": str(ckpt), "samples": 4}))
    var = res.extras["variance"]
    assert var.shape == (1, 2, *f.shape) and float(var.min()) >= 0 and float(var.max()) > 0


def test_hypermorph_lambda_changes_the_field(tmp_path):
    fam = get_family("hypermorph")
    torch.manual_seed(0)
    nets = fam.build(2, fam.make_config({"widths": [8, 8]}))
    with torch.no_grad():
        for p in nets.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ckpt = save_checkpoint(
        tmp_path / "h.pt",
        {
            "family": fam.name,
            "dims": 2,
            "family_config": {"widths": [8, 8]},
            "spacing_mm": 2.0,
            "state_dict": nets.state_dict(),
        },
    )
    f, m, _, _ = _pair()
    spec = registry.get("hypermorph")
    u = [
        spec.factory()
        .register(f, m, spec.make_config({"checkpoint": str(ckpt), "regularization": lam}))
        .displacement
        for lam in (0.0, 1.0)
    ]
    assert not torch.allclose(u[0], u[1])


RIGID_ONLY = {
    "rl_agent"
}  # nothing to correct between affinely pre-aligned subjects (its own benchmark: rl_agent.md)


def _oasis_slice_families() -> list[str]:
    """Deformable families whose shipped 2D weights were trained on OASIS slices (recipe ``data = "slices"``)."""
    import json

    return sorted(
        name
        for p in MODELS_DIR.glob("*2d.recipe.json")
        if (name := p.name.removesuffix("2d.recipe.json")) not in RIGID_ONLY
        and json.loads(p.read_text(encoding="utf-8")).get("data") == "slices"
        and (MODELS_DIR / p.name.replace(".recipe.json", ".pt")).is_file()
    )


@pytest.fixture(scope="module")
def held_out_slice_pairs():
    """Three OASIS slice pairs at HELD-OUT positions (one per axis; regcore.data.slices), never trained on."""
    from conftest import SHARED_DATA

    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder not found at {SHARED_DATA} (set REGLAB_SHARED_DATA)")
    from regcore.data.slices import slice_pairs

    return [slice_pairs(SHARED_DATA / "brain3d", "held_out", axes=(a,), per_axis=1)[0] for a in (0, 1, 2)]


@pytest.mark.shared_data
@pytest.mark.parametrize("name", _oasis_slice_families())
def test_shipped_oasis_weights_raise_dice_on_held_out_slices(name, held_out_slice_pairs):
    """Every family with shipped OASIS-slice weights: mean Dice over three held-out pairs beats identity."""
    from regcore.metrics.evaluate import evaluate, evaluate_identity

    spec = registry.get(name)
    method, config = spec.factory(), spec.make_config()
    before, after = [], []
    for pair in held_out_slice_pairs:
        kw = dict(fixed_labels=pair.fixed_labels, moving_labels=pair.moving_labels)
        before.append(evaluate_identity(pair.fixed, pair.moving, **kw)["dice_mean"])
        after.append(evaluate(method.register(pair.fixed, pair.moving, config), **kw)["dice_mean"])
    assert np.mean(after) > np.mean(before) + 0.01, (before, after)


def _brain3d_recipes() -> dict[str, dict]:
    """Shipped 3D brain recipes: ``<name>3d.recipe.json`` trained on a manifest of OASIS pairs (``*.pairs.csv``)."""
    import json

    recipes = {p.name.removesuffix("3d.recipe.json"): json.loads(p.read_text(encoding="utf-8"))
               for p in MODELS_DIR.glob("*3d.recipe.json")}  # fmt: skip
    return {k: r for k, r in sorted(recipes.items()) if str(r.get("data_path", "")).endswith(".pairs.csv")}


@pytest.mark.shared_data
@pytest.mark.parametrize("name", sorted(_brain3d_recipes()))
def test_shipped_3d_brain_weights_raise_dice_on_the_held_out_oasis_pair(name, shared_data):
    """The 3D brain weights never saw the pair OASIS 0455 <-> 0456 (their manifest pairs each of them with the
    unlabelled third subject only): registering it at 1 mm, both directions, beats identity on mean Dice and
    does not fold."""
    from regcore.io import load_image
    from regcore.metrics.evaluate import evaluate, evaluate_identity

    rows = (
        (MODELS_DIR.parents[1] / _brain3d_recipes()[name]["data_path"])
        .read_text(encoding="utf-8")
        .splitlines()
    )
    assert not any("0455" in row and "0456" in row for row in rows) and any("htwin" in row for row in rows)
    weights = MODELS_DIR / f"{name}3d.pt"
    assert weights.is_file() and weights.with_suffix(".md").is_file()
    root = shared_data / "brain3d"
    img = {s: load_image(root / "images" / f"OASIS_OAS1_{s}_MR1.nii.gz") for s in ("0455", "0456")}
    lab = {s: load_image(root / "labels" / f"OASIS_OAS1_{s}_MR1_seg35.nii.gz") for s in ("0455", "0456")}
    spec = registry.get(name)
    method, config = spec.factory(), spec.make_config()
    for f, m in (("0455", "0456"), ("0456", "0455")):
        kw = dict(fixed_labels=lab[f], moving_labels=lab[m])
        before = evaluate_identity(img[f], img[m], **kw)["dice_mean"]
        after = evaluate(method.register(img[f], img[m], config), **kw)
        assert after["dice_mean"] > before + 0.02 and after["folding_percent"] < 0.05, (f, m, before, after)
