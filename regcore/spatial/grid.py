"""The ONE place that converts between regcore's voxel displacements and
``torch.nn.functional.grid_sample``'s normalised coordinates.

regcore: a displacement ``u`` is ``(B, ndim, *S)``; component i is along tensor
axis i, in voxels of the fixed grid. The transform is ``phi(x) = x + u(x)``: it maps a
fixed-grid voxel x to the moving image's voxel coordinates (moving already lies on
the fixed grid), and ``warped = moving o phi``.

grid_sample (align_corners=True): a sampling grid ``(B, *S, ndim)`` whose last axis
is ordered x, y(, z) = tensor axes reversed (W, H(, D)), each in ``[-1, 1]`` where
-1 / +1 are the centres of the first / last voxel.
"""

from __future__ import annotations

import torch

from regcore.spatial.checks import check_field


def identity_grid(shape: tuple[int, ...], device=None, dtype=torch.float32) -> torch.Tensor:
    """Voxel coordinates of every grid point: ``(1, ndim, *shape)``, component i = index along axis i."""
    axes = [torch.arange(s, device=device, dtype=dtype) for s in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]


def voxel_scale(shape: tuple[int, ...], device=None, dtype=torch.float32) -> torch.Tensor:
    """Per-axis factor voxel -> normalised units (align_corners=True): ``2 / (size - 1)``; ``(ndim,)``."""
    return torch.tensor([2.0 / max(s - 1, 1) for s in shape], device=device, dtype=dtype)


def displacement_to_grid(displacement: torch.Tensor) -> torch.Tensor:
    """Voxel displacement ``(B, ndim, *S)`` -> grid_sample grid ``(B, *S, ndim)`` (xyz order, [-1, 1])."""
    ndim = check_field(displacement, "displacement")
    shape = tuple(displacement.shape[2:])
    pos = identity_grid(shape, displacement.device, displacement.dtype) + displacement
    scale = voxel_scale(shape, displacement.device, displacement.dtype).view(1, ndim, *([1] * ndim))
    norm = pos * scale - 1.0
    return norm.movedim(1, -1).flip(-1)


