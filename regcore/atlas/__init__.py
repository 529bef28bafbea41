"""Atlas (template) construction: an unbiased mean image of many subjects.

* :mod:`regcore.atlas.subjects`: the subjects (:class:`AtlasSubject`) from the built-in samples,
  a folder or a glob.
* :mod:`regcore.atlas.measures`: template sharpness, majority-vote labels, subject-to-template
  distance and Dice.
* :mod:`regcore.atlas.template`: :func:`build_template`, classical groupwise template building
  (ANTs ``antsMultivariateTemplateConstruction2`` idea) with any registry method.
* :mod:`regcore.atlas.learned`: :func:`learn_template`, a template learned jointly with a small
  registration network (VoxelMorph-style), optionally conditioned on a subject attribute.
* :mod:`regcore.atlas.cli`: ``regcore atlas``.

Names are imported lazily: ``import regcore.atlas`` stays light.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "AtlasSubject": "subjects",
    "load_sample_subjects": "subjects",
    "load_subjects": "subjects",
    "sharpness": "measures",
    "majority_vote": "measures",
    "mean_distance_mm": "measures",
    "AtlasIteration": "result",
    "AtlasResult": "result",
    "build_template": "template",
    "template_shift": "template",
    "LearnedTemplateConfig": "learned",
    "LearnedTemplateResult": "learned",
    "learn_template": "learned",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"regcore.atlas.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'regcore.atlas' has no attribute {name!r}")
