"""Similarity losses: analytic minima, library cross-checks (MONAI, skimage, scipy), gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from regcore.losses import LNCC_WINDOW, MULTIMODAL, Similarity, SimilarityName, make_similarity
from regcore.losses.mind import MINDLoss, mind_scale, mind_ssc, ssc_pairs
from regcore.losses.separable import separable_filter
from regcore.losses.similarity import (
    CorrelationRatioLoss,
    LocalNCCLoss,
    MutualInformationLoss,
    NMILoss,
    SSIMLoss,
    ssim_map,
)
from regcore.spatial.smooth import gaussian_kernel_1d

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def smooth_image(shape, seed=0, sigma=2.0, dtype=torch.float32) -> torch.Tensor:
    """Smooth random image (1, 1, *shape) scaled to [0, 1]."""
    g = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(g.standard_normal(shape), sigma)
    x = (x - x.min()) / (x.max() - x.min())
    return torch.tensor(x, dtype=dtype)[None, None]


def shifted(x: torch.Tensor, k: int = 2) -> torch.Tensor:
    return torch.roll(x, shifts=k, dims=2)


# -- analytic behaviour -------------------------------------------------------------------


@pytest.mark.parametrize("name", list(Similarity))
@pytest.mark.parametrize("shape", [(32, 36), (20, 22, 24)])
def test_identical_images_give_the_minimum(name, shape):
    loss = make_similarity(name, len(shape), **({"window": 7} if name == "ssim" else {}))
    f = smooth_image(shape)
    same = float(loss(f, f.clone()))
    other = float(loss(f, shifted(f, 3)))
    assert same < other, f"{name}: loss(f, f) = {same} should be below loss(f, shifted f) = {other}"


@pytest.mark.parametrize("name", ["mse", "mae", "mind", "ssim"])
def test_zero_for_identical_images(name):
    f = smooth_image((24, 28))
    assert float(make_similarity(name, 2)(f, f)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", ["ncc", "lncc", "lncc_gauss"])
def test_correlation_losses_reach_minus_one(name):
    f = smooth_image((24, 28))
    # a pure scaling: LNCC windows see zeros outside the image (zero padding, as in MONAI), so an
    # offset would break the linear relation in the border windows
    assert float(make_similarity(name, 2)(f, 2.0 * f)) == pytest.approx(-1.0, abs=1e-4)
    if name == "ncc":
        assert float(make_similarity(name, 2)(f, 2.0 * f + 0.5)) == pytest.approx(-1.0, abs=1e-5)


def test_intensity_inversion_multimodal_teaching_point():
    """MI/NMI/CR/MIND see an inverted image as perfectly aligned; MSE and NCC do not."""
    f = smooth_image((40, 44), seed=1)
    inverted = 1.0 - f
    for name in MULTIMODAL:
        loss = make_similarity(name, 2)
        assert float(loss(f, inverted)) == pytest.approx(float(loss(f, f)), abs=2e-3), name
        assert float(loss(f, inverted)) < float(loss(f, shifted(f, 3))), name
    mse, ncc = make_similarity("mse", 2), make_similarity("ncc", 2)
    assert float(mse(f, inverted)) > float(mse(f, shifted(f, 3)))
    assert float(ncc(f, inverted)) == pytest.approx(1.0, abs=1e-5)  # worst possible NCC


def test_mi_finds_the_shift_of_an_inverted_image_and_mse_does_not():
    f = smooth_image((48, 48), seed=2, sigma=3.0)
    moving = 1.0 - torch.roll(f, 4, dims=2)  # other "modality", shifted by 4 voxels
    mi, mse = make_similarity("mi", 2), make_similarity("mse", 2)
    shifts = list(range(-7, 8))
    mi_curve = [float(mi(f, torch.roll(moving, -s, dims=2))) for s in shifts]
    mse_curve = [float(mse(f, torch.roll(moving, -s, dims=2))) for s in shifts]
    assert shifts[int(np.argmin(mi_curve))] == 4
    assert shifts[int(np.argmin(mse_curve))] != 4


def test_mind_is_invariant_to_linear_remap_and_inversion():
    f = smooth_image((16, 18, 20), seed=3)
    ref = mind_ssc(f)
    assert ref.shape == (1, 12, 16, 18, 20)
    torch.testing.assert_close(mind_ssc(3.0 * f + 7.0), ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mind_ssc(1.0 - f), ref, atol=1e-5, rtol=1e-5)
    nonlinear = mind_ssc(f**2)  # monotonic but not linear: close, not equal
    assert float((nonlinear - ref).abs().mean()) < 0.1
    assert float((mind_ssc(shifted(f, 3)) - ref).abs().mean()) > float((nonlinear - ref).abs().mean())


def test_mind_patterns_and_2d_shape():
    assert len(ssc_pairs(3)) == 12 and len(ssc_pairs(2)) == 4
    for a, b in ssc_pairs(3):
        assert sum((x - y) ** 2 for x, y in zip(a, b)) == 2
    assert mind_ssc(smooth_image((20, 22))).shape == (1, 4, 20, 22)
    two_channels = torch.cat([smooth_image((20, 22)), smooth_image((20, 22), seed=5)], 1)
    assert mind_ssc(two_channels).shape == (1, 8, 20, 22)


def test_mask_restricts_the_loss():
    f, w = smooth_image((20, 20), 0), smooth_image((20, 20), 1)
    mask = torch.zeros(1, 1, 20, 20)
    mask[..., :10] = 1
    expected = float(((f - w) ** 2)[..., :10].mean())
    assert float(make_similarity("mse", 2)(f, w, mask)) == pytest.approx(expected, rel=1e-6)
    ncc_masked = float(make_similarity("ncc", 2)(f, w, mask))
    ncc_crop = float(make_similarity("ncc", 2)(f[..., :10].contiguous(), w[..., :10].contiguous()))
    assert ncc_masked == pytest.approx(ncc_crop, abs=1e-5)
    mi_masked = float(make_similarity("mi", 2, normalise=False)(f, w, mask))
    mi_crop = float(
        make_similarity("mi", 2, normalise=False)(f[..., :10].contiguous(), w[..., :10].contiguous())
    )
    assert mi_masked == pytest.approx(mi_crop, abs=1e-5)


def test_batch_is_mean_of_items():
    f = torch.cat([smooth_image((16, 16), 0), smooth_image((16, 16), 1)])
    w = torch.cat([smooth_image((16, 16), 2), smooth_image((16, 16), 3)])
    for name in ("mse", "ncc", "mi", "nmi", "cr", "lncc"):
        loss = make_similarity(name, 2)
        both = float(loss(f, w))
        items = np.mean([float(loss(f[i : i + 1], w[i : i + 1])) for i in range(2)])
        assert both == pytest.approx(items, abs=1e-5), name


# -- library cross-checks -----------------------------------------------------------------


def test_separable_filter_matches_scipy():
    x = smooth_image((12, 13, 14), 4, sigma=1.0, dtype=torch.float64)
    k = gaussian_kernel_1d(1.3, radius=3, dtype=torch.float64)
    ours = separable_filter(x, k)[0, 0].numpy()
    ref = ndimage.correlate(x[0, 0].numpy(), np.einsum("i,j,k->ijk", *[k.numpy()] * 3), mode="constant")
    np.testing.assert_allclose(ours, ref, atol=1e-12)


@pytest.mark.parametrize("shape", [(9, 11), (7, 8, 9)])
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("taps", [3, 4])
def test_separable_filter_and_its_gradient_match_torch_convolutions(shape, padding, taps):
    """The shifted-sum filter against one 1D conv per axis (what it replaced), values and autograd gradient."""
    g = torch.Generator().manual_seed(taps)
    x = torch.rand(2, 3, *shape, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.rand(taps, generator=g, dtype=torch.float64)
    ndim = len(shape)
    conv = torch.nn.functional.conv3d if ndim == 3 else torch.nn.functional.conv2d
    ref = x.reshape(6, 1, *shape)
    for axis in range(ndim):
        view, pads = [1, 1] + [1] * ndim, [0] * ndim
        view[2 + axis], pads[axis] = taps, taps // 2 if padding == "same" else 0
        ref = conv(ref, k.view(view), padding=tuple(pads))
    ref = ref.reshape(2, 3, *ref.shape[2:])
    ours = separable_filter(x, k, padding)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    weights = torch.rand(ref.shape, generator=g, dtype=torch.float64)
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), x)
    (grad_ref,) = torch.autograd.grad((ref * weights).sum(), x)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=0, atol=1e-12)
    small = x[:1, :1].detach().clone().requires_grad_(True)
    # the hand-written adjoint of the backward
    assert torch.autograd.gradcheck(lambda t: separable_filter(t, k, padding), (small,))
    with pytest.raises(ValueError, match="padding"):
        separable_filter(x, k, "full")


@pytest.mark.parametrize("kernel,monai_kernel", [("box", "rectangular"), ("gaussian", "gaussian")])
@pytest.mark.parametrize("shape", [(30, 34), (16, 18, 20)])
def test_lncc_matches_monai(kernel, monai_kernel, shape):
    from monai.losses import LocalNormalizedCrossCorrelationLoss

    f, w = smooth_image(shape, 0), smooth_image(shape, 1) + 0.2 * smooth_image(shape, 0)
    ref = LocalNormalizedCrossCorrelationLoss(
        spatial_dims=len(shape), kernel_size=7, kernel_type=monai_kernel
    )
    ours = LocalNCCLoss(window=7, kernel=kernel)
    assert float(ours(f, w)) == pytest.approx(float(ref(w, f)), abs=1e-5)


@pytest.mark.parametrize("bins", [16, 23])
def test_mi_matches_monai(bins):
    from monai.losses import GlobalMutualInformationLoss

    f, w = smooth_image((24, 26, 20), 0), smooth_image((24, 26, 20), 1)
    w = 0.6 * w + 0.4 * f
    ref = GlobalMutualInformationLoss(num_bins=bins, sigma_ratio=0.5)
    ours = MutualInformationLoss(bins=bins, sigma_ratio=0.5, normalise=False)
    assert float(ours(f, w)) == pytest.approx(float(ref(w, f)), abs=1e-4)


@pytest.mark.parametrize("shape", [(40, 44), (20, 22, 24)])
def test_ssim_matches_skimage_and_monai(shape):
    from monai.metrics import SSIMMetric
    from skimage.metrics import structural_similarity

    f, w = smooth_image(shape, 0, dtype=torch.float64), smooth_image(shape, 1, dtype=torch.float64)
    w = 0.5 * w + 0.5 * f
    ours = float(ssim_map(f, w, data_range=1.0).mean())
    ref = structural_similarity(
        f[0, 0].numpy(),
        w[0, 0].numpy(),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
    )
    assert ours == pytest.approx(ref, abs=1e-6)
    monai = float(SSIMMetric(spatial_dims=len(shape), data_range=1.0)(w.float(), f.float()).mean())
    assert ours == pytest.approx(monai, abs=1e-4)
    assert float(SSIMLoss()(f, w)) == pytest.approx(1.0 - ours, abs=1e-9)


def test_nmi_range_and_cr_function_of_fixed():
    f = smooth_image((30, 30), 0)
    nmi = NMILoss()
    assert -2.0 <= float(nmi(f, f)) <= float(nmi(f, smooth_image((30, 30), 7))) <= -1.0
    cr = CorrelationRatioLoss()
    assert float(cr(f, torch.cos(3 * f))) < 0.02  # any function of fixed is explained
    assert float(cr(f, smooth_image((30, 30), 7))) > 0.5


# -- gradients ----------------------------------------------------------------------------


GRADCHECK_LOSSES = {
    "mse": {},
    "mae": {},
    "ncc": {},
    "lncc": {"window": 3},
    "lncc_gauss": {"window": 3},
    "mi": {"bins": 8, "normalise": False},
    "nmi": {"bins": 8, "normalise": False},
    "cr": {"bins": 8, "normalise": False},
    "mind": {"radius": 1, "dilation": 1},
    "ssim": {"window": 3},
}


@pytest.mark.parametrize("name", list(Similarity))
def test_gradcheck(name):
    torch.manual_seed(0)
    loss = make_similarity(name, 2, **GRADCHECK_LOSSES[name])
    f = (0.1 + 0.8 * torch.rand(1, 1, 6, 7, dtype=torch.float64)).requires_grad_()
    w = (0.1 + 0.8 * torch.rand(1, 1, 6, 7, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: loss(a, b), (f, w), eps=1e-6, atol=1e-5, fast_mode=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(Similarity))
def test_backward_3d_on_device(name, device):
    f = smooth_image((12, 13, 14)).to(device)
    w = smooth_image((12, 13, 14), 1).to(device).requires_grad_()
    kw = {"window": 5} if name == "ssim" else {}
    value = make_similarity(name, 3, **kw)(f, w)
    value.backward()
    assert value.ndim == 0 and value.device.type == device
    assert torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


# -- bad input ----------------------------------------------------------------------------


def test_bad_input_messages():
    f = smooth_image((10, 10))
    with pytest.raises(ValueError, match="must be one of"):
        make_similarity("cosine", 2)
    with pytest.raises(TypeError, match="bad keyword"):
        make_similarity("mse", 2, bins=3)
    with pytest.raises(ValueError, match="dims must be 2 or 3"):
        make_similarity("mse", 4)
    with pytest.raises(ValueError, match="same shape"):
        make_similarity("mse", 2)(f, smooth_image((10, 12)))
    with pytest.raises(ValueError, match=r"\(B, C, \*S\)"):
        make_similarity("ncc", 2)(f[0], f[0])
    with pytest.raises(TypeError, match="floating"):
        make_similarity("mse", 2)(f.long(), f.long())
    with pytest.raises(ValueError, match="mask must be"):
        make_similarity("mse", 2)(f, f, torch.ones(1, 1, 5, 5))
    with pytest.raises(ValueError, match="odd positive int"):
        LocalNCCLoss(window=4)
    with pytest.raises(ValueError, match="bins"):
        MutualInformationLoss(bins=1)
    with pytest.raises(ValueError, match="radius"):
        MINDLoss(radius=-1)(f, f)
    with pytest.raises(ValueError, match="smaller than the SSIM window"):
        SSIMLoss(window=11)(f, f)


# -- a short real registration: every loss drives a translation to the truth ----------------


FAST_REGISTRATION = {"mse", "lncc", "mi"}


@pytest.mark.parametrize(
    "name", [n if n in FAST_REGISTRATION else pytest.param(n, marks=pytest.mark.slow) for n in Similarity]
)
def test_gradient_descent_recovers_a_translation(name):
    """Optimise a constant displacement t with Adam; multimodal losses see an inverted moving image."""
    from regcore.spatial.warp import warp

    fixed = smooth_image((48, 48), seed=11, sigma=3.0)
    truth = torch.tensor([2.5, -1.5])
    moving = warp(fixed, -truth.view(1, 2, 1, 1).expand(1, 2, 48, 48))  # moving(x) = fixed(x - truth)
    if name in MULTIMODAL:
        moving = 1.0 - moving
    loss = make_similarity(name, 2, **({"window": 7} if name == "ssim" else {}))
    t = torch.zeros(2, requires_grad=True)
    opt = torch.optim.Adam([t], lr=0.2)
    for _ in range(50):
        opt.zero_grad()
        value = loss(fixed, warp(moving, t.view(1, 2, 1, 1).expand(1, 2, 48, 48)))
        value.backward()
        opt.step()
    assert torch.linalg.norm(t.detach() - truth) < 0.35, f"{name}: t = {t.detach().tolist()}"


def test_sampled_mi_with_seed_is_repeatable_and_leaves_global_rng_alone():
    fixed, warped = torch.rand(1, 1, 40, 40, 40), torch.rand(1, 1, 40, 40, 40)
    first, second = (make_similarity("mi", 3, samples=5_000, seed=3) for _ in range(2))
    state = torch.random.get_rng_state()
    values = [float(first(fixed, warped)) for _ in range(2)]
    assert torch.equal(torch.random.get_rng_state(), state)
    assert (
        float(second(fixed, warped)) == values[0] and values[1] != values[0]
    )  # same stream, and it advances


# -- the one name -> loss factory -----------------------------------------------------------


def test_make_similarity_defaults_follow_the_dimension():
    for dims, window in ((2, 9), (3, 7)):
        assert LNCC_WINDOW[dims] == window
        box, gauss = make_similarity("lncc", dims), make_similarity("LNCC_GAUSS", dims)
        assert (box.window, box.kernel_name) == (window, "box")
        assert (gauss.window, gauss.kernel_name) == (window, "gaussian")
    assert make_similarity("mi", 3).samples == 200_000 and make_similarity("mi", 2).samples is None
    assert make_similarity("nmi", 3, samples=None).samples is None  # options override the defaults
    assert (
        make_similarity("lncc", 3, window=5).window == 5 and make_similarity("ssim", 2, window=5).window == 5
    )
    assert isinstance(make_similarity("mse", 3, window=5), type(make_similarity("mse", 2)))  # window ignored
    assert SimilarityName is Similarity and {s.value for s in Similarity} >= {
        "lncc",
        "ncc",
        "mse",
        "mi",
        "nmi",
        "mind",
        "cr",
        "ssim",
        "mae",
        "lncc_gauss",
    }


def test_regularizer_names_build_the_same_modules():
    from regcore.losses import Regularizer, make_regularizer, regularizer_loss

    assert regularizer_loss is make_regularizer
    for name in Regularizer:
        assert (
            type(make_regularizer(name))
            .__name__.lower()
            .startswith(("diffusion", "totalvariation", "bending", "folding", "noregularizer"))
        )
    with pytest.raises(ValueError, match="must be one of"):
        make_regularizer("elastic")


@pytest.mark.parametrize("shape", [(1, 1, 14, 15, 13), (2, 1, 22, 19)])
def test_mind_ssc_in_place_path_equals_the_differentiable_one(shape):
    """Without an autograd graph mind_ssc reuses its buffers in place (a 12-channel 1 mm volume: ~160 MiB
    lower peak in MIND demons); the values are the same bits, and gradients still flow when asked for."""
    x = torch.rand(shape, generator=torch.Generator().manual_seed(3), requires_grad=True)
    traced = mind_ssc(x)
    traced.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    with torch.no_grad():
        assert torch.equal(mind_ssc(x), traced.detach())
        assert torch.equal(mind_ssc(x, radius=0), mind_ssc(x.detach().clone(), radius=0))


def test_mind_loss_describes_an_unchanged_fixed_image_once():
    """An optimiser calls the loss with one fixed image and a new warped one each step: the fixed descriptors
    are kept while that same tensor comes back unchanged, recomputed after an in-place change or for another
    tensor; values and gradients equal a fresh loss's."""
    from regcore.losses.mind import MINDLoss

    g = torch.Generator().manual_seed(5)
    fixed, other = torch.rand(1, 1, 12, 13, 11, generator=g), torch.rand(1, 1, 12, 13, 11, generator=g)
    warped = torch.rand(1, 1, 12, 13, 11, generator=g, requires_grad=True)
    loss = MINDLoss()
    first = loss(fixed, warped)
    (grad,) = torch.autograd.grad(loss(fixed, warped), warped)
    (fresh_grad,) = torch.autograd.grad(MINDLoss()(fixed, warped), warped)
    assert torch.equal(grad, fresh_grad) and torch.equal(first, MINDLoss()(fixed, warped))
    kept = loss._fixed[2]
    loss(fixed, warped)
    assert loss._fixed[2] is kept  # not recomputed
    assert torch.equal(loss(other, warped), MINDLoss()(other, warped))  # another tensor
    fixed.mul_(0.5).add_(other)  # changed in place
    assert torch.equal(loss(fixed, warped), MINDLoss()(fixed, warped))


