"""Prepare an image pair for registration: resample through physical space, crop/pad,
normalise intensities, match histograms, and check a pair for common problems (MR bias correction:
:mod:`regcore.bias_field`).

All functions take and return :class:`~regcore.image.Image`; geometry stays consistent
(LPS mm, tensor axis order = file index order). Device and dtype follow the input.
"""

from __future__ import annotations

import enum

import numpy as np
import torch
import torch.nn.functional as F

from regcore.image import Geometry, Image
from regcore.spatial.grid import affine_to_normalised, voxel_scale

__all__ = [
    "NormaliseMethod",
    "resample_to",
    "normalise",
    "crop_or_pad",
    "histogram_match",
    "check_pair",
]


class NormaliseMethod(enum.StrEnum):
    MINMAX = "minmax"  # (x - min) / (max - min) -> [0, 1]
    ZSCORE = "zscore"  # (x - mean) / std
    PERCENTILE = "percentile"  # clip to [p_low, p_high] percentiles, then -> [0, 1]


def _check_image(image, name: str) -> Image:
    if not isinstance(image, Image):
        raise TypeError(f"{name} must be a regcore Image, got {type(image).__name__}")
    return image


def _slab_count(shape: tuple[int, ...], device: torch.device) -> int:
    """Number of batch slabs for CPU grid_sample (1 on GPU, in 2D and for small grids)."""
    if device.type != "cpu" or len(shape) != 3 or int(np.prod(shape)) < (1 << 18):
        return 1
    return max(1, min(torch.get_num_threads(), shape[0] // 8))


def _affine_grid(theta: torch.Tensor, shape: tuple[int, ...], device, dtype) -> torch.Tensor:
    """``F.affine_grid(theta[None], (1, 1, *shape), align_corners=True)`` built separably: one
    broadcast add per axis instead of a per-voxel matmul. theta ``(n, n+1)`` float64 -> ``(1, *shape, n)``.

    Unlike F.affine_grid (which puts a size-1 axis at 0), a size-1 axis sits at -1, the value
    ``grid.affine_to_normalised`` assumes (``p = 2 v / max(size - 1, 1) - 1`` at v = 0)."""
    n = len(shape)
    out = theta[:, n].to(device=device, dtype=dtype).view(*([1] * n), n)
    for axis, size in enumerate(shape):  # grid xyz component k reads tensor axis n-1-k
        coord = (
            torch.linspace(-1.0, 1.0, size, dtype=torch.float64)
            if size > 1
            else -torch.ones(1, dtype=torch.float64)
        )
        term = (coord[:, None] * theta[:, n - 1 - axis][None, :]).to(device=device, dtype=dtype)
        view = [1] * n + [n]
        view[axis] = size
        out = out + term.view(view)
    return out[None]


_TIE_NUDGE = 1e-4
"""Voxels added to nearest-neighbour sampling positions so that exact ties round up, as in ITK."""


def _sampling_grid(
    ref_to_img: np.ndarray,
    image_shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    shift: float,
    device,
    dtype,
) -> torch.Tensor:
    """grid_sample grid ``(1, *out_shape, n)`` reading image voxel ``ref_to_img @ v + shift`` at output voxel v."""
    n = len(image_shape)
    matrix = torch.as_tensor(ref_to_img[:n], dtype=torch.float64).clone()
    matrix[:, n] += shift
    # grid.affine_to_normalised normalises both sides by ONE shape (the output's); scaling the rows by
    # voxel_scale(image) / voxel_scale(output) makes the input side use the image's own shape.
    ratio = voxel_scale(image_shape, dtype=torch.float64) / voxel_scale(out_shape, dtype=torch.float64)
    theta = affine_to_normalised((matrix * ratio[:, None])[None], out_shape)[0]
    return _affine_grid(theta, out_shape, device, dtype)


def _inside_mask(
    ref_to_img: np.ndarray, image_shape: tuple[int, ...], out_shape: tuple[int, ...], device
) -> torch.Tensor:
    """``(1, *out_shape)`` bool: the image voxel index read at each output voxel lies in
    ``[-0.5, size - 0.5)`` on every axis (ITK's inside-the-buffer rule), computed separably in float64."""
    n = len(out_shape)
    inside = torch.ones((1, *out_shape), dtype=torch.bool, device=device)
    for i in range(n):
        coord = torch.full([1] * n, float(ref_to_img[i, n]), dtype=torch.float64, device=device)
        for d, size in enumerate(out_shape):
            view = [1] * n
            view[d] = size
            coord = coord + (
                float(ref_to_img[i, d]) * torch.arange(size, dtype=torch.float64, device=device)
            ).view(view)
        inside &= (coord >= -0.5) & (coord < image_shape[i] - 0.5)
    return inside


def resample_to(image: Image, reference: Geometry, *, mode: str | None = None, default: float = 0.0) -> Image:
    """Resample ``image`` onto the ``reference`` grid through physical (LPS mm) space.

    For every reference voxel v the value is read at the image voxel
    ``image.world_to_index @ reference.index_to_world @ v`` (any spacing, origin, direction, 2D/3D).
    Like ITK's ``Resample``: points whose continuous image index lies outside ``[-0.5, size - 0.5)``
    get ``default``; points inside are interpolated with edge clamping.

    Args:
        image: Image ``(C, *S_in)``.
        reference: target Geometry with the same number of dimensions.
        mode: ``"linear"`` or ``"nearest"``; None = nearest for label maps, linear otherwise.
        default: value outside the image (label maps: must be an integer; 0 = background).
    Returns:
        Image ``(C, *reference.shape)`` on ``reference``, same dtype/device and metadata.
    """
    _check_image(image, "image")
    if not isinstance(reference, Geometry):
        raise TypeError(f"reference must be a Geometry, got {type(reference).__name__}")
    if reference.ndim != image.ndim:
        raise ValueError(f"reference is {reference.ndim}D but image {image.name!r} is {image.ndim}D")
    mode = mode or ("nearest" if image.is_labels else "linear")
    if mode not in ("linear", "nearest"):
        raise ValueError(f"mode must be 'linear' or 'nearest', got {mode!r}")
    if not image.data.is_floating_point() and float(default) != round(float(default)):
        raise ValueError(f"default must be an integer for integer data (label maps), got {default!r}")
    if image.geometry.same_grid(reference, tol=1e-6):
        return image
    n, device = image.ndim, image.device
    work = torch.float64 if image.data.dtype == torch.float64 else torch.float32
    ref_to_img = image.geometry.world_to_index @ reference.index_to_world  # reference voxel -> image voxel
    corners = np.array(np.meshgrid(*[[0, s - 1] for s in reference.shape], indexing="ij")).reshape(n, -1)
    corner_idx = ref_to_img[:n, :n] @ corners + ref_to_img[:n, n:]
    needs_mask = bool(np.any(corner_idx < -0.5) or np.any(corner_idx >= np.array(image.shape)[:, None] - 0.5))
    # torch's CPU grid_sample parallelises over the batch only: sample slabs of the reference along
    # axis 0 as a batch (each slab reads the whole image through expand(), no copy).
    slabs = _slab_count(reference.shape, device)
    depth = -(-reference.shape[0] // slabs)
    padded = (slabs * depth, *reference.shape[1:])  # rows past the reference are sampled, then dropped
    shape_out = (slabs, depth, *reference.shape[1:], n)
    src = image.data[None].to(work).expand(slabs, *image.data.shape)
    if mode == "linear":
        grid = _sampling_grid(ref_to_img, image.shape, padded, 0.0, device, work).reshape(shape_out)
        out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=True)
    else:  # ITK rounds exact half-voxel ties up, torch to even: a 1e-4 voxel nudge decides them as ITK does
        grid = _sampling_grid(ref_to_img, image.shape, padded, _TIE_NUDGE, device, work).reshape(shape_out)
        out = F.grid_sample(src, grid, mode="nearest", padding_mode="border", align_corners=True)
    del grid
    out = out.movedim(0, 1).reshape(image.data.shape[0], slabs * depth, *reference.shape[1:])[
        :, : reference.shape[0]
    ]
    if needs_mask:
        inside = _inside_mask(ref_to_img, image.shape, reference.shape, device)
        out = torch.where(inside, out, torch.as_tensor(float(default), dtype=work, device=device))
    if not image.data.is_floating_point():
        out = out.round()
    return Image(
        out.to(image.data.dtype),
        reference,
        is_labels=image.is_labels,
        label_names=image.label_names,
        name=image.name,
        meta=dict(image.meta),
    )


def _statistics_mask(image: Image, foreground: bool, mask) -> torch.Tensor | None:
    """Boolean ``(C, *S)`` selection of the voxels that statistics use (None = all)."""
    if mask is None:
        return image.data != 0 if foreground else None
    m = mask.data if isinstance(mask, Image) else torch.as_tensor(mask)
    if tuple(m.shape[-image.ndim :]) != image.shape or m.ndim not in (image.ndim, image.ndim + 1):
        raise ValueError(f"mask must have spatial shape {image.shape}, got {tuple(m.shape)}")
    m = m.to(image.device).bool().reshape(-1, *image.shape)
    return m.expand_as(image.data) if m.shape[0] == 1 else m


def normalise(
    image: Image,
    method: str | NormaliseMethod = NormaliseMethod.MINMAX,
    *,
    foreground: bool = False,
    mask=None,
    percentiles: tuple[float, float] = (1.0, 99.0),
) -> Image:
    """Rescale intensities (float32 out). Label maps are refused.

    Args:
        method: ``"minmax"`` -> [0, 1]; ``"zscore"`` -> mean 0, std 1; ``"percentile"`` -> clip to
            ``percentiles`` then [0, 1].
        foreground: compute the statistics over non-zero voxels only and set the other voxels to 0
            afterwards (nnU-Net convention for skull-stripped images).
        mask: optional boolean Image/tensor of spatial shape ``S`` selecting the voxels for statistics
            (overrides ``foreground``). The transform is applied to every voxel.
        percentiles: ``(low, high)`` in [0, 100] for ``"percentile"``.
    """
    _check_image(image, "image")
    if image.is_labels:
        raise ValueError(f"cannot normalise label map {image.name!r}")
    try:
        method = NormaliseMethod(method)
    except ValueError:
        raise ValueError(
            f"method must be one of {[m.value for m in NormaliseMethod]}, got {method!r}"
        ) from None
    lo_p, hi_p = (float(p) for p in percentiles)
    if not 0.0 <= lo_p < hi_p <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    x = image.data.float()
    m = _statistics_mask(image, foreground, mask)
    values = x[m] if m is not None else x.reshape(-1)
    if values.numel() == 0:
        raise ValueError(f"no voxels selected for statistics in {image.name!r} (empty mask/foreground)")
    if method == NormaliseMethod.ZSCORE:
        mean, std = values.mean(), values.std(unbiased=False)
        out = (x - mean) / std.clamp_min(1e-8)
    else:
        if method == NormaliseMethod.MINMAX:
            lo, hi = values.min(), values.max()
        else:
            q = np.percentile(values.detach().cpu().numpy(), [lo_p, hi_p])
            lo, hi = (torch.tensor(v, dtype=x.dtype, device=x.device) for v in q)
        out = ((x.clamp(lo, hi) if method == NormaliseMethod.PERCENTILE else x) - lo) / (hi - lo).clamp_min(
            1e-8
        )
    if foreground and mask is None:
        out = out * m
    return image.with_data(out)


def crop_or_pad(image: Image, shape: tuple[int, ...], *, value: float = 0.0) -> Image:
    """Centre-crop and/or zero-pad to ``shape`` without moving anatomy in world space.

    Per axis, ``before = (old - new) // 2`` voxels are removed (negative = padded) at the low end;
    the origin moves to the world position of old index ``before`` so every kept voxel keeps its
    LPS position.
    """
    _check_image(image, "image")
    shape = tuple(int(s) for s in shape)
    if len(shape) != image.ndim or any(s < 1 for s in shape):
        raise ValueError(f"shape must be {image.ndim} positive ints, got {shape}")
    old = image.shape
    before = [(o - s) // 2 for o, s in zip(old, shape)]
    out = torch.full((image.data.shape[0], *shape), value, dtype=image.data.dtype, device=image.device)
    src, dst = [slice(None)], [slice(None)]
    for b, o, s in zip(before, old, shape):
        lo = max(b, 0)
        hi = min(b + s, o)
        src.append(slice(lo, hi))
        dst.append(slice(lo - b, hi - b))
    out[tuple(dst)] = image.data[tuple(src)]
    origin = image.geometry.index_to_world_points(np.asarray([before], dtype=float))[0]
    geometry = Geometry(shape, image.spacing, tuple(origin), image.geometry.direction)
    return Image(
        out,
        geometry,
        is_labels=image.is_labels,
        label_names=image.label_names,
        name=image.name,
        meta=dict(image.meta),
    )


def histogram_match(
    image: Image,
    reference: Image,
    *,
    levels: int = 256,
    match_points: int = 7,
    threshold_at_mean: bool = True,
) -> Image:
    """Map ``image`` intensities so its histogram matches ``reference`` (SimpleITK
    HistogramMatchingImageFilter; ``threshold_at_mean`` ignores voxels below each image's mean,
    i.e. the background). Returns float32 on the image's own grid."""
    import SimpleITK as sitk

    _check_image(image, "image")
    _check_image(reference, "reference")
    if image.is_labels or reference.is_labels:
        raise ValueError("histogram_match needs intensity images, got a label map")
    if levels < 2 or match_points < 1:
        raise ValueError(f"levels must be >= 2 and match_points >= 1, got {levels}, {match_points}")
    f = sitk.HistogramMatchingImageFilter()
    f.SetNumberOfHistogramLevels(int(levels))
    f.SetNumberOfMatchPoints(int(match_points))
    f.SetThresholdAtMeanIntensity(bool(threshold_at_mean))
    src = sitk.GetImageFromArray(image.numpy().astype(np.float32))
    ref = sitk.GetImageFromArray(reference.numpy().astype(np.float32))
    out = torch.from_numpy(sitk.GetArrayFromImage(f.Execute(src, ref)))
    return image.with_data(out[None].to(image.device))


def _world_bounds(g: Geometry) -> tuple[np.ndarray, np.ndarray]:
    corners = np.array(np.meshgrid(*[[-0.5, s - 0.5] for s in g.shape], indexing="ij")).reshape(g.ndim, -1).T
    pts = g.index_to_world_points(corners)
    return pts.min(0), pts.max(0)


def check_pair(fixed: Image, moving: Image) -> list[str]:
    """Human-readable warnings about a fixed/moving pair (empty list = nothing to report)."""
    _check_image(fixed, "fixed")
    _check_image(moving, "moving")
    if fixed.ndim != moving.ndim:
        return [f"fixed is {fixed.ndim}D and moving is {moving.ndim}D: both must be 2D or both 3D"]
    fg, mg = fixed.geometry, moving.geometry
    out = []
    if not fg.same_grid(mg):
        out.append(
            f"different voxel grids (fixed {fg.shape} @ {_mm(fg.spacing)} mm, moving {mg.shape} @ "
            f"{_mm(mg.spacing)} mm): moving will be resampled onto the fixed grid"
        )
    if fg.orientation_codes() != mg.orientation_codes():
        out.append(
            f"different orientations (fixed {fg.orientation_codes()}, moving {mg.orientation_codes()}): "
            "handled through physical space, but check the headers if the result looks flipped"
        )
    ratio = max(max(a, b) / min(a, b) for a, b in zip(_world_spacing(fg), _world_spacing(mg)))
    if ratio > 1.5:
        out.append(
            f"voxel sizes differ by {ratio:.1f}x along a world axis (fixed {_mm(fg.spacing)} mm, moving "
            f"{_mm(mg.spacing)} mm): resampling loses detail; consider registering at the coarser spacing"
        )
    (flo, fhi), (mlo, mhi) = _world_bounds(fg), _world_bounds(mg)
    overlap = np.minimum(fhi, mhi) - np.maximum(flo, mlo)
    if np.any(overlap <= 0):
        out.append(
            "the images do not overlap in physical space: check origins/headers, or start with a "
            "centre-of-mass alignment"
        )
    elif np.prod(overlap) < 0.1 * min(np.prod(fhi - flo), np.prod(mhi - mlo)):
        out.append(
            f"the images overlap in only {100 * np.prod(overlap) / min(np.prod(fhi - flo), np.prod(mhi - mlo)):.0f}"
            " % of the smaller field of view: check origins or start with a centre-of-mass alignment"
        )
    if fixed.is_labels != moving.is_labels:
        out.append("one image is a label map and the other is not")
    elif not fixed.is_labels:
        (a0, a1), (b0, b1) = _robust_range(fixed), _robust_range(moving)
        wa, wb = max(a1 - a0, 1e-12), max(b1 - b0, 1e-12)
        if max(wa, wb) / min(wa, wb) > 10 or a1 < b0 or b1 < a0:
            out.append(
                f"intensity ranges differ a lot (fixed {a0:.3g}..{a1:.3g}, moving {b0:.3g}..{b1:.3g}): "
                "normalise both, or use a multimodal similarity (MI, NMI, MIND)"
            )
    return out


def _world_spacing(g: Geometry) -> list[float]:
    """Spacing along each world (L, P, S) axis: that of the tensor axis most aligned with it."""
    out = [0.0] * g.ndim
    for axis, column in enumerate(g.direction_matrix.T):
        out[int(np.argmax(np.abs(column)))] = g.spacing[axis]
    return [s if s > 0 else min(g.spacing) for s in out]


def _mm(spacing: tuple[float, ...]) -> str:
    return "x".join(f"{s:.3g}" for s in spacing)


def _robust_range(image: Image) -> tuple[float, float]:
    x = image.data.float().reshape(-1)
    x = x[:: max(1, x.numel() // 1_000_000)].cpu().numpy()
    lo, hi = np.percentile(x, [1.0, 99.0])
    return float(lo), float(hi)
