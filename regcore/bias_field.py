"""MR intensity bias (coil shading): N4's estimate of the smooth multiplicative field, and the image without it.

MR images are often brighter in one part than in another, and the shading differs between scans. Methods that
compare intensities directly (demons) take it for anatomy; demons removes it first with :func:`correct_bias`, and
the Data page shows :func:`bias_field`. N4: Tustison et al., "N4ITK: improved N3 bias correction", IEEE TMI 2010,
through SimpleITK's ``N4BiasFieldCorrectionImageFilter``.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np
import torch

from regcore.image import Image

__all__ = ["correct_bias", "bias_field", "bias_field_range"]


BIAS_MASK_FRACTION = 0.1
""":func:`bias_field` fits the field on voxels above this fraction of the image's 99th percentile (the object)."""
BIAS_COARSE_VOXELS = 32
""":func:`bias_field` shrinks the image by up to 4 for the fit, every axis it shrinks keeping this many voxels."""
BIAS_MEMO_BYTES = 128 * 2**20
""":func:`bias_field` keeps its latest fields up to this many bytes, keyed by the image's content."""
_bias_memo: OrderedDict[tuple, torch.Tensor] = OrderedDict()
_bias_memo_lock = threading.Lock()


def correct_bias(image: Image, *, iterations: tuple[int, ...] = (50, 50, 50)) -> Image:
    """``image`` divided by its N4 bias field (Tustison et al., "N4ITK: improved N3 bias correction", IEEE TMI
    2010; SimpleITK's N4BiasFieldCorrectionImageFilter): the smooth multiplicative intensity non-uniformity
    (MR coil shading) is removed, the anatomy's contrast kept. float32 on the image's grid, every channel
    corrected alone.

    The field is a B-spline fitted on a copy shrunk by up to 4
    (:data:`BIAS_COARSE_VOXELS`), on the voxels above :data:`BIAS_MASK_FRACTION` of the 99th percentile, and
    evaluated at full resolution, scaled to a mean log of 0 over those voxels (the object keeps its overall
    intensity). One fitting level per entry of ``iterations`` (level k: 2**(k-1) spans per axis): three by
    default, as coil shading is smoother than anatomy. With N4's usual four (8 spans) the field also took up
    anatomy: on bias-corrected OASIS slices (benchmarks/dev_benchmark.py, tune positions) demons' Dice moved by
    0.009 per pair against 0.003 with three, while on the biased sample pairs both removed the shading.
    Axes one voxel long are left out of the fit (a single slice is corrected as a 2D image; a line is returned
    as it was). Intensities must be non-negative (a log-domain model of MR; CT in HU has no multiplicative bias).
    The field is :func:`bias_field`'s, so an image met again is corrected without a new fit.
    """
    field = bias_field(image, iterations=iterations)
    data = image.data.detach().cpu().float()
    return image.with_data((data / field.data).to(image.device))


def bias_field(image: Image, *, iterations: tuple[int, ...] = (50, 50, 50)) -> Image:
    """The multiplicative field N4 finds in ``image`` (``(C, *S)`` float32 on the CPU, same grid; mean log 0 over the
    object, 1 where nothing was fitted): :func:`correct_bias` divides by it. Same checks and settings as there.

    The latest fields are kept by content (:data:`BIAS_MEMO_BYTES`), so an image met again (the same target for
    every atlas, every subject in each atlas-building pass) costs no new fit (N4 takes ~0.1 s even on a small image).
    """
    if not isinstance(image, Image):
        raise TypeError(f"image must be a regcore Image, got {type(image).__name__}")
    if image.is_labels:
        raise ValueError(f"N4 bias correction needs an intensity image, got the label map {image.name!r}")
    if not iterations or any(int(n) < 1 for n in iterations):
        raise ValueError(f"iterations must be one count >= 1 per fitting level, got {iterations!r}")
    data = image.data.detach().cpu().float()
    if float(data.min()) < 0:
        raise ValueError(
            f"N4 bias correction needs non-negative intensities (MR), but {image.name!r} reaches {float(data.min()):g}"
        )
    key = (
        hashlib.blake2b(data.numpy().tobytes(), digest_size=16).digest(),
        tuple(data.shape),
        tuple(float(s) for s in image.spacing),
        tuple(int(n) for n in iterations),
    )
    with _bias_memo_lock:
        field = _bias_memo.get(key)
        if field is not None:
            _bias_memo.move_to_end(key)
    if field is None:
        field = _fields(data, image.spacing, iterations)
        with _bias_memo_lock:
            _bias_memo[key] = field
            while sum(t.numel() * t.element_size() for t in _bias_memo.values()) > BIAS_MEMO_BYTES:
                _bias_memo.popitem(last=False)
    return Image(
        field.clone(), image.geometry, name=f"bias field of {image.name}" if image.name else "bias field"
    )