@pytest.mark.parametrize(
    "spacing, voxels",
    [
        ((1.0, 1.0), 1),
        ((2.0, 2.0, 2.0), 1),
        ((3.0, 3.0), 1),
        ((0.5, 0.5, 5.0), 2),
        ((0.49999999810834755, 0.5000000005458174, 7.5), 2),  # the spine volume's stored spacing
        ((0.4000000059604645, 0.4000000059604645), 2),  # the MR/TRUS grid
        ((0.25, 0.3), 4),  # the finest axis counts
    ],
)
def test_mind_scale_is_the_whole_voxels_in_one_mm(spacing, voxels):
    assert mind_scale(spacing) == voxels


@pytest.mark.parametrize("spacing", [(0.0, 1.0), (-1.0, 1.0), (float("nan"), 1.0)])
def test_mind_scale_refuses_a_spacing_that_is_not_positive(spacing):
    with pytest.raises(ValueError, match="spacing must be finite and > 0 mm"):
        mind_scale(spacing)


def test_make_similarity_sets_mind_to_its_physical_scale_from_the_spacing():
    """Given the grid's spacing, MIND's radius and dilation are mind_scale's voxels (dense, svf, bspline and
    affine pass it); without it the paper's 2 voxels; an explicit option wins."""
    image = torch.rand(1, 1, 20, 22, generator=torch.Generator().manual_seed(2))
    one_mm = make_similarity("mind", 2, spacing=(1.0, 1.0))
    assert (one_mm.radius, one_mm.dilation) == (1, 1)
    torch.testing.assert_close(one_mm._fixed_descriptors(image), mind_ssc(image, radius=1, dilation=1))
    assert (
        make_similarity("mind", 3, spacing=(0.4, 0.4, 0.4)).radius,
        make_similarity("mind", 2).radius,
    ) == (2, 2)
    assert make_similarity("mind", 2, spacing=(1.0, 1.0), radius=3).radius == 3
    assert make_similarity("lncc", 2, spacing=(1.0, 1.0)).window == LNCC_WINDOW[2]  # ignored by the others
