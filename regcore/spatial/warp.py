"""Warp images and label maps by a voxel displacement: ``warped = moving o phi``.

``phi(x) = x + u(x)`` maps a fixed-grid voxel x to moving-image voxel coordinates
(moving already lies on the fixed grid); see :mod:`regcore.spatial.grid` for units.

Speed (CPU): without autograd (inference, label warps, the greedy classical methods),
:func:`warp` runs compiled numba kernels (:mod:`regcore.spatial.warp_kernels`) that read the
voxel displacement directly and run parallel within one volume; torch's 3D CPU
``grid_sample`` parallelises over the batch only, so a single volume would use one core.
With autograd, or when numba is unavailable, it uses ``grid_sample``: on CPU each volume is
split along tensor axis 0 into ``k`` slabs sampled as a batch of ``k`` (the moving image
broadcast with ``expand()``, no copy), with the grid built in one fused pass straight into
grid_sample's layout (``grid.displacement_to_slab_grid``); backward is slab-parallel too.
CUDA and small inputs take a plain single call. All paths agree to float32 rounding
(``tests/test_warp_kernels.py``).
"""

from __future__ import annotations

import enum
import math
import threading

import torch
import torch.nn.functional as F

from regcore.spatial import warp_kernels
from regcore.spatial.grid import displacement_to_slab_grid, slab_grid_layout

MIN_VOXELS_PER_SLAB = 1 << 16
"""Do not split below this many voxels per slab: the per-call overhead would dominate."""


MAX_SLABS_WITH_IMAGE_GRAD = 4
"""When ``moving`` requires grad, backward allocates one image-sized gradient per slab."""

_BUFFERS = threading.local()


def _grid_buffer(displacement: torch.Tensor, slabs: int, needs_autograd: bool) -> torch.Tensor | None:
    """Per-thread reusable CPU grid storage (inference only: autograd keeps the grid it sees).

    One flat tensor per thread, grown on demand and viewed to the layout needed, so calls
    with different slab counts or sizes share it instead of reallocating.
    """
    if needs_autograd or displacement.device.type != "cpu":
        return None
    layout = slab_grid_layout(tuple(displacement.shape), slabs)
    numel = math.prod(layout)
    flat = getattr(_BUFFERS, "grid", None)
    stale = flat is not None and (
        flat.dtype != displacement.dtype
        or flat.numel() < numel
        or (flat.is_inference() and not torch.is_inference_mode_enabled())
    )
    if flat is None or stale:
        flat = None  # free the old storage before allocating the new one
        _BUFFERS.grid = None
        flat = torch.empty(numel, dtype=displacement.dtype)
        _BUFFERS.grid = flat
    return flat[:numel].view(layout)


def clear_buffers() -> None:
    """Release this thread's cached grid buffer (one volume's grid, e.g. 82 MB at 160x192x224)."""
    _BUFFERS.grid = None


class Interpolation(enum.StrEnum):
    """How :func:`warp` reads the moving image between voxels."""

    BILINEAR = "bilinear"  # linear in 2D, trilinear in 3D
    NEAREST = "nearest"


class Padding(enum.StrEnum):
    """Value of samples that fall outside the moving image."""

    BORDER = "border"  # nearest edge value
    ZEROS = "zeros"
    REFLECTION = "reflection"


