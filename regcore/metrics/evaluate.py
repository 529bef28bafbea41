"""One row of the comparison table: every metric of a :class:`RegistrationResult` in a flat dict.

``evaluate(result, fixed_labels=..., moving_labels=..., fixed_landmarks=..., moving_landmarks=...)``
returns JSON-ready values (Python floats/str/lists/dicts; undefined values are ``None``, never
NaN, so ``json.dumps(..., allow_nan=False)`` works):

``method, dice_mean, dice{name: v}, hd95_mean_mm, hd95{}, assd_mean_mm, assd{}, tre_mean_mm,
tre_median_mm, tre_std_mm, tre{id: mm}, folding_percent, sdlogj, ndv_percent, jacobian_min,
ncc, mse, ssim, runtime_s, peak_memory_mb, device, warnings[]``.

Label metrics need both label maps, landmark metrics both landmark sets; otherwise those keys
are None (and ``dice`` etc. are empty dicts). ``moving_labels`` lie on the fixed grid (already
resampled) and are warped here by nearest neighbour with ``result.displacement``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from regcore.image import Image, Landmarks
from regcore.methods.base import RegistrationResult
from regcore.metrics.deformation import deformation_metrics
from regcore.metrics.intensity import mse as intensity_mse
from regcore.metrics.intensity import ncc as intensity_ncc
from regcore.metrics.intensity import ssim as intensity_ssim
from regcore.metrics.landmarks import target_registration_error
from regcore.metrics.overlap import as_label_array, label_overlap

SSIM_MAX_VOXELS = 4_000_000
"""Above this many voxels SSIM is skipped (None) to keep evaluation interactive on a CPU."""


def _clean(v: Any) -> Any:
    """Recursively turn numpy/torch scalars into Python types and NaN/inf into None."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, torch.Tensor):
        v = v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _label_tensor(labels, arg: str, geometry) -> torch.Tensor:
    if isinstance(labels, Image) and not labels.geometry.same_grid(geometry):
        raise ValueError(
            f"{arg} must lie on the fixed grid {geometry.shape} (resample it with "
            f"regcore.preprocess.resample_to first), got grid {labels.geometry.shape}"
        )
    arr = as_label_array(labels, arg, geometry.ndim, compact=True)
    if arr.shape != geometry.shape:
        raise ValueError(f"{arg} shape {arr.shape} must equal the fixed grid shape {geometry.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr))


def evaluate(
    result: RegistrationResult,
    *,
    fixed_labels=None,
    moving_labels=None,
    fixed_landmarks: Landmarks | None = None,
    moving_landmarks: Landmarks | None = None,
    label_names: Mapping[int, str] | None = None,
    warped_labels=None,
) -> dict:
    """All metrics of one registration (see module docstring for the keys and units).

    Args:
        result: what a method returned (``displacement`` ``(1, ndim, *S)`` fixed -> moving, voxels).
        fixed_labels, moving_labels: label maps on the fixed grid (Image, tensor or array).
        warped_labels: ``moving_labels`` already warped by ``result.displacement`` (nearest neighbour,
            :func:`regcore.spatial.warp.warp_labels`), when the caller has them: the warp is not redone.
        fixed_landmarks, moving_landmarks: :class:`Landmarks` in LPS mm, matched by id.
        label_names: label value -> structure name (default: from the label Images).
    """
    if not isinstance(result, RegistrationResult):
        raise TypeError(f"result must be a RegistrationResult, got {type(result).__name__}")
    geom = result.fixed.geometry
    u = result.displacement
    if not isinstance(u, torch.Tensor) or tuple(u.shape) != (1, geom.ndim, *geom.shape):
        raise ValueError(
            f"result.displacement must be (1, {geom.ndim}, *{geom.shape}), "
            f"got {tuple(u.shape) if isinstance(u, torch.Tensor) else type(u).__name__}"
        )
    out: dict[str, Any] = {
        "method": str(result.method),
        "dice_mean": None,
        "dice": {},
        "hd95_mean_mm": None,
        "hd95": {},
        "assd_mean_mm": None,
        "assd": {},
        "tre_mean_mm": None,
        "tre_median_mm": None,
        "tre_std_mm": None,
        "tre": {},
        "runtime_s": float(result.runtime_s),
        "peak_memory_mb": float(result.peak_memory_mb),
        "device": str(result.device),
        "warnings": [],
    }
    warnings: list[str] = out["warnings"]
    warnings.extend(constant_image_warnings(result.fixed, result.moving))

    # -- label overlap -----------------------------------------------------------------
    if (fixed_labels is None) != (moving_labels is None):
        warnings.append("label metrics need both fixed_labels and moving_labels; only one was given")
    elif fixed_labels is not None:
        names = label_names
        for lab in (fixed_labels, moving_labels):
            if names is None and isinstance(lab, Image) and lab.label_names:
                names = lab.label_names
        fixed_arr = _label_tensor(fixed_labels, "fixed_labels", geom)
        if warped_labels is not None:
            warped = _label_tensor(warped_labels, "warped_labels", geom).numpy()
        else:
            warped = _warp_labels(_label_tensor(moving_labels, "moving_labels", geom), u)
        ov = label_overlap(fixed_arr.numpy(), warped, spacing=geom.spacing, label_names=names)
        out.update(
            dice_mean=ov["dice_mean"],
            dice=ov["dice"],
            hd95_mean_mm=ov["hd95_mean_mm"],
            hd95=ov["hd95"],
            assd_mean_mm=ov["assd_mean_mm"],
            assd=ov["assd"],
        )
        warnings.extend(ov["warnings"])

    # -- landmarks ---------------------------------------------------------------------
    if (fixed_landmarks is None) != (moving_landmarks is None):
        warnings.append("TRE needs both fixed_landmarks and moving_landmarks; only one was given")
    elif fixed_landmarks is not None:
        tre = target_registration_error(fixed_landmarks, moving_landmarks, u, geom)
        out.update(
            tre_mean_mm=tre["mean_mm"],
            tre_median_mm=tre["median_mm"],
            tre_std_mm=tre["std_mm"],
            tre=tre["tre"],
        )
        warnings.extend(tre["warnings"])

    # -- deformation and intensity -----------------------------------------------------
    if bool(u.any()):  # no boolean copy of the field
        out.update({k: v for k, v in deformation_metrics(u).items() if k != "jacobian_max"})
    else:  # identity transform: known values, skip the full-volume Jacobian work
        out.update(folding_percent=0.0, sdlogj=0.0, ndv_percent=0.0, jacobian_min=1.0)
    out["mse"] = intensity_mse(result.fixed, result.warped)
    out["ncc"] = intensity_ncc(result.fixed, result.warped)
    out["ssim"] = (
        intensity_ssim(result.fixed, result.warped) if np.prod(geom.shape) <= SSIM_MAX_VOXELS else None
    )
    return _clean(out)


def constant_image_warnings(fixed: Image, moving: Image) -> list[str]:
    """One warning per image whose voxels all hold one value (a blank or failed export): nothing to align."""
    warnings = []
    for role, image in (("fixed", fixed), ("moving", moving)):
        low, high = torch.aminmax(image.data)
        if bool(low == high):
            warnings.append(
                f"{role} image {image.name!r} is constant (every voxel {float(low):g}): there is nothing to "
                "align, check the file"
            )
    return warnings


def _warp_labels(labels: torch.Tensor, u: torch.Tensor) -> np.ndarray:
    """Nearest-neighbour warp of a ``(*S)`` label map by ``u`` (fixed -> moving); zero field = no-op."""
    if not bool(u.any()):
        return labels.numpy()
    from regcore.spatial.warp import warp_labels

    out = warp_labels(labels[None, None].to(u.device), u.detach())
    return out[0, 0].cpu().numpy()


def evaluate_identity(
    fixed: Image,
    moving: Image,
    *,
    fixed_labels=None,
    moving_labels=None,
    fixed_landmarks: Landmarks | None = None,
    moving_landmarks: Landmarks | None = None,
    label_names: Mapping[int, str] | None = None,
    method: str = "identity",
) -> dict:
    """The same dict as :func:`evaluate` for "no registration" (zero displacement, warped = moving).

    ``moving`` must already be on the fixed grid.
    """
    for arg, img in (("fixed", fixed), ("moving", moving)):
        if not isinstance(img, Image):
            raise TypeError(f"{arg} must be a regcore Image, got {type(img).__name__}")
    if not fixed.geometry.same_grid(moving.geometry):
        raise ValueError(
            f"moving must lie on the fixed grid {fixed.shape} (resample it with "
            f"regcore.preprocess.resample_to first), got grid {moving.shape}"
        )
    # a zero field as a broadcast view of one element: no 84 MB buffer for a 1 mm brain
    zero = torch.zeros((), dtype=torch.float32, device=fixed.device).expand(1, fixed.ndim, *fixed.shape)
    result = RegistrationResult(
        method=method, fixed=fixed, moving=moving, warped=moving, displacement=zero, device=str(fixed.device)
    )
    return evaluate(
        result,
        fixed_labels=fixed_labels,
        moving_labels=moving_labels,
        fixed_landmarks=fixed_landmarks,
        moving_landmarks=moving_landmarks,
        label_names=label_names,
        warped_labels=moving_labels,  # a zero displacement warps nothing: no nearest-neighbour pass
    )
