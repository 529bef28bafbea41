"""Two stains of one real tissue section, one of them deformed by a known transform: the ``stains`` set of the
development benchmark (``dev_sets.py``).

The section is scikit-image's ``immunohistochemistry()`` (``ihc.png``, shipped with the package: human colon tissue,
hematoxylin counterstain and DAB immunostain, 512 x 512 RGB). Colour deconvolution (``skimage.color.rgb2hed``)
separates the stains; two renderings of the same tissue then differ the way serial sections of two stains do
(the CIMA He <-> proSPC pair of the histology set):

* ``hematoxylin``: the hematoxylin and eosin channels (nuclei; the eosin channel is faint in this image);
* ``dab``: the DAB channel with 0.4 of the hematoxylin (membranes, faint nuclei),

both converted back to RGB (``hed2rgb``) and to grey, block-averaged 2x to 256 x 256 (spacing 1, TRE in px). Their
intensities correlate at 0.24. Each pair warps one rendering by a random affine (rotation up to 8 degrees, shift up
to 10 px, scaling up to 5 %) after a smooth velocity field (up to 20 px, ``regcore.data.deform.random_transform``)
and keeps the other as it is; both directions. The truth is exact: the fixed image at voxel x shows the tissue at
``x + w(x)`` of the moving one, so a fixed landmark ``q`` (80 per pair, drawn in the tissue) corresponds to
``q + w(q)``.

Seeds 0-5 are the **tune** part (regcore's affine start rule was chosen on them); seeds 6-11 the **held-out** part.
"""

from __future__ import annotations

import numpy as np
import torch

from regcore.data.deform import random_transform, sample_field
from regcore.data.pairs import Pair
from regcore.image import Image, Landmarks
from regcore.spatial.warp import warp

SEEDS = {"tune": range(0, 6), "held_out": range(6, 12)}
LANDMARKS = 80
SHRINK = 2
MARGIN = 10
"""Landmarks are drawn at least this many pixels from the border."""
DEFORMATION = dict(
    max_displacement_mm=20.0,
    smoothness_mm=24.0,
    control_spacing_mm=16.0,
    max_rotation_deg=8.0,
    max_translation_mm=10.0,
    max_scaling=0.05,
)
"""``regcore.data.deform.random_transform``'s bounds (pixels = mm here): larger than the brain samples' own."""


def _renderings() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The two stain renderings ``(256, 256)`` float32 in [0, 1] and the tissue mask (the stronger 40 % of
    hematoxylin + DAB)."""
    from skimage import color, data

    hed = color.rgb2hed(data.immunohistochemistry().astype(np.float64) / 255.0)
    h, e, d = hed[..., 0], hed[..., 1], hed[..., 2]
    zero = np.zeros_like(h)

    def grey(stack: list[np.ndarray]) -> np.ndarray:
        return color.rgb2gray(color.hed2rgb(np.stack(stack, -1)))

    def shrink(a: np.ndarray) -> np.ndarray:
        n, m = a.shape[0] // SHRINK, a.shape[1] // SHRINK
        return a[: n * SHRINK, : m * SHRINK].reshape(n, SHRINK, m, SHRINK).mean(axis=(1, 3))

    stains = {
        "hematoxylin": shrink(grey([h, e, zero])).astype(np.float32),
        "dab": shrink(grey([0.4 * h, zero, d])).astype(np.float32),
    }
    density = h + d
    tissue = shrink((density > np.percentile(density, 60)).astype(np.float64)) > 0.5
    return stains, tissue


def stain_pairs(split: str) -> list[Pair]:
    """The pairs of ``split`` (``tune`` or ``held_out``): per seed, hematoxylin -> DAB and DAB -> hematoxylin."""
    if split not in SEEDS:
        raise ValueError(f"split must be one of {tuple(SEEDS)}, got {split!r}")
    stains, tissue = _renderings()
    shape = tissue.shape
    inside = np.argwhere(tissue[MARGIN:-MARGIN, MARGIN:-MARGIN]) + MARGIN
    pairs = []
    for seed in SEEDS[split]:
        for direction, (fixed_stain, moving_stain) in enumerate(
            (("hematoxylin", "dab"), ("dab", "hematoxylin"))
        ):
            rng = np.random.default_rng(1000 * seed + direction + 7)
            transform = random_transform(2, tuple(float(n - 1) for n in shape), rng, **DEFORMATION)
            w = transform.forward_displacement(shape, (1.0, 1.0))  # fixed voxel -> voxel of the tissue shown
            source = torch.from_numpy(stains[fixed_stain])[None, None]
            fixed = warp(source, w, mode="bilinear", padding_mode="border")[0, 0]
            points = inside[rng.choice(len(inside), LANDMARKS, replace=False)].astype(np.float64)
            moved = points + sample_field(w, torch.from_numpy(points)).numpy()
            ids = [str(k) for k in range(LANDMARKS)]
            pairs.append(
                Pair(
                    name=f"IHC stains seed {seed}: {moving_stain} -> {fixed_stain}",
                    fixed=Image.from_array(fixed.numpy(), name=f"{fixed_stain} (deformed)"),
                    moving=Image.from_array(stains[moving_stain], name=moving_stain),
                    fixed_landmarks=Landmarks(points, ids),
                    moving_landmarks=Landmarks(moved, ids),
                    true_displacement=w,
                )
            )
    return pairs