def _check_inputs(moving: torch.Tensor, displacement: torch.Tensor) -> None:
    for name, t in (("moving", moving), ("displacement", displacement)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if displacement.ndim not in (4, 5) or displacement.shape[1] != displacement.ndim - 2:
        raise ValueError(
            f"displacement must be (B, ndim, *S) with ndim 2 or 3, got shape {tuple(displacement.shape)}"
        )
    if not displacement.is_floating_point():
        raise TypeError(f"displacement must be floating point, got {displacement.dtype}")
    if moving.ndim != displacement.ndim or moving.shape[2:] != displacement.shape[2:]:
        raise ValueError(
            f"moving (B, C, *S) and displacement (B, ndim, *S) must share the spatial shape; "
            f"got moving {tuple(moving.shape)} and displacement {tuple(displacement.shape)}"
        )
    bm, bu = moving.shape[0], displacement.shape[0]
    if bm != bu and 1 not in (bm, bu):
        raise ValueError(f"batch sizes must match or one must be 1, got moving {bm} and displacement {bu}")
    if moving.device != displacement.device:
        raise ValueError(f"moving is on {moving.device} but displacement is on {displacement.device}")


def choose_slabs(moving: torch.Tensor, displacement: torch.Tensor) -> int:
    """Slabs per batch item for the CPU fast path: enough to keep every intra-op thread busy."""
    if moving.device.type != "cpu":
        return 1
    threads = torch.get_num_threads()
    batch = max(moving.shape[0], displacement.shape[0])
    if threads <= 1 or batch >= threads:
        return 1
    voxels = displacement[0, 0].numel()
    by_size = max(1, voxels // MIN_VOXELS_PER_SLAB)
    if torch.is_grad_enabled() and moving.requires_grad:
        threads = min(threads, MAX_SLABS_WITH_IMAGE_GRAD)  # each slab gets a full-size image gradient
    return int(max(1, min(threads, by_size, displacement.shape[2])))


def _sample_slabs(
    moving: torch.Tensor,
    displacement: torch.Tensor,
    slabs: int,
    mode: str,
    padding: str,
    buffer: torch.Tensor | None,
) -> torch.Tensor:
    """One batch item: moving ``(1, C, *S)``, displacement ``(1, n, *S)`` -> ``(1, C, *S)``."""
    grid = displacement_to_slab_grid(displacement, slabs, out=buffer)  # (k, Dk, *rest, n)
    k, dk = grid.shape[:2]
    src = moving.expand(k, *moving.shape[1:])
    out = F.grid_sample(src, grid, mode=mode, padding_mode=padding, align_corners=True)  # (k, C, Dk, *rest)
    out = out.transpose(0, 1).reshape(1, moving.shape[1], k * dk, *out.shape[3:])
    return out[:, :, : moving.shape[2]]


def _compiled_warp(
    src: torch.Tensor, disp: torch.Tensor, batch: int, mode: str, padding: str
) -> torch.Tensor | None:
    """The numba kernel path (CPU, float32/64, no autograd); None when numba is unavailable."""
    if (
        not warp_kernels.AVAILABLE
        or src.device.type != "cpu"
        or src.dtype not in (torch.float32, torch.float64)
    ):
        return None
    src, disp = src.detach().contiguous(), disp.detach().contiguous()
    out = torch.empty(batch, *src.shape[1:], dtype=src.dtype)
    threads = torch.get_num_threads()
    for b in range(batch):
        done = warp_kernels.resample(
            src[min(b, src.shape[0] - 1)].numpy(),
            disp[min(b, disp.shape[0] - 1)].numpy(),
            out[b].numpy(),
            mode,
            padding,
            threads,
        )
        if not done:
            return None
    return out


def _torch_warp(
    src: torch.Tensor,
    disp: torch.Tensor,
    batch: int,
    mode: str,
    padding: str,
    slabs: int | None,
    needs_autograd: bool,
) -> torch.Tensor:
    """grid_sample path (any device, autograd): slab-parallel on CPU, one call elsewhere."""
    k = choose_slabs(src, disp) if slabs is None else slabs
    if k == 1:
        grid = displacement_to_slab_grid(disp, 1, out=_grid_buffer(disp, 1, needs_autograd))
        if grid.shape[0] != batch:
            grid = grid.expand(batch, *grid.shape[1:])
        if src.shape[0] != batch:
            src = src.expand(batch, *src.shape[1:])
        out = F.grid_sample(src, grid, mode=mode, padding_mode=padding, align_corners=True)
    else:
        buffer = _grid_buffer(disp[:1], k, needs_autograd)
        items = [
            _sample_slabs(
                src[min(b, src.shape[0] - 1)][None],
                disp[min(b, disp.shape[0] - 1)][None],
                k,
                mode,
                padding,
                buffer,
            )
            for b in range(batch)
        ]
        out = items[0] if batch == 1 else torch.cat(items, dim=0)
    return out


def warp(
    moving: torch.Tensor,
    displacement: torch.Tensor,
    mode: str | Interpolation = "bilinear",
    padding_mode: str | Padding = "border",
    *,
    slabs: int | None = None,
) -> torch.Tensor:
    """Resample ``moving`` at ``phi(x) = x + u(x)`` for every fixed-grid voxel x.

    Args:
        moving: ``(B, C, *S)`` image on the fixed grid (2D or 3D); integer input is
            sampled as float32 and rounded back to its dtype.
        displacement: ``(B, ndim, *S)`` voxel displacement, fixed -> moving, component i
            along tensor axis i. Either batch may be 1 to broadcast against the other.
        mode: ``"bilinear"`` (linear/trilinear) or ``"nearest"``.
        padding_mode: ``"border"``, ``"zeros"`` or ``"reflection"`` outside the image.
        slabs: force the grid_sample path with this many slabs along tensor axis 0 per
            batch item (CPU speed knob); ``None`` picks the compiled kernel when no
            gradient is needed, else :func:`choose_slabs`. The output does not depend on it.
    Returns:
        ``(B, C, *S)`` warped image, ``moving``'s dtype; differentiable with respect to
        ``moving`` and ``displacement`` for float input.
    """
    _check_inputs(moving, displacement)
    try:
        mode = Interpolation(mode)
        padding = Padding(padding_mode)
    except ValueError as err:
        raise ValueError(
            f"mode must be one of {[m.value for m in Interpolation]} and padding_mode one of "
            f"{[p.value for p in Padding]}; got mode={mode!r}, padding_mode={padding_mode!r}"
        ) from err
    if slabs is not None and (not isinstance(slabs, int) or slabs < 1):
        raise ValueError(f"slabs must be None or a positive int, got {slabs!r}")

    is_float = moving.is_floating_point()
    src = moving if is_float else moving.to(torch.float32)
    disp = displacement.to(src.dtype)
    batch = max(src.shape[0], disp.shape[0])
    needs_autograd = torch.is_grad_enabled() and (src.requires_grad or disp.requires_grad)
    out = (
        _compiled_warp(src, disp, batch, mode.value, padding.value)
        if slabs is None and not needs_autograd
        else None
    )
    if out is None:
        out = _torch_warp(src, disp, batch, mode.value, padding.value, slabs, needs_autograd)
    return out if is_float else out.round().to(moving.dtype)


def warp_labels(labels: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """Warp a label map ``(B, 1, *S)`` (integer or float codes) by nearest neighbour.

    Outside the moving image the label is 0 (background). Returns ``labels``' dtype.
    """
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    # int(): a uint8 tensor compared with 2**24 would cast the bound to uint8 (0), so every map looked large
    if not labels.is_floating_point() and labels.numel() and int(labels.abs().max()) >= EXACT_FLOAT32_INT:
        # codes beyond float32's exact integers are warped as compact indices 0..K-1 and mapped back
        values, codes = torch.unique(labels, return_inverse=True)
        if values[0] != 0:  # outside the image is code 0 = background
            values, codes = torch.cat([values.new_zeros(1), values]), codes + 1
        out = warp(
            codes.to(labels.dtype), displacement, mode=Interpolation.NEAREST, padding_mode=Padding.ZEROS
        )
        return values[out.long()]
    return warp(labels, displacement, mode=Interpolation.NEAREST, padding_mode=Padding.ZEROS)


EXACT_FLOAT32_INT = 1 << 24
"""Integers up to this are exact in float32 (the sampling type of integer label warps)."""
