"""The subjects and the first template of an atlas, brought onto one grid (the first subject's)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from regcore.atlas.subjects import AtlasSubject
from regcore.image import Image

SMALL_GRID_VOXELS = 200_000
"""Below this many template voxels (2D slices, small 3D crops) ``threads=None`` runs one thread: numba's and
torch's thread pools cost more than they save on small grids, and much more on a loaded machine."""


def prepare_subjects(subjects: Sequence[AtlasSubject], normalise: bool) -> list[AtlasSubject]:
    """Channel 0, optionally percentile-normalised to [0, 1], on the first subject's grid."""
    from regcore.preprocess import normalise as normalise_image
    from regcore.register import prepare_moving

    reference = subjects[0].image
    out = []
    for s in subjects:
        image = s.image.with_data(s.image.data[:1].float())
        if normalise:
            image = normalise_image(image, "percentile")
        labels = s.labels
        if not image.geometry.same_grid(reference.geometry):
            image = prepare_moving(reference, image)
            labels = prepare_moving(reference, labels) if labels is not None else None
        out.append(dataclasses.replace(s, image=image, labels=labels))
    return out


def prepare_initial_template(image: Image, reference: Image, normalise: bool) -> Image:
    from regcore.preprocess import normalise as normalise_image
    from regcore.register import prepare_moving

    if not isinstance(image, Image) or image.is_labels:
        raise TypeError("initial_template must be an intensity Image")
    if image.ndim != reference.ndim:
        raise ValueError(f"initial_template is {image.ndim}D, the subjects {reference.ndim}D")
    image = image.with_data(image.data[:1].float())
    if normalise:
        image = normalise_image(image, "percentile")
    return Image(prepare_moving(reference, image).data, reference.geometry, name="initial template")
