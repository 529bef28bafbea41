"""Per-epoch preview panel of one validation pair: checkerboard, deformation grid, Jacobian.

Drawn with matplotlib's Agg backend into a PNG (no display needed). 3D pairs show the
central slice along axis 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def _central(x: np.ndarray) -> np.ndarray:
    return x[x.shape[0] // 2] if x.ndim == 3 else x


@torch.no_grad()
def save_preview(
    family, nets, family_config, batch: dict[str, torch.Tensor], path: str | Path, device, title: str = ""
) -> Path:
    """Predict validation pair 0 of ``batch`` with a learned family and save the three panels as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from regcore.spatial.jacobian import jacobian_determinant
    from regcore.spatial.warp import warp
    from regcore.viz import checkerboard

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
    jac = _central(jac)

    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6), dpi=80)
    axes[0].imshow(checkerboard(f, w, max(1, max(f.shape) // 8)), cmap="gray")
    axes[0].set_title("checkerboard fixed / warped")
    axes[1].imshow(f, cmap="gray", alpha=0.5)
    gy, gx = np.mgrid[0 : f.shape[0], 0 : f.shape[1]].astype(float)
    py, px = gy + disp[0], gx + disp[1]
    step = max(f.shape) // 16
    for k in range(0, f.shape[0], step):
        axes[1].plot(px[k], py[k], "r", lw=0.6)
    for k in range(0, f.shape[1], step):
        axes[1].plot(px[:, k], py[:, k], "r", lw=0.6)
    axes[1].set_xlim(0, f.shape[1] - 1)
    axes[1].set_ylim(f.shape[0] - 1, 0)
    axes[1].set_title("deformation grid")
    im = axes[2].imshow(jac, cmap="RdBu_r", vmin=0, vmax=2)
    fold = np.ma.masked_where(jac > 0, np.ones_like(jac))
    axes[2].imshow(fold, cmap="autumn", alpha=0.9)
    axes[2].set_title(f"Jacobian det. ({(jac <= 0).mean() * 100:.2f}% folding)")
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    for a in axes:
        a.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
