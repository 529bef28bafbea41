"""Exact voxel-axis reorientation between an image's orientation and a network's training orientation.

A 3D network trained on volumes whose tensor axes run R, A, S sees transposed, mirrored anatomy when it
is given a volume stored L, I, A (as the OASIS files are). :func:`axis_map` finds the permutation and
flips of tensor axes that take one orientation to the other (no resampling: every voxel is kept);
:meth:`AxisMap.image` applies it to tensors ``(B, C, *S)``, and :meth:`AxisMap.field_back`,
:meth:`AxisMap.map_back` and :meth:`AxisMap.affine_back` bring what the network predicted on the
reoriented grid back to the image's own voxel grid.

Orientation codes are :meth:`regcore.image.Geometry.orientation_codes` (LPS letters, one per tensor axis:
``"LIA"`` = axis 0 increases toward Left, axis 1 toward Inferior, axis 2 toward Anterior).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_AXIS_OF = {"L": 0, "R": 0, "P": 1, "A": 1, "S": 2, "I": 2}


def _check_codes(codes: str, name: str) -> str:
    codes = str(codes).upper()
    if not codes or any(c not in _AXIS_OF for c in codes) or len({_AXIS_OF[c] for c in codes}) != len(codes):
        raise ValueError(
            f"{name} must be orientation letters, one of L/R, P/A, S/I per axis (e.g. 'RAS'), got {codes!r}"
        )
    return codes


@dataclass(frozen=True)
class AxisMap:
    """Target tensor axis ``j`` is source axis ``perm[j]``, reversed when ``flips[j]``."""

    perm: tuple[int, ...]
    flips: tuple[bool, ...]

    @property
    def is_identity(self) -> bool:
        return self.perm == tuple(range(len(self.perm))) and not any(self.flips)

    def _spatial(self, x: torch.Tensor) -> None:
        if x.ndim != len(self.perm) + 2:
            raise ValueError(
                f"expected a (B, C, *S) tensor with {len(self.perm)} spatial axes, got {tuple(x.shape)}"
            )

    def spacing(self, spacing: tuple[float, ...]) -> tuple[float, ...]:
        """Voxel spacing of the reoriented grid."""
        return tuple(float(spacing[p]) for p in self.perm)

    def image(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *S_source)`` -> ``(B, C, *S_target)`` (scalar channels: intensities, labels)."""
        self._spatial(x)
        x = x.permute(0, 1, *(2 + p for p in self.perm))
        dims = [2 + j for j, f in enumerate(self.flips) if f]
        return x.flip(dims) if dims else x

    def map_back(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`image`: scalar maps ``(B, C, *S_target)`` -> ``(B, C, *S_source)``."""
        self._spatial(x)
        dims = [2 + j for j, f in enumerate(self.flips) if f]
        x = x.flip(dims) if dims else x
        inverse = sorted(range(len(self.perm)), key=lambda j: self.perm[j])
        return x.permute(0, 1, *(2 + j for j in inverse))

    def field_back(self, u: torch.Tensor, signed: bool = True) -> torch.Tensor:
        """A displacement ``(B, n, *S_target)`` (target voxels) as ``(B, n, *S_source)`` in source voxels.

        ``signed=False`` for per-component variances (components are reordered, never negated)."""
        v = self.map_back(u)
        out = torch.empty_like(v)
        for j, (p, f) in enumerate(zip(self.perm, self.flips)):
            out[:, p] = -v[:, j] if (f and signed) else v[:, j]
        return out

    def index_matrix(self, source_shape: tuple[int, ...]) -> torch.Tensor:
        """``(n+1, n+1)`` homogeneous map source voxel index -> target voxel index."""
        n = len(self.perm)
        t = torch.zeros(n + 1, n + 1)
        t[n, n] = 1.0
        for j, (p, f) in enumerate(zip(self.perm, self.flips)):
            t[j, p] = -1.0 if f else 1.0
            t[j, n] = float(source_shape[p] - 1) if f else 0.0
        return t

    def affine_back(self, affine: torch.Tensor, source_shape: tuple[int, ...]) -> torch.Tensor:
        """A voxel affine ``(n, n+1)`` between target grids (fixed -> moving) as the same map between source grids."""
        n = len(self.perm)
        t = self.index_matrix(source_shape).to(affine)
        a = torch.eye(n + 1).to(affine)
        a[:n] = affine
        return (torch.linalg.inv(t) @ a @ t)[:n]


def axis_map(source: str, target: str) -> AxisMap:
    """The :class:`AxisMap` taking tensors in orientation ``source`` to orientation ``target`` (same length);
    computed by nibabel's ``ornt_transform``."""
    from nibabel.orientations import axcodes2ornt, ornt_transform

    source, target = _check_codes(source, "source orientation"), _check_codes(target, "target orientation")
    if len(source) != len(target) or {_AXIS_OF[c] for c in source} != {_AXIS_OF[c] for c in target}:
        raise ValueError(f"orientations {source!r} and {target!r} do not describe the same anatomical axes")
    labels = (("L", "R"), ("P", "A"), ("I", "S"))
    moves = ornt_transform(axcodes2ornt(source, labels), axcodes2ornt(target, labels))  # per source axis
    perm, flips = [0] * len(source), [False] * len(source)
    for src_axis, (dst_axis, sign) in enumerate(moves):
        perm[int(dst_axis)], flips[int(dst_axis)] = src_axis, bool(sign < 0)
    return AxisMap(tuple(perm), tuple(flips))
