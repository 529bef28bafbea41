"""Registration uncertainty: how far to trust a registration, voxel by voxel.

``estimate_uncertainty(pair, estimator="tta" | "ensemble" | "sampling", method=...)`` runs the
members (:mod:`.tta`, :mod:`.ensemble`, :mod:`.sampling`), summarises them (:mod:`.fields`: mean
field, variance in mm^2), propagates them to segmentation (:mod:`.labels`: label probabilities and
entropy) and, when the pair's true displacement is known, checks the calibration
(:mod:`.calibration`: Spearman correlation and reliability bins). :mod:`.export` writes the maps
(NIfTI, CSV, JSON), :mod:`.figures` draws them (plotly), :mod:`.cli` is ``regcore uncertainty``.
Displacements everywhere: ``(1, n, *S)`` voxels of the fixed grid, fixed -> moving.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Calibration": "calibration",
    "ReliabilityBin": "calibration",
    "calibrate": "calibration",
    "Estimator": "estimate",
    "UncertaintyResult": "estimate",
    "estimate_uncertainty": "estimate",
}

__all__ = [
    "Calibration",
    "Estimator",
    "ReliabilityBin",
    "UncertaintyResult",
    "calibrate",
    "estimate_uncertainty",
]


def __getattr__(name: str):
    """Names are imported on first use, so ``regcore --help`` (which imports the CLI module) stays light."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"regcore.uncertainty.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'regcore.uncertainty' has no attribute {name!r}")
