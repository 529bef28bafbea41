"""fireants between two contrasts (`regcore.methods.classical.fireants`): MIND-SSC descriptors compared by their mean
squared difference, whose gradient is taken by formula (equal to ``MSELoss`` under autograd), and the auto preset's
3x wider field smoothing for MIND only (recorded in the run's config)."""

from __future__ import annotations

import pytest
import torch

from regcore.data import sample_pair
from regcore.losses import Similarity, make_similarity
from regcore.methods.classical import fireants
from regcore.methods.classical.fireants import MIND_FIELD_SMOOTHING
from regcore.methods.registry import get
from regcore.metrics import evaluate, evaluate_identity


@pytest.mark.parametrize("shape", [(20, 23, 27), (31, 37)])
def test_the_analytic_mean_squared_difference_is_the_autograd_one(shape):
    """fireants' MSE (what its MIND compares: descriptor channels, warped) takes its gradient by formula: equal to
    ``MSELoss`` and its autograd gradient, over two channels."""
    g = torch.Generator().manual_seed(0)
    fixed, warped = torch.rand(1, 2, *shape, generator=g), torch.rand(1, 2, *shape, generator=g)
    loss, grad = fireants._similarity_gradient(Similarity.MSE, None, fixed, warped, 5, 1e-3)
    w = warped.clone().requires_grad_(True)
    reference = make_similarity(Similarity.MSE, len(shape))(fixed, w)
    reference.backward()
    assert loss == pytest.approx(float(reference.detach()), rel=1e-5)
    torch.testing.assert_close(grad, w.grad)


def test_fireants_auto_widens_its_field_smoothing_for_mind_only():
    """With preset auto, fireants smooths its field 3x wider when it compares MIND descriptors (the built-in T1w ->
    T2w sample) and not for one contrast (T1w -> T1w); a custom preset runs the user's value. The run records it,
    and both pairs register (one short real registration each)."""
    spec = get("fireants")
    base = spec.make_config({}).smooth_warp_sigma
    for contrast, similarity, sigma in (
        ("t2", Similarity.MIND, MIND_FIELD_SMOOTHING * base),
        ("t1", "lncc", base),
    ):
        pair = sample_pair(dims=2, contrast=contrast)
        result = spec.factory().register(pair.fixed, pair.moving, spec.make_config({}))
        ran = result.config
        assert ran.similarity == similarity and ran.smooth_warp_sigma == pytest.approx(sigma), contrast
        before = evaluate_identity(pair.fixed, pair.moving, **pair.annotations)["dice_mean"]
        after = evaluate(result, **pair.annotations)["dice_mean"]  # T2: 0.750 -> 0.903
        assert after > before + 0.05, (contrast, before, after)
    pair = sample_pair(dims=2, contrast="t2")
    custom = spec.make_config({"preset": "custom", "levels": (1,), "iterations": (5,)})
    assert spec.factory().register(pair.fixed, pair.moving, custom).config.smooth_warp_sigma == base
