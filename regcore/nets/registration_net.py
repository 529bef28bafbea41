"""One wrapper for every learned registration model: backbone + output kind -> transform.

``RegistrationNet(arch)`` with ``arch`` a plain dict (stored in checkpoints):

* ``model``: ``"voxelmorph"`` (U-Net), ``"transmorph"`` (Swin encoder) or ``"affine"``.
* ``dims``: 2 or 3.
* ``diffeomorphic``: dense models only; the output is a stationary velocity integrated by
  scaling and squaring (``int_steps``), else it is the displacement itself.
* optional backbone kwargs under ``"net"``.

``forward(moving, fixed)`` takes ``(B, 1, *S)`` images (each size divisible by
:attr:`divisor`) and returns a dict with ``displacement`` ``(B, ndim, *S)`` in voxels,
fixed -> moving (``warped = moving o (id + u)``), plus ``velocity`` or ``affine``
``(B, n, n+1)`` (voxel space, fixed voxel -> moving voxel) when applicable.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from regcore.nets.affine_head import AffineHead
from regcore.nets.spatial_ops import affine_to_displacement, integrate_svf
from regcore.nets.swin import SwinFlowNet
from regcore.nets.unet import FlowUNet

MODEL_KINDS = ("voxelmorph", "transmorph", "affine")


def _tuples(d: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def validate_arch(arch: dict[str, Any]) -> dict[str, Any]:
    """Check and complete an architecture dict; raises ValueError naming the key."""
    if not isinstance(arch, dict):
        raise TypeError(f"arch must be a dict, got {type(arch).__name__}")
    model = arch.get("model")
    if model not in MODEL_KINDS:
        raise ValueError(f"arch['model'] must be one of {MODEL_KINDS}, got {model!r}")
    dims = arch.get("dims")
    if dims not in (2, 3):
        raise ValueError(f"arch['dims'] must be 2 or 3, got {dims!r}")
    out = {"model": model, "dims": int(dims), "diffeomorphic": bool(arch.get("diffeomorphic", False)),
           "int_steps": int(arch.get("int_steps", 7)), "net": dict(arch.get("net", {}))}
    if model == "affine" and out["diffeomorphic"]:
        raise ValueError("arch['diffeomorphic'] applies to dense models only, not 'affine'")
    return out


class RegistrationNet(nn.Module):
    """Backbone + transform head; see the module docstring for the arch dict."""

    def __init__(self, arch: dict[str, Any]):
        super().__init__()
        self.arch = validate_arch(arch)
        dims, kw = self.arch["dims"], _tuples(self.arch["net"])
        if self.arch["model"] == "voxelmorph":
            self.backbone = FlowUNet(dims, **kw)
        elif self.arch["model"] == "transmorph":
            self.backbone = SwinFlowNet(dims, **kw)
        else:
            self.backbone = AffineHead(dims, **kw)
        self.divisor = int(self.backbone.divisor)

    @property
    def dims(self) -> int:
        return self.arch["dims"]

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> dict[str, torch.Tensor]:
        """``moving``, ``fixed`` ``(B, 1, *S)`` -> ``{"displacement", "velocity"|"affine"}`` (voxels)."""
        if moving.shape != fixed.shape or moving.ndim != self.dims + 2:
            raise ValueError(f"moving {tuple(moving.shape)} and fixed {tuple(fixed.shape)} must both be "
                             f"(B, 1, *S) with {self.dims} spatial dims")
        shape = tuple(fixed.shape[2:])
        if any(s % self.divisor for s in shape):
            raise ValueError(f"spatial shape {shape} must be divisible by {self.divisor} (pad the inputs)")
        out = self.backbone(torch.cat([moving, fixed], 1))
        if self.arch["model"] == "affine":
            return {"affine": out, "displacement": affine_to_displacement(out, shape)}
        if self.arch["diffeomorphic"]:
            return {"velocity": out, "displacement": integrate_svf(out, steps=self.arch["int_steps"])}
        return {"displacement": out}
