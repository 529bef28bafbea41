"""Built-in sample data and the one pair API (app, CLI, notebooks, tests).

* :func:`sample_pair` / :func:`list_sample_datasets`: synthetic subjects with exact ground truth,
  built on first use into ``sample_data/`` (``REGLAB_SAMPLE_DIR`` overrides); :func:`ensure_samples`.
* :func:`load_folder` / :func:`load_manifest` / :func:`load_pair`: a user's own images as Pairs.
* :mod:`regcore.data.synth`: SynthMorph-style random label maps and renderings.

Names are imported lazily so ``python -m regcore.data.samples`` runs cleanly.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Pair": "pairs",
    "sample_pair": "pairs",
    "list_sample_datasets": "pairs",
    "FolderDataset": "folder",
    "load_folder": "folder",
    "load_manifest": "folder",
    "load_pair": "folder",
    "build": "samples",
    "ensure_samples": "samples",
    "sample_root": "samples",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"regcore.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'regcore.data' has no attribute {name!r}")
