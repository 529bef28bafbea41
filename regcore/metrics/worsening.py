"""Did a registration make things worse? Messages comparing a run's metrics with the unregistered pair.

A registration can lower Dice or raise the landmark error (a failed optimisation, a method that cannot handle
the contrast, a missing affine stage). The app states it instead of letting a worse result pass as a result.
"""

from __future__ import annotations

import math

DICE_TOLERANCE = 0.005  # mean Dice drop below which a change is noise (absolute)
TRE_TOLERANCE = 0.02  # relative rise of mean TRE below which a change is noise


def _number(value) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def worse_than_before(before: dict, after: dict) -> list[str]:
    """One message per headline measure that got worse: mean Dice lower by more than
    :data:`DICE_TOLERANCE`, mean TRE (mm) higher by more than :data:`TRE_TOLERANCE` of its value before.
    ``before`` / ``after`` are :func:`regcore.metrics.evaluate` dicts (keys ``dice_mean``, ``tre_mean_mm``)."""
    out = []
    d0, d1 = _number(before.get("dice_mean")), _number(after.get("dice_mean"))
    if d0 is not None and d1 is not None and d1 < d0 - DICE_TOLERANCE:
        out.append(f"Mean Dice got worse: {d0:.3f} before registration, {d1:.3f} after.")
    t0, t1 = _number(before.get("tre_mean_mm")), _number(after.get("tre_mean_mm"))
    if t0 is not None and t1 is not None and t1 > t0 * (1 + TRE_TOLERANCE):
        out.append(
            f"Mean landmark error (TRE) got worse: {t0:.2f} mm before registration, {t1:.2f} mm after."
        )
    return out
