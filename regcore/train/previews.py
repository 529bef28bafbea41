"""Per-epoch preview panel of one validation pair: checkerboard, deformation grid, Jacobian.

Drawn with matplotlib's Agg backend into a PNG (no display needed), in the display orientation of
:mod:`regcore.viz` (axis 0 horizontal, axis 1 vertical, ``flips`` from the pair's orientation). 3D
pairs show the central slice along axis 0.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch


def _central(x: np.ndarray) -> np.ndarray:
    return x[x.shape[0] // 2] if x.ndim == 3 else x


@torch.no_grad()
def save_preview(
    family,
    nets,
    family_config,
    batch: dict[str, torch.Tensor],
    path: str | Path,
    device,
    title: str = "",
    flips: tuple[bool, bool] = (False, False),
) -> Path:
    """Predict validation pair 0 of ``batch`` with a learned family and save the three panels as PNG.

    Drawn like every regcore.viz panel: tensor axis 0 to the right, axis 1 up, then ``flips``
    (``regcore.viz.display_flips`` of the pair's orientation) reverse x / y.
    """
    from regcore.spatial.jacobian import jacobian_determinant
    from regcore.spatial.warp import warp

    was_training = nets.training
    nets.eval()
    moving, fixed = batch["moving"][:1].to(device), batch["fixed"][:1].to(device)
    u = family.predict(nets, moving, fixed, family_config).displacement.float()
    warped = warp(moving, u)
    jac = jacobian_determinant(u)[0].cpu().numpy()
    if was_training:
        nets.train()
    f, w = _central(fixed[0, 0].cpu().numpy()), _central(warped[0, 0].cpu().numpy())
    disp = u[0].cpu().numpy()
    if disp.shape[0] == 3:
        disp = disp[1:, disp.shape[1] // 2]
    fig = preview_figure(f, w, disp, _central(jac), flips, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the Train page polls the folder: write beside it, then rename, so it never shows half a PNG
    partial = path.with_name(f".{path.name}.partial")
    fig.savefig(partial, format="png")
    os.replace(partial, path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def preview_figure(
    fixed: np.ndarray, warped: np.ndarray, disp: np.ndarray, jac: np.ndarray, flips=(False, False), title=""
):
    """The three panels as a matplotlib Figure: checkerboard, deformation grid, Jacobian determinant.

    ``fixed``, ``warped``, ``jac``: ``(H, W)`` slices; ``disp``: ``(2, H, W)`` in voxels (fixed -> moving).
    Axis 0 is drawn to the right and axis 1 up, ``flips`` reverse them (as ``regcore.viz`` panels do).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from regcore.viz import checkerboard

    f, w = fixed, warped
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6), dpi=80)
    # regcore.viz convention: tensor axis 0 horizontal (x = i), axis 1 vertical (y = j, up), then flips
    show = {"origin": "lower", "interpolation": "nearest"}
    axes[0].imshow(checkerboard(f, w, max(1, max(f.shape) // 8)).T, cmap="gray", **show)
    axes[0].set_title("checkerboard fixed / warped")
    axes[1].imshow(f.T, cmap="gray", alpha=0.5, **show)
    gi, gj = np.mgrid[0 : f.shape[0], 0 : f.shape[1]].astype(float)
    px, py = gi + disp[0], gj + disp[1]
    step = max(1, max(f.shape) // 16)
    for k in range(0, f.shape[0], step):
        axes[1].plot(px[k], py[k], "r", lw=0.6)
    for k in range(0, f.shape[1], step):
        axes[1].plot(px[:, k], py[:, k], "r", lw=0.6)
    axes[1].set_title("deformation grid")
    im = axes[2].imshow(jac.T, cmap="RdBu_r", vmin=0, vmax=2, **show)
    fold = np.ma.masked_where(jac > 0, np.ones_like(jac))
    axes[2].imshow(fold.T, cmap="autumn", alpha=0.9, **show)
    axes[2].set_title(f"Jacobian det. ({(jac <= 0).mean() * 100:.2f}% folding)")
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    x_range, y_range = (-0.5, f.shape[0] - 0.5), (-0.5, f.shape[1] - 0.5)
    for a in axes:
        a.set_xlim(x_range[::-1] if flips[0] else x_range)
        a.set_ylim(y_range[::-1] if flips[1] else y_range)
    for a in axes:
        a.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.92) if title else None)  # the title above the panel titles
    return fig
