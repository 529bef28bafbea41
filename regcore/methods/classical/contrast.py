"""Are two images of one contrast? The test behind every "auto" choice between intensities and MIND-SSC.

Intensity similarities (SSD, demons' force, LNCC) assume that aligned images have related intensities. Between
contrasts that are not related that way (MR and ultrasound, T1w and T2w) they pull edges onto the wrong edges;
MIND-SSC descriptors (Heinrich et al. 2013, :mod:`regcore.losses.mind`) describe each voxel by its local
self-similarity, which is the same in both contrasts.

:func:`contrast_correlation` is the mean LOCAL correlation of the two images (Pearson's r in Gaussian windows of
5 mm, on both images smoothed by 2 mm, inside both); below :data:`MIND_BELOW` (0.4) the contrasts differ. A local
statistic, because a global one is dominated by the object against its background, which is bright in both
contrasts: the 3D T1w/T2w sample pair correlates at 0.78 globally (the rule until 2026-12-04 took it for one
contrast, and intensity demons reached Dice 0.29 there against 0.87 with MIND), but at 0.00 locally. Measured on
every pair of ``benchmarks/dev_benchmark.py`` and ``benchmarks/multimodal.py`` and on the built-in samples before
the value was chosen: same contrast 0.49-0.85 (brain slices of two subjects 0.49-0.70, OASIS 3D 0.73, T1w samples
0.71-0.85); different contrasts -0.67-0.35 (T1w/T2w samples -0.47-0.00, spine T1w/T2w and T2w/T2* -0.22-0.26,
MR/TRUS prostate -0.67-0.35, the histology stains 0.02). 0.4 lies in that gap; no pair held out from it is left.
Not every slice keeps to it: 8 of the 59 2D MR/TRUS slices of ``regcore.data.multimodal``'s train split (not in
that benchmark) correlate at 0.40-0.71.

Local r also falls when the images are not aligned: the OASIS pair shifted by 10 mm read 0.38 (3D) and 0.28 (2D),
two contrasts. So when the two intensity centres of mass lie more than :data:`WINDOW_MM` apart, r is also taken with
them met, and the larger value counts: shifted by 6-20 mm the OASIS pair reads 0.67-0.71 (3D), 0.62-0.68 (2D).
Only that far apart, because taking the larger of two values raises every pair a little: met unconditionally, the 3D
MR/TRUS pairs (centres 1-3 mm apart) reached 0.46. Over 306 pairs (every set of ``benchmarks/dev_benchmark.py``,
both splits of ``regcore.data.multimodal``'s three sets, the four samples; 2026-12-05) no pair changed side of 0.4:
21 pairs of two contrasts changed value (spine slices, stains and histology before their affine stage),
none of them now above 0.20. A texture without an object (smooth noise) has no centre to meet: shifted
by more than its grain it reads as two contrasts.

Users: demons' ``features`` (:mod:`regcore.methods.classical.demons_features`), the ``similarity`` of dense, svf,
bspline and fireants (:func:`resolve_similarity`), and the default method of a pair
(:mod:`regcore.methods.default_choice`).
For dense, svf and bspline (2026-12-04, ``benchmarks/README.md``): MIND beat their LNCC on the 3D spine and prostate
sets for all three and on the real 2D spine T1w/T2w slices; 2D MR/TRUS prostate slices were mixed, and the synthetic
T2-like sample pairs favour LNCC (a squared correlation, blind to a local sign flip) by 0.02-0.05 Dice.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from regcore.config import param
from regcore.losses import Similarity
from regcore.spatial.affine import moments_init
from regcore.spatial.smooth import gaussian_smooth
from regcore.spatial.warp import warp

MIND_BELOW = 0.4
"""Contrasts differ when :func:`contrast_correlation` is below this (see the module docstring)."""
SMOOTHING_MM = 2.0
"""Gaussian sigma (mm) applied first; the images are then sampled about this often (mm)."""
WINDOW_MM = 5.0
"""Gaussian sigma (mm) of the windows the local correlation is taken in."""
AUTO = "auto"
SIMILARITY_CHOICES = (AUTO, *Similarity)
"""The ``similarity`` choices of the methods that resolve ``auto`` with :func:`resolve_similarity`."""
SAME_CONTRAST_SIMILARITY = Similarity.LNCC
"""What ``similarity="auto"`` uses between images of one contrast."""
INTENSITY_SIMILARITIES = frozenset(
    {Similarity.MSE, Similarity.MAE, Similarity.NCC, Similarity.LNCC, Similarity.LNCC_GAUSS, Similarity.SSIM}
)
"""Similarities that assume related intensities (one contrast); MI, NMI, CR and MIND do not."""


def similarity_param():
    """The ``similarity`` field of dense, svf, bspline and fireants: ``auto`` by default (:func:`resolve_similarity`)."""
    return param(
        AUTO,
        "Similarity between fixed and warped moving. auto: lncc for images of one contrast, mind (MIND-SSC "
        "descriptors) when their intensities correlate locally under 0.4 (different contrasts: T1w/T2w, "
        "MR/ultrasound; slower); mi, nmi and cr also work across contrasts.",
        choices=SIMILARITY_CHOICES,
    )


def contrast_correlation(fixed: torch.Tensor, moving: torch.Tensor, spacing: Sequence[float]) -> float:
    """Mean local Pearson r of ``fixed`` and ``moving`` ``(1, 1, *S)`` (one grid, ``spacing`` in mm per axis):
    +1 for one contrast (up to a local linear map), -1 for inverted contrasts, near 0 for unrelated ones.

    Both images are smoothed by :data:`SMOOTHING_MM` and sampled every ~:data:`SMOOTHING_MM`; r is taken in
    Gaussian windows of :data:`WINDOW_MM` and averaged over the samples inside both images (above each one's
    25th percentile) where both vary. When the two intensity centres of mass lie more than :data:`WINDOW_MM`
    apart, r is also taken with the moving image shifted so that they meet, and the larger value counts: the
    question is the contrast, not the alignment (see the module docstring). 0 when no sample qualifies (a
    constant image)."""
    if fixed.shape != moving.shape or fixed.ndim - 2 != len(spacing):
        raise ValueError(f"fixed {tuple(fixed.shape)} and moving {tuple(moving.shape)} must share one grid")
    steps = [max(1, int(SMOOTHING_MM / float(s))) for s in spacing]
    view = (slice(None), slice(None), *[slice(None, None, k) for k in steps])
    sampled = [
        gaussian_smooth(x.float(), [SMOOTHING_MM / float(s) for s in spacing], truncate=2.0)[view].double()
        for x in (fixed, moving)
    ]
    a, b = ((x - x.min()) / (x.max() - x.min()).clamp_min(1e-12) for x in sampled)
    window = [WINDOW_MM / (float(s) * k) for s, k in zip(spacing, steps)]
    offset = moments_init(a, b)[0, :, -1]  # samples; fixed sample + offset = moving sample
    offset_mm = float(sum((float(t) * s * k) ** 2 for t, s, k in zip(offset, spacing, steps)) ** 0.5)
    r = _mean_local_correlation(a, b, window)
    return max(r, _mean_local_correlation(a, _shifted(b, offset), window)) if offset_mm > WINDOW_MM else r


def _shifted(moving: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """``moving`` ``(1, 1, *S)`` shifted by ``offset`` (samples per axis, rounded): ``shifted[i] = moving[i +
    offset]``; what the shift brings in from outside the grid is 0."""
    whole = offset.round().to(moving.dtype).view(1, -1, *([1] * (moving.ndim - 2)))
    return warp(moving, whole.expand(1, moving.ndim - 2, *moving.shape[2:]), padding_mode="zeros")


def _mean_local_correlation(a: torch.Tensor, b: torch.Tensor, window: Sequence[float]) -> float:
    """Pearson r of ``a`` and ``b`` ``(1, 1, *S)`` in Gaussian windows of ``window`` samples per axis, averaged
    over the samples above each image's 25th percentile where both vary; 0 when none does."""

    def local_mean(x: torch.Tensor) -> torch.Tensor:
        return gaussian_smooth(x, window, truncate=2.0)

    mean_a, mean_b = local_mean(a), local_mean(b)
    var_a = (local_mean(a * a) - mean_a**2).clamp_min(0.0)
    var_b = (local_mean(b * b) - mean_b**2).clamp_min(0.0)
    r = (local_mean(a * b) - mean_a * mean_b) / (var_a * var_b).sqrt().clamp_min(1e-12)
    inside = (a > torch.quantile(a.flatten(), 0.25)) & (b > torch.quantile(b.flatten(), 0.25))
    varies = (var_a > 1e-6 * float(var_a.max())) & (var_b > 1e-6 * float(var_b.max()))
    keep = inside & varies
    return float(r[keep].mean().clamp(-1.0, 1.0)) if bool(keep.any()) else 0.0


