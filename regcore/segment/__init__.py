"""Multi-atlas segmentation: register labelled atlases to a target and fuse their labels.

* :mod:`regcore.segment.fusion`: majority vote, STAPLE (SimpleITK), locally weighted voting (JLF style).
* :mod:`regcore.segment.learned_fusion`: a VoteNet-style CNN that weights each warped atlas per voxel.
* :mod:`regcore.segment.multi_atlas`: ``segment(target, atlases, method, fusion, engine)``.
* :mod:`regcore.segment.cli`: ``regcore segment``.

Imports are lazy: ``import regcore.segment`` loads nothing heavy.
"""

from __future__ import annotations

__all__ = ["Atlas", "SegmentationResult", "segment"]


def __getattr__(name: str):
    if name in __all__:
        from regcore.segment import multi_atlas

        return getattr(multi_atlas, name)
    raise AttributeError(f"module 'regcore.segment' has no attribute {name!r}")
