"""The subjects and the first template of an atlas, brought onto one grid (the first subject's)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from regcore.atlas.result import AtlasInit
from regcore.atlas.subjects import MIN_SUBJECTS, AtlasSubject
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


def check_build_arguments(subjects, method, iterations, step, init) -> None:
    """:func:`regcore.atlas.build_template`'s arguments, each refused with a one-line error naming it."""
    from regcore.methods.registry import get

    if not isinstance(subjects, Sequence) or not all(isinstance(s, AtlasSubject) for s in subjects):
        raise TypeError("subjects must be a list of regcore.atlas.AtlasSubject")
    if len(subjects) < MIN_SUBJECTS:
        raise ValueError(f"subjects: atlas building needs at least {MIN_SUBJECTS}, got {len(subjects)}")
    ndims = {s.image.ndim for s in subjects}
    if len(ndims) > 1:
        raise ValueError(
            f"subjects must be all 2D or all 3D, got {' and '.join(f'{d}D' for d in sorted(ndims))}"
        )
    if not isinstance(iterations, int) or isinstance(iterations, bool) or not 0 <= iterations <= 50:
        raise ValueError(f"iterations must be an int in 0..50, got {iterations!r}")
    if not isinstance(step, int | float) or not 0.0 < float(step) <= 1.0:
        raise ValueError(f"step must be in (0, 1], got {step!r}")
    if init not in set(AtlasInit):
        raise ValueError(f"init must be one of {[i.value for i in AtlasInit]}, got {init!r}")
    if not isinstance(method, str):
        raise TypeError(f"method must be a registry name (str), got {type(method).__name__}")
    spec = get(method)  # unknown name -> ValueError listing the known ones
    if next(iter(ndims)) not in spec.dims:
        raise ValueError(f"method {method!r} supports {spec.dims}D images, got {next(iter(ndims))}D")