def contrasts_differ(correlation: float) -> bool:
    """True when a pair whose :func:`contrast_correlation` is ``correlation`` is of two contrasts."""
    return correlation < MIND_BELOW


def contrast_reason(correlation: float) -> str:
    """The reason, for the user: "the intensities correlate locally at r = ... (under 0.4: different contrasts)"."""
    if contrasts_differ(correlation):
        return f"the intensities correlate locally at r = {correlation:.2f} (under {MIND_BELOW}: different contrasts)"
    return f"the intensities correlate locally at r = {correlation:.2f} (at least {MIND_BELOW}: one contrast)"


def similarity_for(correlation: float) -> Similarity:
    """What ``similarity="auto"`` uses on a pair of this ``correlation``: MIND between contrasts, else LNCC."""
    return Similarity.MIND if contrasts_differ(correlation) else SAME_CONTRAST_SIMILARITY


def resolve_similarity(
    choice: str, fixed: torch.Tensor, moving: torch.Tensor, spacing: Sequence[float]
) -> Similarity:
    """``choice`` itself, or for ``auto`` :func:`similarity_for` the pair's :func:`contrast_correlation`
    (``fixed``, ``moving`` ``(1, C, *S)`` on one grid, first channels compared; ``spacing`` mm per axis)."""
    if choice != AUTO:
        return Similarity(choice)
    return similarity_for(contrast_correlation(fixed[:, :1].float(), moving[:, :1].float(), spacing))
