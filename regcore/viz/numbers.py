"""Numbers for people: 2-3 significant digits, units in the column names, "–" for missing values.

The display layer only: stored metrics, CSV and JSON exports keep full-precision numbers and their
machine keys. :data:`METRIC_COLUMNS` maps the :func:`regcore.metrics.evaluate` keys to the column
titles every table (Evaluate, Register, QA report) shows.

    >>> format_number(0.912345)      # '0.912'
    >>> format_number(22.7312)       # '22.7'
    >>> format_number(None)          # '–'
    >>> format_number(8e-8)          # '< 0.001'
"""

from __future__ import annotations

import math
import numbers

MISSING = "–"
"""What a missing / undefined value shows (never "None" or "nan")."""

METRIC_COLUMNS = {
    "dice_mean": "Mean Dice",
    "hd95_mean_mm": "Mean HD95 (mm)",
    "assd_mean_mm": "Mean ASSD (mm)",
    "tre_mean_mm": "Mean TRE (mm)",
    "tre_median_mm": "Median TRE (mm)",
    "folding_percent": "Folding (% voxels)",
    "sdlogj": "SDlogJ",
    "ndv_percent": "NDV (%)",
    "jacobian_min": "Min det J",
    "ncc": "NCC",
    "mse": "MSE",
    "ssim": "SSIM",
    "runtime_s": "Runtime (s)",
    "peak_memory_mb": "Peak memory (MiB)",
    "device": "Device",
    "method": "Method",
}
"""evaluate() key -> column title shown to people (units in brackets)."""


def metric_title(key: str) -> str:
    """Column title of a metrics key (:data:`METRIC_COLUMNS`; otherwise the key with spaces, capitalised)."""
    if key in METRIC_COLUMNS:
        return METRIC_COLUMNS[key]
    text = str(key).replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def format_number(value, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits for a table cell (no exponent notation).

    None, NaN and empty -> :data:`MISSING`; ints keep all digits (thousands separated); |x| >= 10**digits
    is rounded to a whole number; 0 < |x| < 0.001 shows "< 0.001" (or "> -0.001"); text passes through.
    """
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return f"{value:,}"
    try:
        x = float(value)
    except (TypeError, ValueError):
        text = str(value)
        return text if text.strip() else MISSING
    if not math.isfinite(x):
        return MISSING
    if x == 0:
        return "0"
    if abs(x) < 1e-3:
        return "< 0.001" if x > 0 else "> -0.001"
    if abs(x) >= 10**digits:
        return f"{x:,.0f}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    text = f"{round(x, decimals):.{decimals}f}"
    return text


def format_columns(df, digits: int = 3):
    """A pandas Styler showing every cell of ``df`` through :func:`format_number` (missing cells as
    :data:`MISSING`). Complete columns stay numbers underneath, so they sort as numbers; a column with a
    missing cell becomes text, because Streamlit draws a missing cell as "None" whatever the Styler says."""
    shown = df.copy()
    for c in shown.columns:
        if shown[c].isna().any():
            shown[c] = shown[c].map(lambda v: format_number(v, digits))
    return shown.style.format(lambda v: format_number(v, digits), na_rep=MISSING)
