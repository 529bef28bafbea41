"""Did a registration make things worse? Messages comparing a run's metrics with the unregistered pair.

A registration can lower Dice, raise the landmark error or the surface distance, or fail in one structure while
the mean improves (a failed optimisation, a method that cannot handle the contrast, a missing affine stage). The
app states it instead of letting a worse result pass as a result.
"""

from __future__ import annotations

import math

DICE_TOLERANCE = 0.005  # mean Dice drop below which a change is noise (absolute)
TRE_TOLERANCE = 0.02  # relative rise of mean TRE below which a change is noise
HD95_TOLERANCE = 0.05  # relative rise of mean HD95 below which a change is noise
STRUCTURE_DROP = 0.05  # a structure's Dice drop (absolute) worth naming even when the mean improved
NAMED_STRUCTURES = 3  # the worst drops named in the message; the rest are counted


def _number(value) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def worse_than_before(before: dict, after: dict) -> list[str]:
    """One message per measure that got worse: mean Dice lower by more than :data:`DICE_TOLERANCE`, mean TRE
    or mean HD95 (mm) higher by more than :data:`TRE_TOLERANCE` / :data:`HD95_TOLERANCE` of its value before,
    and the structures whose Dice fell by more than :data:`STRUCTURE_DROP` (a local failure a better mean can
    hide). ``before`` / ``after`` are :func:`regcore.metrics.evaluate` dicts (keys ``dice_mean``,
    ``tre_mean_mm``, ``hd95_mean_mm``, ``dice``: structure -> Dice)."""
    out = []
    d0, d1 = _number(before.get("dice_mean")), _number(after.get("dice_mean"))
    if d0 is not None and d1 is not None and d1 < d0 - DICE_TOLERANCE:
        out.append(f"Mean Dice got worse: {d0:.3f} before registration, {d1:.3f} after.")
    t0, t1 = _number(before.get("tre_mean_mm")), _number(after.get("tre_mean_mm"))
    if t0 is not None and t1 is not None and t1 > t0 * (1 + TRE_TOLERANCE):
        out.append(
            f"Mean landmark error (TRE) got worse: {t0:.2f} mm before registration, {t1:.2f} mm after."
        )
    h0, h1 = _number(before.get("hd95_mean_mm")), _number(after.get("hd95_mean_mm"))
    if h0 is not None and h1 is not None and h1 > h0 * (1 + HD95_TOLERANCE):
        out.append(f"Mean HD95 got worse: {h0:.2f} mm before registration, {h1:.2f} mm after.")
    drops = _structure_drops(before.get("dice") or {}, after.get("dice") or {})
    if drops:
        named = ", ".join(f"{name} {a:.3f} -> {b:.3f}" for name, a, b in drops[:NAMED_STRUCTURES])
        more = f" and {len(drops) - NAMED_STRUCTURES} more" if len(drops) > NAMED_STRUCTURES else ""
        out.append(
            f"Dice fell by more than {STRUCTURE_DROP:g} in {len(drops)} structure{'s' if len(drops) > 1 else ''}: "
            f"{named}{more}."
        )
    return out


def _structure_drops(before: dict, after: dict) -> list[tuple[str, float, float]]:
    """``(name, Dice before, Dice after)`` of the structures that lost more than :data:`STRUCTURE_DROP`,
    largest drop first; structures without a finite value on both sides are skipped."""
    drops = []
    for name, value in before.items():
        a, b = _number(value), _number(after.get(name))
        if a is not None and b is not None and b < a - STRUCTURE_DROP:
            drops.append((str(name), a, b))
    return sorted(drops, key=lambda d: d[2] - d[1])
