"""Deep similarity family (learned multimodal metric + classical optimiser) and the multimodal pair sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from regcore.data import sample_pair
from regcore.data.multimodal import MULTIMODAL_SETS, multimodal_pairs
from regcore.methods import registry
from regcore.methods.learned.deep_similarity import DeepSimilarity, LearnedLoss, score, train
from regcore.methods.learned.inference import MODELS_DIR, load_model
from regcore.metrics import evaluate, evaluate_identity
from regcore.spatial.warp import warp

WEIGHTS = MODELS_DIR / "deep_similarity2d.pt"


def _shipped():
    if not WEIGHTS.is_file():
        pytest.fail(f"shipped weights missing: {WEIGHTS}")
    nets, _ = load_model(WEIGHTS, torch.device("cpu"))
    return nets.eval()


def _shift(x: torch.Tensor, dy: float, dx: float) -> torch.Tensor:
    u = torch.zeros(1, 2, *x.shape[2:])
    u[:, 0], u[:, 1] = dy, dx
    return warp(x, u)


# -- data --------------------------------------------------------------------------------------------
def test_multimodal_pairs_bad_input_names_the_field():
    with pytest.raises(ValueError, match="name must be one of"):
        multimodal_pairs("mri_ct", "train")
    with pytest.raises(ValueError, match="split for multimodal set 'spine_t1t2'"):
        multimodal_pairs("spine_t1t2", "test")


@pytest.fixture(scope="module")
def sample_heldout():
    return multimodal_pairs("sample_t1t2", "heldout")


def test_sample_t1t2_heldout_is_t1_t2_of_heldout_subjects(sample_heldout):
    pairs = sample_heldout
    assert len(pairs) == 6
    subjects = {p.meta["fixed_subject"] for p in pairs} | {p.meta["moving_subject"] for p in pairs}
    assert subjects == {"subject_07", "subject_08", "subject_09"}
    p = pairs[0]
    assert p.modality == "t1/t2" and p.fixed.geometry.same_grid(p.moving.geometry)
    assert p.fixed_labels is not None and p.fixed_landmarks is not None


def test_shared_multimodal_sets_split_and_geometry(shared_data):
    from regcore.data.slices import split_of

    pro = multimodal_pairs("prostate_mr_us", "heldout", shared_data)
    assert {p.meta["case"] for p in pro} == {4, 7}
    assert any(p.fixed_landmarks is not None for p in pro)
    spine = multimodal_pairs("spine_t1t2", "heldout", shared_data)
    assert spine and all(split_of(p.meta["position"]) == "held_out" for p in spine)
    for p in (pro[0], spine[0]):
        assert p.fixed.geometry.same_grid(p.moving.geometry)
        assert float(p.moving.data.min()) >= 0.0 and float(p.moving.data.max()) <= 1.0
        assert p.fixed_labels.present_labels() == [1] and p.moving_labels.present_labels() == [1]
    assert set(MULTIMODAL_SETS) == {"sample_t1t2", "prostate_mr_us", "spine_t1t2"}


# -- training ----------------------------------------------------------------------------------------
class _SameSubjectT1T2:
    """Aligned T1/T2 crops of training subjects 0-2 (same subject, so exactly aligned)."""

    def __init__(self, shape=(32, 32)):
        self.shape = shape
        self.pairs = []
        for k in range(3):
            p = sample_pair("brain", 2, fixed=k, moving=k, contrast="t2")
            self.pairs.append((p.fixed.batch(), p.moving.batch()))

    def batch(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        fs, ms = [], []
        for _ in range(8):
            f, m = self.pairs[int(rng.integers(len(self.pairs)))]
            a = int(rng.integers(8, f.shape[2] - self.shape[0] - 8))
            b = int(rng.integers(8, f.shape[3] - self.shape[1] - 8))
            fs.append(f[..., a : a + self.shape[0], b : b + self.shape[1]])
            ms.append(m[..., a : a + self.shape[0], b : b + self.shape[1]])
        return {"fixed": torch.cat(fs), "moving": torch.cat(ms)}


def test_short_training_lowers_the_loss(tmp_path):
    from regcore.train.config import config_from_dict

    torch.set_num_threads(1)
    cfg = config_from_dict(
        {
            "family": "deep_similarity",
            "dims": 2,
            "train_shape": [32, 32],
            "epochs": 1,
            "steps_per_epoch": 60,
            "batch_size": 8,
            "lr": 0.01,
            "device": "cpu",
            "family_config": {"widths": [8, 16, 16], "max_shift": 8.0, "sigma": 2.0},
        }
    )
    train(cfg, tmp_path, source=_SameSubjectT1T2())
    import json

    bce = [
        json.loads(line)["bce"]
        for line in (tmp_path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert len(bce) == 60
    assert np.mean(bce[-15:]) < np.mean(bce[:15]) - 0.05, (np.mean(bce[:15]), np.mean(bce[-15:]))
    assert (tmp_path / "model.pt").is_file()


# -- the shipped scorer ------------------------------------------------------------------------------
def test_shipped_scorer_ranks_aligned_t1_t2_above_shifted():
    nets = _shipped()
    p = sample_pair("brain", 2, fixed=8, moving=8, contrast="t2")  # held-out subject, T1 vs T2, aligned
    f, m = p.fixed.batch(), p.moving.batch()
    with torch.no_grad():
        aligned = float(score(nets, f, m)[0])
        shifted = [float(score(nets, f, _shift(m, dy, dx))[0]) for dy, dx in ((4, 0), (0, -4), (3, 3))]
    assert aligned > max(shifted) + 1.0, (aligned, shifted)


def test_shipped_scorer_ranks_real_spine_t1_t2_above_shifted(shared_data):
    nets = _shipped()
    p = multimodal_pairs("spine_t1t2", "heldout", shared_data)[2]  # header-aligned T2w / T1w slice
    f, m = p.fixed.batch(), p.moving.batch()
    with torch.no_grad():
        aligned = float(score(nets, f, m)[0])
        shifted = [float(score(nets, f, _shift(m, dy, dx))[0]) for dy, dx in ((6, 0), (0, 6), (-4, -4))]
    assert aligned > max(shifted), (aligned, shifted)


def test_registration_of_heldout_t1_t2_pair_raises_dice(sample_heldout):
    torch.set_num_threads(1)
    p = sample_heldout[1]
    spec = registry.get("deep_similarity")
    result = spec.factory().register(
        p.fixed, p.moving, spec.make_config({"affine_iterations": 40, "dense_iterations": 0})
    )
    kw = dict(fixed_labels=p.fixed_labels, moving_labels=p.moving_labels)
    before = evaluate_identity(p.fixed, p.moving, **kw)["dice_mean"]
    after = evaluate(result, **kw)["dice_mean"]
    assert after > before + 0.05, (before, after)
    assert len(result.extras["loss_history"]) == 40
    assert result.extras["loss_history"][-1] < result.extras["loss_history"][0]
    assert tuple(result.extras["maps"]["similarity"].shape) == (1, 1, *p.fixed.shape)
    assert result.affine is not None


def test_learned_loss_is_differentiable_and_predict_validates_shapes():
    fam = DeepSimilarity()
    nets = fam.build(2, fam.make_config({"widths": [4, 4]})).eval()
    f = torch.rand(1, 1, 20, 24)
    m = torch.rand(1, 1, 20, 24, requires_grad=True)
    LearnedLoss(nets)(f, m).backward()
    assert m.grad is not None and torch.isfinite(m.grad).all()
    with pytest.raises(ValueError, match=r"fixed and moving must both be \(B, 1, H, W\)"):
        fam.predict(nets, torch.rand(1, 1, 20, 20), f, fam.make_config({}))
    spec = registry.get("deep_similarity")
    with pytest.raises(ValueError, match="affine_iterations"):
        spec.make_config({"affine_iterations": -1})