def bias_field_range(image: Image, field: Image) -> tuple[float, float]:
    """The 1st and 99th percentiles of ``field`` (:func:`bias_field` of ``image``, first channel) over the object
    N4 fitted on: how much darker and brighter than its mean the shading makes one tissue, e.g. (0.86, 1.15)."""
    values, shading = image.data[0].detach().cpu().float().numpy(), field.data[0].numpy()
    object_mask = _object_mask(values)
    if not object_mask.any():
        return 1.0, 1.0
    low, high = np.percentile(shading[object_mask], [1, 99])
    return float(low), float(high)


def _fields(data: torch.Tensor, spacing: tuple[float, ...], iterations: tuple[int, ...]) -> torch.Tensor:
    """:func:`bias_field` of a CPU float32 ``(C, *S)`` tensor with ``spacing`` mm per axis; a new tensor."""
    kept = [axis for axis, n in enumerate(data.shape[1:]) if n > 1]  # N4 cannot fit along a 1-voxel axis
    shape, kept_spacing = [data.shape[1 + a] for a in kept], [float(spacing[a]) for a in kept]
    fields = []
    for channel in data.numpy():
        values = channel.reshape(shape)
        object_mask = _object_mask(values)
        if len(kept) < 2 or not object_mask.any():  # a line, or nothing to fit on: no field
            fields.append(torch.ones(channel.shape))
            continue
        log_field = _n4_log_field(values, object_mask, kept_spacing, iterations)
        log_field -= log_field[object_mask].mean()  # N4's field has an arbitrary scale: keep the object's
        fields.append(torch.from_numpy(np.exp(log_field).astype(np.float32).reshape(channel.shape)))
    return torch.stack(fields)


def _object_mask(values: np.ndarray) -> np.ndarray:
    """The voxels N4 fits on: above :data:`BIAS_MASK_FRACTION` of the image's 99th percentile."""
    return values > BIAS_MASK_FRACTION * float(np.percentile(values, 99))


def _bias_shrink(shape: tuple[int, ...]) -> list[int]:
    """Per-axis factors by which :func:`bias_field` shrinks an array of ``shape`` for N4's fit: one factor of up to 4
    that keeps :data:`BIAS_COARSE_VOXELS` voxels on every axis long enough to shrink at all; a thick-slice axis too
    short for that (44 slices of 5 mm) is kept whole instead of holding the in-plane axes at full size."""
    room = [n // BIAS_COARSE_VOXELS for n in shape]
    common = min([min(4, r) for r in room if r >= 2], default=1)
    return [min(common, max(1, r)) for r in room]


def _n4_log_field(
    values: np.ndarray, object_mask: np.ndarray, spacing: list[float], iterations: tuple[int, ...]
) -> np.ndarray:
    """N4's log bias field (float32, ``values``' shape, 2D or 3D array with ``spacing`` mm per array axis), fitted
    on ``object_mask`` on a copy shrunk by :func:`_bias_shrink`, evaluated at full resolution."""
    import SimpleITK as sitk

    full = sitk.GetImageFromArray(values)
    full.SetSpacing(list(reversed(spacing)))  # SimpleITK's x is the array's last axis
    mask = sitk.GetImageFromArray(object_mask.astype(np.uint8))
    mask.CopyInformation(full)
    shrink = list(reversed(_bias_shrink(values.shape)))  # SimpleITK's axis order
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([int(n) for n in iterations])
    n4.SetNumberOfThreads(max(1, torch.get_num_threads()))
    n4.Execute(sitk.Shrink(full, shrink), sitk.Shrink(mask, shrink))
    return sitk.GetArrayFromImage(n4.GetLogBiasFieldAsImage(full))
