"""The default deformable method for a given pair of images (the Register page's starting choice).

``DEFAULT_DEFORMABLE`` (:mod:`regcore.methods.registry`) names it per dimension: demons in 2D, fireants in 3D.
Between two different contrasts in 3D, fireants' LNCC followed the wrong structures: below no registration on
the spine (T1w -> T2w, T2w -> T2*: cord Dice 0.592 against 0.613) and on MR -> TRUS prostate (gland Dice 0.612
against 0.620), where demons, which compares MIND-SSC descriptors between contrasts, reached 0.774 and 0.646
(``benchmarks/results/dev_benchmark_spine_prostate.md``, 2026-12-04 13:36; 0.806 and 0.651 at 15:56, once demons
took no force from outside the moving image). fireants' ``similarity="auto"`` (MIND-SSC descriptors between
contrasts, 2026-12-05) lifted it to 0.766 and 0.623, and 0.777 and 0.623 with the descriptors at 1 mm, still below
demons (``results/fireants_similarity_auto.md``, ``results/dev_benchmark_spine_prostate.md``). So
for such a 3D pair the default is demons, and the contrast test is the one demons uses (:mod:`regcore.methods.classical.contrast`):
intensities correlating locally below 0.4. In 2D demons is the default already and chooses its features
itself. Those sets were measured, not tuned on, before this rule; it was set after seeing them.
"""

from __future__ import annotations

from dataclasses import dataclass

from regcore.image import Image
from regcore.methods.registry import DEFAULT_DEFORMABLE

BETWEEN_CONTRASTS_3D = "demons"
"""The 3D default when the two images' contrasts differ."""


@dataclass(frozen=True)
class DefaultChoice:
    """``method``: the registry name; ``correlation``: the contrast test's r (in 2D too: demons' ``auto``
    features follow it, and the Register page says which);
    ``reason``: one sentence for the user when the choice differs from the dimension's default, else ""."""

    method: str
    correlation: float
    reason: str = ""


def default_deformable(fixed: Image, moving: Image) -> DefaultChoice:
    """The default deformable method for registering ``moving`` to ``fixed`` (any grids; the moving image is
    resampled onto the fixed grid for the contrast test, its first channel compared)."""
    from regcore.methods.classical.contrast import MIND_BELOW, contrast_correlation, contrasts_differ
    from regcore.register import prepare_moving

    on_fixed = prepare_moving(fixed, moving)
    r = contrast_correlation(fixed.batch()[:, :1].float(), on_fixed.batch()[:, :1].float(), fixed.spacing)
    if fixed.ndim != 3 or not contrasts_differ(r):
        return DefaultChoice(DEFAULT_DEFORMABLE[fixed.ndim], r)
    return DefaultChoice(
        BETWEEN_CONTRASTS_3D,
        r,
        f"the two images' contrasts differ (their intensities correlate locally at r = {r:.2f}, under "
        f"{MIND_BELOW}): demons compares MIND descriptors there and beat {DEFAULT_DEFORMABLE[3]} on the spine and "
        "prostate benchmarks",
    )
