"""Label fusion: N atlas label maps, already warped onto the target grid, -> one label map + confidence.

Every function takes ``label_maps``: N label maps ``(*S)`` on the TARGET grid (arrays, tensors or label
Images; each atlas's labels warped with nearest-neighbour interpolation) and returns a
:class:`FusionResult`: ``labels (*S)`` int64 in the original label values and ``agreement (*S)`` float32
in [0, 1], the share of the (weighted) vote, or the posterior probability, of the fused label.

* :func:`majority_vote`: each atlas one vote per voxel (SimpleITK ``LabelVotingImageFilter`` agrees on
  every voxel without a tie; ties go to the smallest label value here, to an "undecided" value there).
* :func:`staple`: SimpleITK ``MultiLabelSTAPLEImageFilter`` (Warfield 2004, Rohlfing 2004): EM estimates
  a confusion matrix per atlas; the agreement map is the posterior of the fused label computed from
  those matrices and the label priors (the same posterior the filter maximises).
* :func:`locally_weighted_vote`: per-voxel atlas weights from local intensity similarity between each
  warped atlas image and the target (Gaussian-windowed squared difference -> softmax over atlases), as
  in Sabuncu et al., "A generative model for image segmentation based on label fusion", IEEE TMI 2010
  and Artaechevarria et al. 2009; Wang et al., "Multi-atlas segmentation with joint label fusion",
  IEEE TPAMI 2013 (JLF) adds the pairwise correlation of atlas errors (``joint=True`` here).
* :func:`weighted_vote`: any per-voxel weights ``(N, *S)`` (the learned fusion uses it).

Memory: label values are compacted to ``0..K-1`` (K = labels present, as ``regcore.metrics.overlap``
does), and votes are accumulated over chunks of voxels, so memory is ``O(K * chunk + N * S)`` whatever
the label values are (a map holding label 2**40 costs what a map holding label 2 does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch

from regcore.image import Image
from regcore.metrics.overlap import as_label_array

__all__ = [
    "Fusion",
    "FusionResult",
    "compact_labels",
    "locally_weighted_vote",
    "local_similarity_weights",
    "majority_vote",
    "staple",
    "weighted_vote",
]

CHUNK_VOXELS = 1 << 20
"""Voxels per chunk when accumulating votes (memory ``K * CHUNK_VOXELS`` float32)."""


class Fusion(StrEnum):
    """The label-fusion strategies of :func:`regcore.segment.multi_atlas.segment`."""

    MAJORITY = "majority"
    STAPLE = "staple"
    WEIGHTED = "weighted"
    LEARNED = "learned"


@dataclass(frozen=True)
class FusionResult:
    """Fused segmentation on the target grid.

    Attributes:
        labels: ``(*S)`` int64, original label values.
        agreement: ``(*S)`` float32 in [0, 1]: the fused label's share of the vote (majority, weighted,
            learned) or its posterior probability (STAPLE). 1 = every atlas agrees.
        method: the fusion's name.
        weights: ``(N, *S)`` float32 per-atlas voxel weights (weighted/learned fusion), else None.
    """

    labels: np.ndarray
    agreement: np.ndarray
    method: str
    weights: np.ndarray | None = None


# -- inputs --------------------------------------------------------------------------------------
def _label_stack(label_maps: Sequence, arg: str = "label_maps") -> np.ndarray:
    if isinstance(label_maps, (np.ndarray, torch.Tensor, Image)) or not isinstance(label_maps, Sequence):
        raise TypeError(
            f"{arg} must be a list of label maps (one per atlas), got {type(label_maps).__name__}"
        )
    if len(label_maps) == 0:
        raise ValueError(f"{arg} must hold at least one atlas label map, got none")
    maps = [as_label_array(m, f"{arg}[{k}]") for k, m in enumerate(label_maps)]
    shape = maps[0].shape
    for k, m in enumerate(maps):
        if m.shape != shape:
            raise ValueError(
                f"{arg}[{k}] has shape {m.shape}, expected {shape} like {arg}[0] (the target grid)"
            )
    return np.stack(maps)


def _image_array(image, arg: str, shape: tuple[int, ...]) -> np.ndarray:
    if isinstance(image, Image):
        data = image.data[0] if image.data.ndim == len(shape) + 1 else image.data
        arr = data.detach().cpu().numpy()
    elif isinstance(image, torch.Tensor):
        arr = image.detach().cpu().numpy()
    elif isinstance(image, np.ndarray):
        arr = image
    else:
        raise TypeError(f"{arg} must be an Image, tensor or array, got {type(image).__name__}")
    while arr.ndim > len(shape) and arr.shape[0] == 1:
        arr = arr[0]
    if arr.shape != shape:
        raise ValueError(f"{arg} has shape {arr.shape}, expected {shape} (the target grid)")
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{arg} holds NaN or infinite intensities")
    return arr


def compact_labels(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(values (K,), codes)``: the sorted label values present in ``stack`` and ``stack`` recoded to
    ``0..K-1`` (int32, same shape). Memory linear in the voxels and the labels present."""
    values, codes = np.unique(stack, return_inverse=True)
    return values, codes.reshape(stack.shape).astype(np.int32)


