"""Plain-words glossary of the measures and symbols RegLab shows, for people who are not registration experts.

:data:`GLOSSARY` maps a term to a :class:`Term` (title, one-paragraph explanation, what a good value looks
like). :func:`help_for_column` gives the help text of a table column titled by
:func:`regcore.viz.metric_title`, so every metric in every table explains itself; the app's Glossary page
lists all terms.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Term:
    """One glossary entry: ``title`` as shown, ``meaning`` in plain words, ``good`` = what a good value is."""

    title: str
    meaning: str
    good: str = ""

    def text(self) -> str:
        """Meaning and, when given, what a good value looks like, as one paragraph."""
        return self.meaning + (f" Good: {self.good}" if self.good else "")


GLOSSARY: dict[str, Term] = {
    "registration": Term(
        "Registration",
        "Finding where each point of one image (the moving image) lies in another (the fixed image), so the two "
        "can be overlaid point by point: the same anatomy at the same place.",
    ),
    "dice": Term(
        "Dice",
        "Overlap of the same structure (e.g. the hippocampus) outlined in the fixed image and in the registered "
        "moving image: 0 = no overlap, 1 = identical outlines. The mean is taken over the structures present in "
        "both images unless all are asked for.",
        "higher; above about 0.8 for large brain structures after deformable registration.",
    ),
    "hd95": Term(
        "HD95 (95 % Hausdorff distance)",
        "How far, in millimetres, the outline of a structure in one image is from its outline in the other, "
        "ignoring the worst 5 % of points: a near-worst-case boundary error.",
        "lower; a few millimetres or less.",
    ),
    "assd": Term(
        "ASSD (average symmetric surface distance)",
        "The average distance, in millimetres, between the two outlines of a structure.",
        "lower.",
    ),
    "tre": Term(
        "TRE (target registration error)",
        "Distance, in millimetres, between a landmark marked in the fixed image and where registration puts "
        "the same landmark from the moving image. It measures accuracy at points experts identified.",
        "lower; close to how precisely people can place the landmarks (often 1-2 mm).",
    ),
    "folding": Term(
        "Folding",
        "Places where the transformation turns space inside out (det J at or below 0): anatomy folded over "
        "itself, which cannot happen in a body. Given as the percentage of voxels.",
        "0 %.",
    ),
    "det_j": Term(
        "det J (Jacobian determinant)",
        "The local change of volume made by the transformation at each point: 1 = unchanged, 0.5 = shrunk to "
        "half, 2 = doubled, 0 or below = folded. Maps show 1 in white, shrinkage in blue, growth in red and "
        "folding in green.",
        "positive everywhere, mostly near 1.",
    ),
    "sdlogj": Term(
        "SDlogJ",
        "The spread (standard deviation) of the logarithm of det J over the image: how irregular the volume "
        "changes are. A smooth, plausible deformation has a small spread.",
        "lower; below about 0.1-0.2 for brain MRI.",
    ),
    "ndv": Term(
        "NDV (non-diffeomorphic volume)",
        "The share of the volume where the transformation is not invertible, measured more finely than "
        "folding by counting each small tetrahedron/triangle of the voxel grid.",
        "0 %.",
    ),
    "ncc": Term(
        "NCC (normalised cross-correlation)",
        "How similar two images' intensities are up to brightness and contrast: 1 = identical patterns, 0 = "
        "unrelated. Only meaningful when both images have the same kind of contrast.",
        "higher, for images of the same modality.",
    ),
    "mi": Term(
        "MI (mutual information)",
        "How well the intensity of one image predicts the other's, whatever the relation: works across "
        "modalities (e.g. MR and ultrasound, T1 and T2).",
        "higher.",
    ),
    "lncc": Term(
        "LNCC (local normalised cross-correlation)",
        "NCC taken in small windows around every voxel and averaged (squared, so a locally inverted contrast "
        "counts too): robust to brightness that drifts across the image. The similarity most deformable "
        "methods use between images of one contrast.",
    ),
    "mind": Term(
        "MIND (modality independent neighbourhood descriptor)",
        "Describes each voxel by how alike the small patches around its neighbours are to each other, a pattern "
        "that stays the same when the contrast changes (T1 and T2, MR and ultrasound). Registration then "
        "compares descriptors instead of intensities. RegLab's 'auto' settings use it when the two images' "
        "intensities correlate locally under 0.4 (different contrasts), and LNCC or plain intensities otherwise.",
    ),
    "bias_field": Term(
        "Bias field (intensity non-uniformity)",
        "A smooth brightness shading across an MR image from the receiver coils: the same tissue reads 10-30 % "
        "brighter in one part of the image than in another, and the shading differs between scans. Methods that "
        "compare intensities directly (demons) mistake it for anatomy and move tissue to explain it. RegLab's "
        "demons removes it from both images first with N4 (Tustison 2010); LNCC and MIND are not misled by it.",
    ),
    "phi": Term(
        "phi (the transformation)",
        "The map from each point of the fixed image to the matching point of the moving image. RegLab stores "
        "it as a displacement u (phi(x) = x + u(x)), in voxels of the fixed image.",
    ),
    "displacement": Term(
        "Displacement field",
        "For every voxel of the fixed image, the arrow to its matching point in the moving image.",
    ),
    "diffeomorphic": Term(
        "Diffeomorphic",
        "A smooth transformation with a smooth inverse: nothing tears and nothing folds. Methods that "
        "integrate a velocity field (scaling and squaring, ODE solvers) are built to give one.",
    ),
    "runtime": Term("Runtime", "Wall-clock seconds the registration took on this machine.", "lower."),
    "peak_memory": Term(
        "Peak memory",
        "The most memory (MiB) the registration needed at once, above what the process held before it (GPU memory on a GPU).",
        "lower.",
    ),
}

_COLUMN_TERMS = {
    "Dice": "dice",
    "HD95": "hd95",
    "ASSD": "assd",
    "TRE": "tre",
    "Folding": "folding",
    "Min det J": "det_j",
    "SDlogJ": "sdlogj",
    "NDV": "ndv",
    "NCC": "ncc",
    "Runtime": "runtime",
    "Peak memory": "peak_memory",
}


def help_for_column(title: str) -> str | None:
    """Help text of a table column titled for people (``"Mean Dice (labels in both)"``, ``"Mean TRE (mm)"``),
    or None when no glossary term matches."""
    for fragment, key in _COLUMN_TERMS.items():
        if fragment in str(title):
            return GLOSSARY[key].text()
    return None