def grid_to_displacement(grid: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`displacement_to_grid`: ``(B, *S, ndim)`` normalised xyz -> ``(B, ndim, *S)`` voxels."""
    ndim = grid.shape[-1]
    shape = tuple(grid.shape[1:-1])
    norm = grid.flip(-1).movedim(-1, 1)
    scale = voxel_scale(shape, grid.device, grid.dtype).view(1, ndim, *([1] * ndim))
    return (norm + 1.0) / scale - identity_grid(shape, grid.device, grid.dtype)


def affine_to_normalised(matrix: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Voxel-space affine ``(B, n, n+1)`` (tensor axis order; maps fixed voxel v to moving
    voxel ``A v + t``) -> the ``theta`` that ``F.affine_grid(..., align_corners=True)`` expects.

    With ``p = S v - 1`` (S = diag(2/(size-1))):  ``p' = S A S^-1 p + (S A S^-1 1 + S t - 1)``,
    then both axes are reversed to grid_sample's xyz order.
    """
    n = len(shape)
    s = voxel_scale(shape, matrix.device, matrix.dtype)
    a = matrix[:, :, :n]
    t = matrix[:, :, n]
    a_n = s.view(1, n, 1) * a / s.view(1, 1, n)
    t_n = a_n.sum(-1) + s * t - 1.0
    theta = torch.cat([a_n, t_n.unsqueeze(-1)], dim=-1)
    return torch.cat([theta[:, :, :n].flip(-1).flip(-2), theta[:, :, n:].flip(-2)], dim=-1)


# -- fused grid construction (fast path used by warp) ------------------------------------
def _axis_base(size: int, axis: int, ndim: int, device, dtype) -> torch.Tensor:
    """Normalised identity coordinate along tensor ``axis`` as a broadcastable ``(1, *S)``-shaped view."""
    scale = 2.0 / max(size - 1, 1)
    base = torch.arange(size, device=device, dtype=dtype) * scale - 1.0
    view = [1] * (ndim + 1)
    view[axis + 1] = size
    return base.view(view)


class _SlabGrid(torch.autograd.Function):
    """Voxel displacement -> grid_sample grid, split into depth slabs, in one fused pass.

    Forward writes ``x_norm = (x + u) * s - 1`` for every component straight into a
    channel-first buffer laid out ``(B, slabs, ndim, Dk, *rest)`` (grid xyz order), so the
    returned ``(B * slabs, Dk, *rest, ndim)`` grid is a view: no identity-grid temporary,
    no movedim/flip copy. Backward is the matching per-component scale (differentiable).
    """

    @staticmethod
    def forward(ctx, displacement: torch.Tensor, slab_depth: int, out: torch.Tensor | None) -> torch.Tensor:
        b, n = displacement.shape[:2]
        shape = tuple(displacement.shape[2:])
        depth, rest = shape[0], shape[1:]
        dk = slab_depth
        slabs = -(-depth // dk)
        full, remainder = (depth // dk, depth % dk)
        dev, dt = displacement.device, displacement.dtype
        layout = (b, slabs, n, dk, *rest)
        if out is not None and (
            tuple(out.shape) == layout and out.dtype == dt and out.device == dev and out.is_contiguous()
        ):
            buf = out
        else:
            buf = torch.empty(layout, device=dev, dtype=dt)
        for comp in range(n):  # grid component comp (x, y, z) is tensor axis n-1-comp
            axis = n - 1 - comp
            scale = 2.0 / max(shape[axis] - 1, 1)
            u_axis = displacement[:, axis]
            if axis == 0:
                padded = torch.arange(slabs * dk, device=dev, dtype=dt) * scale - 1.0
                base = padded.view(1, slabs, dk, *([1] * len(rest)))
            else:
                base = _axis_base(shape[axis], axis, n, dev, dt).unsqueeze(1)
            if full:
                src = u_axis[:, : full * dk].reshape(b, full, dk, *rest)
                base_full = base[:, :full] if axis == 0 else base
                torch.add(base_full, src, alpha=scale, out=buf[:, :full, comp])
            if remainder:
                base_rem = base[:, full, :remainder] if axis == 0 else base[:, 0]
                torch.add(base_rem, u_axis[:, full * dk :], alpha=scale, out=buf[:, full, comp, :remainder])
        if remainder:
            buf[:, full, :, remainder:] = 0.0
        ctx.meta = (b, n, shape, dk, slabs)
        return buf.movedim(2, -1).reshape(b * slabs, dk, *rest, n)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        b, n, shape, dk, slabs = ctx.meta
        rest = shape[1:]
        g = grad.reshape(b, slabs * dk, *rest, n)[:, : shape[0]]
        comps = [g[..., n - 1 - axis] * (2.0 / max(shape[axis] - 1, 1)) for axis in range(n)]
        return torch.stack(comps, dim=1), None, None


def slab_grid_layout(displacement_shape: tuple[int, ...], slabs: int = 1) -> tuple[int, ...]:
    """Shape of the contiguous buffer :func:`displacement_to_slab_grid` writes into:
    ``(B, k, ndim, Dk, *S[1:])`` for a displacement of shape ``(B, ndim, *S)``."""
    b, n, depth, *rest = displacement_shape
    dk = -(-depth // min(slabs, depth))
    return (b, -(-depth // dk), n, dk, *rest)


def displacement_to_slab_grid(
    displacement: torch.Tensor, slabs: int = 1, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Voxel displacement ``(B, ndim, *S)`` -> grid_sample grid split along tensor axis 0.

    Returns ``(B * k, Dk, *S[1:], ndim)`` (xyz order, [-1, 1], align_corners=True) with
    ``Dk = ceil(S[0] / slabs)`` and ``k = ceil(S[0] / Dk)`` slabs; slab j covers fixed-grid
    rows ``j*Dk .. (j+1)*Dk - 1`` of batch item ``b`` at index ``b * k + j``. Rows past
    ``S[0]`` in the last slab are padding (value 0) and must be cropped by the caller.
    With ``slabs=1`` this equals :func:`displacement_to_grid` (to float rounding) without
    its temporaries. Differentiable with respect to ``displacement``.

    ``out``: optional reusable buffer of shape :func:`slab_grid_layout` (same dtype/device;
    ignored when it does not fit). Reusing it saves the page faults of a fresh allocation
    (tens of ms for a 3D volume on CPU); only do so when the grid is not kept by autograd.
    """
    check_field(displacement, "displacement")
    if not isinstance(slabs, int) or slabs < 1:
        raise ValueError(f"slabs must be a positive int, got {slabs!r}")
    depth = displacement.shape[2]
    slab_depth = -(-depth // min(slabs, depth))
    return _SlabGrid.apply(displacement, slab_depth, out)
