"""Image similarity losses: ``loss(fixed, warped, mask=None) -> scalar``, lower = better aligned.

Inputs are batched images ``(B, C, *S)`` (2D or 3D, any device, float dtype) of equal shape;
``mask`` is ``(B or 1, 1, *S)`` weights in [0, 1] (voxels with weight 0 are ignored).
All losses are differentiable with respect to both images. Sign conventions:

* MSE / MAE >= 0, 0 for identical images.
* NCC and LNCC return the NEGATIVE correlation (NCC in [-1, 1]; LNCC = -mean local NCC^2 in
  [-1, 0], the voxelmorph / MONAI convention, so it ignores local contrast sign).
* MI and NMI return -MI (nats) and -NMI (Studholme, in [-2, -1]); CR returns 1 - eta^2.
* SSIM returns 1 - mean SSIM; MIND (see ``mind.py``) the MSE between MIND-SSC descriptors.
"""

from __future__ import annotations

import torch
from torch import nn

from regcore.losses.separable import separable_filter
from regcore.spatial.smooth import gaussian_kernel_1d

# -- shared helpers -----------------------------------------------------------------------


def check_image_pair(fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor | None = None) -> int:
    """Validate a (fixed, warped[, mask]) triple; returns the number of spatial dims (2 or 3)."""
    for arg, t in (("fixed", fixed), ("warped", warped)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{arg} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim not in (4, 5):
            raise ValueError(f"{arg} must be (B, C, *S) with 2 or 3 spatial dims, got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{arg} must be a floating-point tensor, got dtype {t.dtype}")
    if fixed.shape != warped.shape:
        raise ValueError(
            f"fixed {tuple(fixed.shape)} and warped {tuple(warped.shape)} must have the same shape"
        )
    if mask is not None:
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
        ok = (
            mask.ndim == fixed.ndim
            and mask.shape[1] == 1
            and mask.shape[2:] == fixed.shape[2:]
            and mask.shape[0] in (1, fixed.shape[0])
        )
        if not ok:
            raise ValueError(
                f"mask must be (B or 1, 1, *S) matching fixed {tuple(fixed.shape)}, "
                f"got shape {tuple(mask.shape)}"
            )
    return fixed.ndim - 2


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values`` ``(B, C, *S)`` weighted by ``mask`` ``(B or 1, 1, *S)``; scalar."""
    if mask is None:
        return values.mean()
    w = mask.to(device=values.device, dtype=values.dtype).expand_as(values)
    return (values * w).sum() / w.sum().clamp_min(torch.finfo(values.dtype).eps)


def _check_window(size) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
        raise ValueError(f"window must be an odd positive int (voxels), got {size!r}")
    return size


class SimilarityLoss(nn.Module):
    """Base class: validates inputs, then calls ``_loss(fixed, warped, mask)``."""

    def forward(
        self, fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        check_image_pair(fixed, warped, mask)
        return self._loss(fixed, warped, mask)

    def _loss(self, fixed, warped, mask):  # pragma: no cover - abstract
        raise NotImplementedError


# -- intensity-difference losses ----------------------------------------------------------


class MSELoss(SimilarityLoss):
    """Mean squared intensity difference (same modality, same intensity scale)."""

    def _loss(self, fixed, warped, mask):
        return masked_mean((fixed - warped) ** 2, mask)


class MAELoss(SimilarityLoss):
    """Mean absolute intensity difference (robust to outliers)."""

    def _loss(self, fixed, warped, mask):
        return masked_mean((fixed - warped).abs(), mask)


class NCCLoss(SimilarityLoss):
    """Negative global normalised cross-correlation per (batch, channel), averaged: in [-1, 1].

    Invariant to a positive linear intensity change; an inverted image gives +1 (worst).
    """

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = float(eps)

    def _loss(self, fixed, warped, mask):
        dims = tuple(range(2, fixed.ndim))
        w = torch.ones_like(fixed[:, :1]) if mask is None else mask.to(fixed).expand_as(fixed[:, :1])
        n = w.sum(dims, keepdim=True).clamp_min(self.eps)
        f = fixed - (fixed * w).sum(dims, keepdim=True) / n
        m = warped - (warped * w).sum(dims, keepdim=True) / n
        cov = (w * f * m).sum(dims)
        var = (w * f * f).sum(dims) * (w * m * m).sum(dims)
        return -(cov / torch.sqrt(var + self.eps)).mean()


class LocalNCCLoss(SimilarityLoss):
    """Negative local squared NCC (voxelmorph / MONAI ``LocalNormalizedCrossCorrelationLoss``).

    Args:
        window: odd window size in voxels along every axis.
        kernel: ``"box"`` (uniform window) or ``"gaussian"`` (weights ``exp(-x^2 / 2 sigma^2)``
            truncated to ``window`` taps).
        sigma: Gaussian sigma in voxels; default ``window / 3`` (MONAI's choice).
        smooth_dr: floor of the local (unnormalised) variances; avoids 0/0 in flat regions.
    Local sums use separable zero-padded convolutions. Result in [-1, 0]; -1 = perfect.
    """

    def __init__(
        self, window: int = 9, kernel: str = "box", sigma: float | None = None, smooth_dr: float = 1e-5
    ):
        super().__init__()
        self.window = _check_window(window)
        if kernel not in ("box", "gaussian"):
            raise ValueError(f"kernel must be 'box' or 'gaussian', got {kernel!r}")
        self.kernel_name = kernel
        self.sigma = float(sigma) if sigma is not None else window / 3.0
        if kernel == "box":
            k = torch.ones(window)
        else:
            k = gaussian_kernel_1d(self.sigma, radius=window // 2, normalise=False)
        self.register_buffer("kernel", k, persistent=False)
        self.taps = k.tolist()  # the weights separable_filter needs, kept on the host
        self.smooth_dr = float(smooth_dr)

    def _loss(self, fixed, warped, mask):
        ndim = fixed.ndim - 2
        k = self.kernel.to(fixed)
        vol = k.sum() ** ndim
        taps = self.taps
        f_sum, w_sum = separable_filter(fixed, taps), separable_filter(warped, taps)
        ff, ww, fw = (separable_filter(t, taps) for t in (fixed * fixed, warped * warped, fixed * warped))
        cross = fw - w_sum * f_sum / vol
        floor = torch.as_tensor(self.smooth_dr, dtype=fixed.dtype, device=fixed.device)
        f_var = torch.maximum(ff - f_sum * f_sum / vol, floor)
        w_var = torch.maximum(ww - w_sum * w_sum / vol, floor)
        return -masked_mean(cross * cross / (f_var * w_var), mask)


# -- histogram-based (multimodal) losses --------------------------------------------------


class _ParzenHistogram(SimilarityLoss):
    """Soft joint histogram with Gaussian Parzen windows (MONAI ``GlobalMutualInformationLoss`` style).

    Args:
        bins: number of intensity bins (centres equally spaced on [0, 1]).
        sigma_ratio: Parzen sigma as a fraction of the bin spacing.
        normalise: rescale each image (per batch item and channel) to [0, 1] by its min/max inside the
            mask before binning; False expects intensities already in [0, 1] (values are clamped).
        samples: if set, use a random subset of this many voxels per call (saves memory in 3D).
        seed: seed of that subset's own random generator, so a registration is repeatable and the
            global torch RNG is left alone; None draws from the global RNG.
    """

    def __init__(
        self,
        bins: int = 32,
        sigma_ratio: float = 0.5,
        normalise: bool = True,
        samples: int | None = None,
        eps: float = 1e-7,
        seed: int | None = None,
    ):
        super().__init__()
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
            raise ValueError(f"bins must be an int >= 2, got {bins!r}")
        if not sigma_ratio > 0:
            raise ValueError(f"sigma_ratio must be > 0, got {sigma_ratio!r}")
        if samples is not None and (not isinstance(samples, int) or samples < 2):
            raise ValueError(f"samples must be None or an int >= 2, got {samples!r}")
        centres = torch.linspace(0.0, 1.0, bins)
        self.register_buffer("centres", centres, persistent=False)
        self.preterm = 1.0 / (2.0 * (sigma_ratio / (bins - 1)) ** 2)
        self.bins, self.normalise, self.samples, self.eps = bins, normalise, samples, float(eps)
        self.seed, self._generator = seed, None

    def _sample_indices(self, n: int, device) -> torch.Tensor:
        """``self.samples`` voxel indices in ``[0, n)`` from the seeded generator (or the global RNG)."""
        if self.seed is None:
            return torch.randint(0, n, (self.samples,), device=device)
        if self._generator is None or self._generator.device != torch.device(device):
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return torch.randint(0, n, (self.samples,), device=device, generator=self._generator)

    def _flatten(self, fixed, warped, mask, raw: bool = False):
        """-> fixed, warped ``(B*C, N)`` in [0, 1] and weights ``(B*C, N)`` (raw: warped unscaled)."""
        b, c = fixed.shape[:2]
        f, m = fixed.reshape(b * c, -1), warped.reshape(b * c, -1)
        if mask is None:
            w = torch.ones_like(f)
        else:
            w = mask.to(fixed).expand(b, 1, *fixed.shape[2:]).repeat_interleave(c, 1).reshape(b * c, -1)
        if self.samples is not None and f.shape[1] > self.samples:
            idx = self._sample_indices(f.shape[1], f.device)
            f, m, w = f[:, idx], m[:, idx], w[:, idx]
        if raw:
            return (self._rescale(f, w) if self.normalise else f).clamp(0, 1), m, w
        if self.normalise:
            f, m = self._rescale(f, w), self._rescale(m, w)
        return f.clamp(0, 1), m.clamp(0, 1), w

    @staticmethod
    def _rescale(x, w):
        with torch.no_grad():
            inside = w > 0
            lo = torch.where(inside, x, torch.full_like(x, float("inf"))).amin(1, keepdim=True)
            hi = torch.where(inside, x, torch.full_like(x, float("-inf"))).amax(1, keepdim=True)
            scale = (hi - lo).clamp_min(1e-12)
        return (x - lo) / scale

    def _weights(self, x):
        """Parzen weights ``(B*C, N, bins)`` summing to 1 over bins."""
        p = torch.exp(-self.preterm * (x.unsqueeze(-1) - self.centres.to(x)) ** 2)
        return p / p.sum(-1, keepdim=True)

    def joint(self, fixed, warped, mask):
        """Joint probability ``(B*C, bins, bins)`` (fixed along dim 1) and marginals."""
        f, m, w = self._flatten(fixed, warped, mask)
        pf, pm = self._weights(f) * w.unsqueeze(-1), self._weights(m)
        pab = torch.bmm(pf.transpose(1, 2), pm) / w.sum(1).clamp_min(self.eps).view(-1, 1, 1)
        return pab, pab.sum(2), pab.sum(1)

    def _entropies(self, fixed, warped, mask):
        pab, pa, pb = self.joint(fixed, warped, mask)
        h = lambda p: -(p * torch.log(p + self.eps)).flatten(1).sum(1)  # noqa: E731
        return h(pa), h(pb), h(pab)


class MutualInformationLoss(_ParzenHistogram):
    """Negative mutual information ``-sum p_ab log(p_ab / (p_a p_b))`` in nats, Parzen-windowed.

    Depends only on the joint intensity statistics, so it is invariant to an intensity inversion
    or any one-to-one remapping (up to binning): the multimodal workhorse.
    """

    def _loss(self, fixed, warped, mask):
        pab, pa, pb = self.joint(fixed, warped, mask)
        ratio = (pab + self.eps) / (pa.unsqueeze(2) * pb.unsqueeze(1) + self.eps)
        return -(pab * torch.log(ratio)).flatten(1).sum(1).mean()


class NMILoss(_ParzenHistogram):
    """Negative normalised mutual information ``(H(A) + H(B)) / H(A, B)`` (Studholme 1999), in [-2, -1]."""

    def _loss(self, fixed, warped, mask):
        ha, hb, hab = self._entropies(fixed, warped, mask)
        return -((ha + hb) / hab.clamp_min(self.eps)).mean()


class CorrelationRatioLoss(_ParzenHistogram):
    """``1 - eta^2(warped | fixed)`` (Roche et al. 1998): how well warped is a function of fixed.

    Fixed intensities are soft-binned (Parzen); eta^2 = 1 - E_bin[Var(warped | bin)] / Var(warped).
    In [0, 1]; 0 when warped is any (binned) function of fixed.
    """

    def _loss(self, fixed, warped, mask):
        f, m, w = self._flatten(fixed, warped, mask, raw=True)
        n = w.sum(1, keepdim=True).clamp_min(self.eps)
        m = m - (w * m).sum(1, keepdim=True) / n  # centre first: avoids cancellation for large intensities
        pf = self._weights(f) * w.unsqueeze(-1)  # (BC, N, bins)
        n_k = pf.sum(1).clamp_min(self.eps)  # (BC, bins)
        s1 = torch.einsum("bnk,bn->bk", pf, m)
        s2 = torch.einsum("bnk,bn->bk", pf, m * m)
        within = (s2 - s1 * s1 / n_k).sum(1)
        total = (w * m * m).sum(1).clamp_min(self.eps)
        return (within / total).clamp(0, 1).mean()


# -- structural similarity ----------------------------------------------------------------


def ssim_map(
    fixed: torch.Tensor,
    warped: torch.Tensor,
    *,
    window: int = 11,
    sigma: float = 1.5,
    kernel: str = "gaussian",
    data_range: float | None = 1.0,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Local SSIM (Wang et al. 2004) on the valid region: ``(B, C, *(S - window + 1))``.

    Same definition as ``monai.metrics.SSIMMetric`` and ``skimage.metrics.structural_similarity(
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``. data_range: intensity range
    (None = max - min of ``fixed``).
    """
    check_image_pair(fixed, warped)
    _check_window(window)
    if any(s < window for s in fixed.shape[2:]):
        raise ValueError(f"images {tuple(fixed.shape)} are smaller than the SSIM window {window}")
    if kernel == "gaussian":  # weights on the host: separable_filter reads them as floats
        k = gaussian_kernel_1d(sigma, radius=window // 2, dtype=fixed.dtype).tolist()
    elif kernel == "box":
        k = torch.full((window,), 1.0 / window, dtype=fixed.dtype).tolist()
    else:
        raise ValueError(f"kernel must be 'gaussian' or 'box', got {kernel!r}")
    if data_range is None:
        data_range = float((fixed.max() - fixed.min()).detach()) or 1.0
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_f, mu_w = separable_filter(fixed, k, "valid"), separable_filter(warped, k, "valid")
    s_ff = separable_filter(fixed * fixed, k, "valid") - mu_f * mu_f
    s_ww = separable_filter(warped * warped, k, "valid") - mu_w * mu_w
    s_fw = separable_filter(fixed * warped, k, "valid") - mu_f * mu_w
    return ((2 * mu_f * mu_w + c1) * (2 * s_fw + c2)) / ((mu_f**2 + mu_w**2 + c1) * (s_ff + s_ww + c2))


class SSIMLoss(SimilarityLoss):
    """``1 - mean SSIM`` over the valid region (see :func:`ssim_map`); 0 for identical images."""

    def __init__(
        self, window: int = 11, sigma: float = 1.5, kernel: str = "gaussian", data_range: float | None = 1.0
    ):
        super().__init__()
        self.window, self.sigma, self.kernel, self.data_range = (
            _check_window(window),
            sigma,
            kernel,
            data_range,
        )

    def _loss(self, fixed, warped, mask):
        s = ssim_map(
            fixed,
            warped,
            window=self.window,
            sigma=self.sigma,
            kernel=self.kernel,
            data_range=self.data_range,
        )
        if mask is not None:
            r = self.window // 2
            mask = mask[(slice(None), slice(None)) + (slice(r, -r or None),) * (fixed.ndim - 2)]
        return 1.0 - masked_mean(s, mask)
