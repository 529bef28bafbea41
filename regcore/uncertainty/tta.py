"""Test-time augmentation (TTA): register altered copies of one pair and look at the spread.

Each augmentation flips both images along some tensor axes and changes their intensities a little
(the same gamma on both images, independent Gaussian noise on each). A method's answer on a flipped
pair lives in the flipped frame; :func:`unflip_displacement` maps it back exactly:

    if f' = f o F and m' = m o F with F flipping axis a (x_a -> N_a - 1 - x_a), and
    m'(x + u'(x)) = f'(x), then m(y + u(y)) = f(y) with u(y) = D u'(F(y)), D = diag(.., -1 at a, ..):

flip the field's samples along a AND negate its component a. Intensity changes leave the geometry
alone. All displacements are ``(1, n, *S)`` voxels of the fixed grid, fixed -> moving.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from regcore.image import Image
from regcore.uncertainty.members import Member, ProgressFn, register_displacement, say


@dataclass(frozen=True)
class Augmentation:
    """One test-time augmentation.

    Attributes:
        flips: tensor axes (0-based, spatial) flipped in both images.
        gamma: intensity gamma applied to both images after min-max scaling to [0, 1] (1 = none).
        noise_std: standard deviation of additive Gaussian noise, as a fraction of each image's range.
        seed: seed of the noise.
    """

    flips: tuple[int, ...] = ()
    gamma: float = 1.0
    noise_std: float = 0.0
    seed: int = 0

    @property
    def label(self) -> str:
        flip = "flip " + "".join("xyz"[a] for a in self.flips) if self.flips else "no flip"
        return f"{flip}, gamma {self.gamma:.2f}, noise {self.noise_std:.3f}"


def default_augmentations(
    ndim: int, count: int = 6, *, seed: int = 0, gamma_range: float = 0.2, noise_std: float = 0.03
) -> list[Augmentation]:
    """``count`` augmentations: the first is the identity; the rest cycle through every non-empty set of
    flipped axes, with a gamma drawn log-uniformly in ``[1/(1+gamma_range), 1+gamma_range]`` and noise."""
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim}")
    if count < 2:
        raise ValueError(f"count must be >= 2 augmentations (a variance needs two members), got {count}")
    flip_sets = [c for r in range(1, ndim + 1) for c in itertools.combinations(range(ndim), r)]
    rng = torch.Generator().manual_seed(seed)
    out = [Augmentation()]
    for k in range(1, count):
        log_gamma = (torch.rand(1, generator=rng).item() * 2 - 1) * math.log1p(gamma_range)
        out.append(
            Augmentation(flip_sets[(k - 1) % len(flip_sets)], math.exp(log_gamma), noise_std, seed + k)
        )
    return out


def flip_image(data: torch.Tensor, axes: Sequence[int]) -> torch.Tensor:
    """Flip an image ``(C, *S)`` along spatial tensor ``axes``."""
    return data.flip([1 + a for a in axes]) if axes else data


def unflip_displacement(u: torch.Tensor, axes: Sequence[int]) -> torch.Tensor:
    """Map a displacement ``(B, n, *S)`` found on images flipped along ``axes`` back to the original frame:
    flip it spatially along each axis and negate that axis's component. Its own inverse."""
    if not axes:
        return u
    n = u.shape[1]
    out = u.flip([2 + a for a in axes]).clone()
    for a in axes:
        if not 0 <= a < n:
            raise ValueError(f"flip axis {a} out of range for a {n}D displacement")
        out[:, a] = -out[:, a]
    return out


def augment_image(image: Image, aug: Augmentation, generator: torch.Generator) -> Image:
    """``image`` flipped, gamma-changed and noised by ``aug`` (same grid; intensities keep their range)."""
    x = image.data.float()
    lo, hi = float(x.min()), float(x.max())
    span = hi - lo if hi > lo else 1.0
    y = (x - lo) / span
    if aug.gamma != 1.0:
        y = y.clamp(0, 1) ** aug.gamma
    if aug.noise_std > 0:
        y = y + aug.noise_std * torch.randn(y.shape, generator=generator).to(y)
    return image.with_data(flip_image(lo + span * y, aug.flips))


def tta_samples(
    fixed: Image,
    moving: Image,
    member: Member,
    augmentations: Sequence[Augmentation],
    *,
    device: str = "auto",
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """Register every augmented copy of ``(fixed, moving)`` (moving already on the fixed grid) with
    ``member`` and map each field back: ``(K, 1, n, *S)`` voxels, fixed -> moving, in the original frame."""
    if fixed.shape != moving.shape:
        raise ValueError(f"moving shape {moving.shape} must match fixed shape {fixed.shape} (resample first)")
    fields = []
    for k, aug in enumerate(augmentations):
        say(progress, k / len(augmentations), f"TTA {k + 1}/{len(augmentations)}: {aug.label}")
        gen = torch.Generator().manual_seed(aug.seed)
        u = register_displacement(
            augment_image(fixed, aug, gen), augment_image(moving, aug, gen), member, device=device
        )
        fields.append(unflip_displacement(u, aug.flips))
    say(progress, 1.0, "TTA done")
    return torch.stack(fields)