def _vote(codes: np.ndarray, weights: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Accumulate ``weights`` (N, V) (1 when None) of ``codes`` (N, V) per label; -> (argmax code, share)."""
    n, v = codes.shape
    best = np.empty(v, dtype=np.int32)
    share = np.empty(v, dtype=np.float32)
    for start in range(0, v, CHUNK_VOXELS):
        stop = min(v, start + CHUNK_VOXELS)
        width = stop - start
        votes = np.zeros((k, width), dtype=np.float32)
        cols = np.arange(width)
        for j in range(n):  # within one atlas each (label, voxel) cell is hit once: plain fancy add
            votes[codes[j, start:stop], cols] += 1.0 if weights is None else weights[j, start:stop]
        total = votes.sum(axis=0)
        best[start:stop] = votes.argmax(axis=0)  # ties: the smallest label value
        top = votes[best[start:stop], cols]
        share[start:stop] = np.where(total > 0, top / np.maximum(total, 1e-30), 0.0)
    return best, share


# -- fusions -------------------------------------------------------------------------------------
def majority_vote(label_maps: Sequence) -> FusionResult:
    """Each atlas casts one vote per voxel; the most voted label wins (ties: the smallest label value).

    Returns labels ``(*S)`` and agreement = votes of the winner / N.
    """
    stack = _label_stack(label_maps)
    values, codes = compact_labels(stack)
    best, share = _vote(codes.reshape(len(stack), -1), None, len(values))
    shape = stack.shape[1:]
    return FusionResult(values[best].reshape(shape), share.reshape(shape), Fusion.MAJORITY.value)


def weighted_vote(label_maps: Sequence, weights, method: str = "weighted") -> FusionResult:
    """Weighted vote: atlas j adds ``weights[j, x] >= 0`` to its label at voxel x; the heaviest label wins.

    weights: ``(N, *S)`` array/tensor, non-negative and finite. Agreement = the winner's share of the
    voxel's total weight (0 where every weight is 0; the label there is the smallest value present).
    """
    stack = _label_stack(label_maps)
    w = weights.detach().cpu().numpy() if isinstance(weights, torch.Tensor) else np.asarray(weights)
    if w.shape != stack.shape:
        raise ValueError(f"weights must have shape {stack.shape} (N atlases, *S), got {w.shape}")
    w = w.astype(np.float32, copy=False)
    if not np.all(np.isfinite(w)) or (w.size and w.min() < 0):
        raise ValueError("weights must be finite and non-negative")
    values, codes = compact_labels(stack)
    n = len(stack)
    best, share = _vote(codes.reshape(n, -1), w.reshape(n, -1), len(values))
    shape = stack.shape[1:]
    return FusionResult(values[best].reshape(shape), share.reshape(shape), method, weights=w)


def staple(label_maps: Sequence, *, max_iterations: int = 50, threshold: float = 1e-5) -> FusionResult:
    """Multi-label STAPLE through SimpleITK's ``MultiLabelSTAPLEImageFilter`` on compacted labels.

    The filter estimates each atlas's confusion matrix ``theta_j[rater label, true label]`` by EM; the
    agreement is the posterior ``p(true = l | atlas labels) ~ prior(l) prod_j theta_j[d_j, l]`` of the
    fused label (priors: label frequencies over all atlases, the filter's default). Voxels the filter
    leaves undecided take the posterior's argmax.
    """
    import SimpleITK as sitk

    stack = _label_stack(label_maps)
    values, codes = compact_labels(stack)
    k, n = len(values), len(stack)
    if k == 1:
        shape = stack.shape[1:]
        return FusionResult(np.full(shape, values[0]), np.ones(shape, np.float32), Fusion.STAPLE.value)
    pixel = np.uint8 if k < 255 else (np.uint16 if k < 65535 else np.uint32)
    f = sitk.MultiLabelSTAPLEImageFilter()
    f.SetMaximumNumberOfIterations(int(max_iterations))
    f.SetTerminationUpdateThreshold(float(threshold))
    f.SetLabelForUndecidedPixels(int(k))
    fused = sitk.GetArrayFromImage(f.Execute([sitk.GetImageFromArray(c.astype(pixel)) for c in codes]))
    fused = fused.astype(np.int64).reshape(-1)
    flat = codes.reshape(n, -1)
    prior = np.bincount(flat.ravel(), minlength=k).astype(np.float64) / flat.size
    thetas = [np.asarray(f.GetConfusionMatrix(j), dtype=np.float64).reshape(k + 1, k) for j in range(n)]
    agreement = np.empty(flat.shape[1], np.float32)
    argmax = np.empty(flat.shape[1], np.int64)
    for start in range(0, flat.shape[1], CHUNK_VOXELS):
        sl = slice(start, min(flat.shape[1], start + CHUNK_VOXELS))
        logp = np.repeat(np.log(prior + 1e-300)[:, None], sl.stop - sl.start, axis=1)
        for j in range(n):
            logp += np.log(thetas[j][flat[j, sl]].T + 1e-300)
        logp -= logp.max(axis=0, keepdims=True)
        post = np.exp(logp)
        post /= post.sum(axis=0, keepdims=True)
        argmax[sl] = post.argmax(axis=0)
        chosen = np.where(fused[sl] < k, fused[sl], argmax[sl])
        fused[sl] = chosen
        agreement[sl] = post[chosen, np.arange(sl.stop - sl.start)]
    shape = stack.shape[1:]
    return FusionResult(values[fused].reshape(shape), agreement.reshape(shape), Fusion.STAPLE.value)


def _zscore(a: np.ndarray) -> np.ndarray:
    sd = float(a.std())
    return (a - float(a.mean())) / (sd if sd > 0 else 1.0)


def local_similarity_weights(
    target,
    atlas_images: Sequence,
    *,
    sigma: float = 2.0,
    beta: float = 0.5,
    joint: bool = False,
    normalise: bool = True,
) -> np.ndarray:
    """Per-voxel atlas weights ``(N, *S)`` (summing to 1 over atlases) from local intensity similarity.

    D_j(x) = Gaussian-windowed (sigma voxels) squared difference between warped atlas image j and the
    target (both z-scored when ``normalise``). ``joint=False``: ``w_j = softmax_j(-D_j / (beta * mean_j
    D_j))`` (Sabuncu 2010 style local weighting; the temperature follows the local error level, so flat
    and busy regions weight alike). ``joint=True``: Wang 2013 JLF weights ``M^-1 1 / 1^T M^-1 1`` with
    ``M_ij(x) = G_sigma * (|A_i - T| |A_j - T|) + beta * mean(M) I`` (correlated atlas errors share
    their weight), clipped at 0 and renormalised.
    """
    if not sigma > 0 or not beta > 0:
        raise ValueError(f"sigma and beta must be > 0, got sigma={sigma!r}, beta={beta!r}")
    from regcore.spatial.smooth import gaussian_smooth

    if isinstance(atlas_images, (np.ndarray, torch.Tensor, Image)) or not isinstance(atlas_images, Sequence):
        raise TypeError("atlas_images must be a list of images (one per atlas)")
    if len(atlas_images) == 0:
        raise ValueError("atlas_images must hold at least one warped atlas image, got none")
    t_arr = target.data[0] if isinstance(target, Image) else target
    shape = tuple(np.asarray(t_arr.detach().cpu() if isinstance(t_arr, torch.Tensor) else t_arr).shape)
    t = _image_array(target, "target", shape)
    imgs = [_image_array(a, f"atlas_images[{k}]", shape) for k, a in enumerate(atlas_images)]
    if normalise:
        t, imgs = _zscore(t), [_zscore(a) for a in imgs]
    diff = torch.from_numpy(np.stack([a - t for a in imgs]).astype(np.float32))  # (N, *S)

    def smooth(x: torch.Tensor) -> torch.Tensor:  # (M, *S) -> (M, *S)
        return gaussian_smooth(x[:, None].contiguous(), sigma)[:, 0]

    if not joint:
        d = smooth(diff**2)
        scale = beta * d.mean(dim=0, keepdim=True) + 1e-6
        return torch.softmax(-d / scale, dim=0).numpy()
    n = diff.shape[0]
    ad = diff.abs()
    pairs = torch.stack([ad[i] * ad[j] for i in range(n) for j in range(n)])
    m = smooth(pairs).reshape(n, n, -1).permute(2, 0, 1).double()  # (V, N, N)
    ridge = beta * m.diagonal(dim1=1, dim2=2).mean(dim=1) + 1e-6
    m = m + ridge[:, None, None] * torch.eye(n, dtype=m.dtype)
    w = torch.linalg.solve(m, torch.ones(m.shape[0], n, 1, dtype=m.dtype))[..., 0].clamp_min(0)
    w = w / w.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return w.T.reshape(n, *shape).float().numpy()


def locally_weighted_vote(
    target,
    atlas_images: Sequence,
    label_maps: Sequence,
    *,
    sigma: float = 2.0,
    beta: float = 0.5,
    joint: bool = False,
) -> FusionResult:
    """Locally weighted voting: :func:`local_similarity_weights` then :func:`weighted_vote`.

    target: ``(*S)`` image; atlas_images / label_maps: the N warped atlases on the target grid.
    """
    stack = _label_stack(label_maps)
    if len(atlas_images) != len(stack):
        raise ValueError(
            f"atlas_images and label_maps must list the same atlases, got {len(atlas_images)} and {len(stack)}"
        )
    w = local_similarity_weights(target, atlas_images, sigma=sigma, beta=beta, joint=joint)
    if w.shape != stack.shape:
        raise ValueError(f"atlas images {w.shape} and label maps {stack.shape} must share the target grid")
    return weighted_vote(list(stack), w, method=Fusion.WEIGHTED.value)
