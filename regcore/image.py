"""Image = tensor + Geometry, the unit of data everywhere in regcore.

Conventions (see README "Architecture"):

* Tensor axis order is the file's voxel index order (NIfTI i, j, k as nibabel
  stores it; SimpleITK arrays are transposed on load to match). A 3D image is
  ``(C, I, J, K)``, a 2D image ``(C, I, J)``.
* World coordinates are physical millimetres in the ITK/DICOM **LPS** frame, the
  frame SimpleITK's ``TransformIndexToPhysicalPoint`` returns.
* ``Geometry.index_to_world`` is an ``(n+1, n+1)`` homogeneous matrix mapping a
  voxel index (tensor axis order) to LPS mm:  ``world = A @ index + origin`` with
  ``A = direction @ diag(spacing)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import torch


@dataclass(frozen=True)
class Geometry:
    """Voxel grid in physical space (LPS mm).

    Attributes:
        shape: spatial size per tensor axis, e.g. ``(160, 192, 224)``.
        spacing: voxel size in mm per tensor axis.
        origin: LPS position (mm) of voxel index ``(0, ..., 0)``; length ndim.
        direction: ``(ndim, ndim)`` matrix; column i is the unit LPS direction of
            tensor axis i.
    """

    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        n = len(self.shape)
        if n not in (2, 3):
            raise ValueError(f"Geometry supports 2D or 3D grids, got shape {self.shape}")
        if len(self.spacing) != n or len(self.origin) != n:
            raise ValueError(
                f"spacing {self.spacing} and origin {self.origin} must have {n} entries like shape {self.shape}"
            )
        if any(int(s) < 1 for s in self.shape):
            raise ValueError(f"shape must be positive, got {self.shape}")
        if any(not np.isfinite(s) or s <= 0 for s in self.spacing):
            raise ValueError(f"spacing must be finite and > 0 mm, got {self.spacing}")
        if any(not np.isfinite(o) for o in self.origin):
            raise ValueError(f"origin must be finite (mm), got {self.origin}")
        d = np.asarray(self.direction, dtype=float)
        if d.shape != (n, n):
            raise ValueError(f"direction must be {n}x{n}, got {d.shape}")
        if not np.all(np.isfinite(d)) or abs(np.linalg.det(d)) < 1e-6:
            raise ValueError(
                f"direction must be a finite, non-singular {n}x{n} matrix (axes not parallel), got "
                f"{d.tolist()}"
            )
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(s) for s in self.origin))
        object.__setattr__(self, "direction", tuple(tuple(float(v) for v in row) for row in d))

    # -- construction -----------------------------------------------------------------
    @classmethod
    def identity(cls, shape: tuple[int, ...], spacing: float | tuple[float, ...] = 1.0) -> Geometry:
        """Axis-aligned grid at the origin with isotropic (or given) spacing."""
        n = len(shape)
        sp = (float(spacing),) * n if np.isscalar(spacing) else tuple(spacing)
        return cls(tuple(shape), sp, (0.0,) * n, tuple(map(tuple, np.eye(n))))

    @classmethod
    def from_matrix(cls, shape: tuple[int, ...], index_to_world: np.ndarray) -> Geometry:
        """Build from an ``(n+1, n+1)`` index->LPS-mm matrix (shear is not representable)."""
        m = np.asarray(index_to_world, dtype=float)
        n = len(shape)
        if m.shape != (n + 1, n + 1):
            raise ValueError(f"index_to_world must be {(n + 1, n + 1)} for shape {shape}, got {m.shape}")
        a = m[:n, :n]
        spacing = np.linalg.norm(a, axis=0)
        if np.any(spacing <= 0):
            raise ValueError(f"index_to_world has a zero-length axis: {m}")
        return cls(tuple(shape), tuple(spacing), tuple(m[:n, n]), tuple(map(tuple, a / spacing)))

    # -- derived ----------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float)

    @property
    def index_to_world(self) -> np.ndarray:
        """``(n+1, n+1)`` homogeneous matrix: voxel index -> LPS mm."""
        n = self.ndim
        m = np.eye(n + 1)
        m[:n, :n] = self.direction_matrix @ np.diag(self.spacing)
        m[:n, n] = self.origin
        return m

    @property
    def world_to_index(self) -> np.ndarray:
        """``(n+1, n+1)`` homogeneous matrix: LPS mm -> voxel index."""
        return np.linalg.inv(self.index_to_world)

    def index_to_world_points(self, idx: np.ndarray) -> np.ndarray:
        """Map ``(N, ndim)`` voxel indices (tensor axis order) to ``(N, ndim)`` LPS mm."""
        idx = np.asarray(idx, dtype=float)
        m = self.index_to_world
        return idx @ m[:-1, :-1].T + m[:-1, -1]

    def world_to_index_points(self, pts: np.ndarray) -> np.ndarray:
        """Map ``(N, ndim)`` LPS mm points to ``(N, ndim)`` continuous voxel indices."""
        pts = np.asarray(pts, dtype=float)
        m = self.world_to_index
        return pts @ m[:-1, :-1].T + m[:-1, -1]

    @property
    def extent_mm(self) -> tuple[float, ...]:
        return tuple(s * n for s, n in zip(self.spacing, self.shape))

    def orientation_codes(self) -> str:
        """Three-letter (or two-letter in 2D) code of where each tensor axis points, LPS-based.

        E.g. ``"LPS"`` means axis 0 increases toward patient Left. Matches nibabel's
        ``aff2axcodes`` after flipping RAS<->LPS.
        """
        letters = [("L", "R"), ("P", "A"), ("S", "I")]
        out = []
        d = self.direction_matrix
        for i in range(self.ndim):
            col = d[:, i]
            k = int(np.argmax(np.abs(col)))
            out.append(letters[k][0] if col[k] > 0 else letters[k][1])
        return "".join(out)

    def same_grid(self, other: Geometry, tol: float = 1e-4) -> bool:
        """True when both describe the same voxel grid (shape and index->world map)."""
        return self.shape == other.shape and np.allclose(self.index_to_world, other.index_to_world, atol=tol)

    def with_shape(self, shape: tuple[int, ...], spacing: tuple[float, ...] | None = None) -> Geometry:
        """Same origin and direction, a new shape (and spacing)."""
        return replace(self, shape=tuple(shape), spacing=tuple(spacing) if spacing else self.spacing)


@dataclass(frozen=True, eq=False)
class Image:
    """A (multi-channel) image or label map with its geometry.

    Attributes:
        data: ``(C, *S)`` tensor; float for intensities, integer for label maps.
        geometry: the voxel grid in LPS mm; ``geometry.shape == data.shape[1:]``.
        is_labels: True for label maps (warp with nearest neighbour, never normalise).
        label_names: label value -> structure name (label maps only; 0 = background).
        name: human-readable name (e.g. file stem) for UI and reports.
    """

    data: torch.Tensor
    geometry: Geometry
    is_labels: bool = False
    label_names: Mapping[int, str] | None = None
    name: str = ""
    meta: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.data, torch.Tensor):
            raise TypeError(f"Image.data must be a torch.Tensor, got {type(self.data).__name__}")
        if self.data.ndim != self.geometry.ndim + 1:
            raise ValueError(
                f"Image.data must be (C, *S) with {self.geometry.ndim} spatial dims, got shape {tuple(self.data.shape)}"
            )
        if tuple(self.data.shape[1:]) != self.geometry.shape:
            raise ValueError(
                f"Image.data spatial shape {tuple(self.data.shape[1:])} != geometry.shape {self.geometry.shape}"
            )

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_array(
        cls,
        array: np.ndarray | torch.Tensor,
        geometry: Geometry | None = None,
        *,
        spacing: float | tuple[float, ...] = 1.0,
        is_labels: bool = False,
        label_names: Mapping[int, str] | None = None,
        name: str = "",
    ) -> Image:
        """Wrap a spatial array ``(*S)`` (no channel axis) as a single-channel Image."""
        t = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array)
        if t.ndim not in (2, 3):
            raise ValueError(f"array must be 2D or 3D (no channel axis), got shape {tuple(t.shape)}")
        if not is_labels:
            t = t.float()
        else:
            t = t.long()
        geom = geometry or Geometry.identity(tuple(t.shape), spacing)
        return cls(t[None], geom, is_labels=is_labels, label_names=label_names, name=name)

    # -- access -----------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return self.geometry.ndim

    @property
    def shape(self) -> tuple[int, ...]:
        return self.geometry.shape

    @property
    def spacing(self) -> tuple[float, ...]:
        return self.geometry.spacing

    @property
    def device(self) -> torch.device:
        return self.data.device

    def numpy(self) -> np.ndarray:
        """Spatial array ``(*S)`` of channel 0 on the CPU."""
        return self.data[0].detach().cpu().numpy()

    def batch(self) -> torch.Tensor:
        """``(1, C, *S)`` float view for networks and losses."""
        return self.data[None].float()

    def with_data(self, data: torch.Tensor, **changes) -> Image:
        """Same geometry and metadata, new ``(C, *S)`` tensor."""
        return replace(self, data=data, **changes)

    def to(self, device: torch.device | str) -> Image:
        return replace(self, data=self.data.to(device))

    def present_labels(self) -> list[int]:
        """Sorted non-zero label values present (label maps only)."""
        if not self.is_labels:
            raise ValueError(f"Image {self.name!r} is not a label map")
        return [int(v) for v in torch.unique(self.data).tolist() if v != 0]

    def __repr__(self) -> str:
        kind = "labels" if self.is_labels else "image"
        return (
            f"Image({self.name!r}, {kind}, C={self.data.shape[0]}, shape={self.shape}, "
            f"spacing={tuple(round(s, 3) for s in self.spacing)}, {self.geometry.orientation_codes()}, "
            f"{self.data.dtype}, {self.device})"
        )


@dataclass(frozen=True, eq=False)
class Landmarks:
    """Named points in physical space.

    Attributes:
        points: ``(N, ndim)`` float array of LPS mm positions (same frame as Geometry).
        ids: N identifiers; the same id in two Landmarks sets is the same anatomical point.
    """

    points: np.ndarray
    ids: tuple[str, ...]

    def __post_init__(self) -> None:
        pts = np.asarray(self.points, dtype=float)
        if pts.ndim != 2 or pts.shape[1] not in (2, 3):
            raise ValueError(f"Landmarks.points must be (N, 2) or (N, 3), got shape {pts.shape}")
        if len(self.ids) != pts.shape[0]:
            raise ValueError(f"Landmarks has {pts.shape[0]} points but {len(self.ids)} ids")
        if not np.all(np.isfinite(pts)):
            raise ValueError("Landmarks.points contains NaN or infinite values")
        object.__setattr__(self, "points", pts)
        object.__setattr__(self, "ids", tuple(str(i) for i in self.ids))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def ndim(self) -> int:
        return self.points.shape[1]

    def matched(self, other: Landmarks) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Points of self and other for ids present in both: ``(M, ndim)``, ``(M, ndim)``, ids."""
        common = [i for i in self.ids if i in set(other.ids)]
        if not common:
            raise ValueError("the two landmark sets share no ids")
        a = {i: p for i, p in zip(self.ids, self.points)}
        b = {i: p for i, p in zip(other.ids, other.points)}
        return np.array([a[i] for i in common]), np.array([b[i] for i in common]), common
