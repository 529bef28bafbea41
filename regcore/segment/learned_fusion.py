"""Learned label fusion, VoteNet style: a small CNN scores, per voxel, how far to trust one warped atlas.

Ding, Han, Niethammer, "VoteNet: A Deep Learning Label Fusion Method for Multi-Atlas Segmentation",
MICCAI 2019 (reference code: uncbiag/VoteNet-Family, read, not copied). The network sees the target
image and ONE warped atlas (image, plus their difference, its local square and the atlas's label edges)
and two context channels of how that atlas compares with the others at each voxel (its local error relative
to the atlases' mean, the share of atlases that agree with its label) (:func:`vote_features`), and predicts ``p(x)`` = the probability that
the atlas's warped label at x is the target's label. Training target: 1 where the warped atlas label
equals the target label, 0 elsewhere (binary cross-entropy). Fusion: every atlas votes for its label
with weight ``p_j(x)`` (:func:`regcore.segment.fusion.weighted_vote`).

Train only on subjects other than the target (leave-one-out): :func:`train_votenet` takes
:class:`VoteExample` records made from atlas-to-atlas registrations, never from the target.
Images ``(*S)`` 2D or 3D on the target grid; intensities are z-scored per image (train and inference).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from regcore.segment.fusion import Fusion, FusionResult, _image_array, _label_stack, weighted_vote

__all__ = [
    "FEATURES",
    "LearnedFusion",
    "VoteExample",
    "VoteNet",
    "atlas_context",
    "make_examples",
    "train_votenet",
    "vote_features",
]


@dataclass(frozen=True)
class VoteExample:
    """One training pair: a subject (target) and another subject's atlas warped onto it.

    target, atlas_image: ``(*S)`` float intensities on the target grid; atlas_labels, target_labels:
    ``(*S)`` integer label maps on the same grid; context: ``(2, *S)`` from :func:`atlas_context` (how this
    atlas compares with the other atlases registered to the same target). Build them with
    :func:`make_examples`.
    """

    target: np.ndarray
    atlas_image: np.ndarray
    atlas_labels: np.ndarray
    target_labels: np.ndarray
    context: np.ndarray


def atlas_context(target, atlas_images: Sequence, label_maps: Sequence, sigma: float = 2.0) -> np.ndarray:
    """``(N, 2, *S)`` float32: per atlas, (1) its Gaussian-windowed squared difference to the target divided
    by the mean over the N atlases (< 1: locally better than the average atlas), (2) the share of the N atlases
    whose label equals this atlas's label at each voxel (the consensus it belongs to)."""
    from regcore.spatial.smooth import gaussian_smooth

    stack = _label_stack(label_maps)
    shape = stack.shape[1:]
    if len(atlas_images) != len(stack):
        raise ValueError(
            f"atlas_images and label_maps must list the same atlases, got {len(atlas_images)} and {len(stack)}"
        )
    t = _z(_image_array(target, "target", shape))
    d2 = np.stack(
        [(_z(_image_array(a, f"atlas_images[{k}]", shape)) - t) ** 2 for k, a in enumerate(atlas_images)]
    )
    ssd = gaussian_smooth(torch.from_numpy(d2.astype(np.float32))[:, None].contiguous(), sigma)[:, 0].numpy()
    ratio = ssd / (ssd.mean(axis=0, keepdims=True) + 1e-6)
    share = np.stack([(stack == stack[j]).mean(axis=0) for j in range(len(stack))])
    return np.stack([ratio, share], axis=1).astype(np.float32)


def make_examples(target, target_labels, atlas_images: Sequence, label_maps: Sequence) -> list[VoteExample]:
    """Training examples of one (pseudo-)target from the atlases registered to it (arrays ``(*S)``)."""
    stack = _label_stack(label_maps)
    truth = np.asarray(target_labels)
    if truth.shape != stack.shape[1:]:
        raise ValueError(f"target_labels has shape {truth.shape}, expected {stack.shape[1:]}")
    t = _image_array(target, "target", stack.shape[1:])
    ctx = atlas_context(t, atlas_images, list(stack))
    return [
        VoteExample(t, _image_array(a, f"atlas_images[{k}]", t.shape), stack[k], truth, ctx[k])
        for k, a in enumerate(atlas_images)
    ]


FEATURES = (
    "target",
    "atlas",
    "atlas - target",
    "local squared difference",
    "atlas label edges",
    "local squared difference / mean over atlases",
    "share of atlases with this label",
)
"""Input channels of :class:`VoteNet`, made by :func:`vote_features` (the same for training and inference)."""


def vote_features(
    target: np.ndarray, atlas_image: np.ndarray, atlas_labels: np.ndarray, context: np.ndarray
) -> np.ndarray:
    """``(7, *S)`` float32 network input: z-scored target and atlas, their difference, its Gaussian-windowed
    square (sigma 2 voxels, the cue of locally weighted voting), the atlas's label edges (1 where a face
    neighbour has another label, smoothed with sigma 1: warped labels are least reliable at boundaries) and
    the two ``context`` channels of :func:`atlas_context`."""
    from regcore.spatial.smooth import gaussian_smooth

    t, a = _z(np.asarray(target, np.float32)), _z(np.asarray(atlas_image, np.float32))
    lab = np.asarray(atlas_labels)
    edge = np.zeros(lab.shape, bool)
    for axis in range(lab.ndim):
        step = np.diff(lab, axis=axis) != 0
        lo = [slice(None)] * lab.ndim
        hi = [slice(None)] * lab.ndim
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        edge[tuple(lo)] |= step
        edge[tuple(hi)] |= step
    d = a - t
    stack = torch.from_numpy(np.stack([d * d, edge.astype(np.float32)]))[None]
    ssd = gaussian_smooth(stack[:, :1].contiguous(), 2.0)[0, 0].numpy()
    edges = gaussian_smooth(stack[:, 1:].contiguous(), 1.0)[0, 0].numpy()
    return np.concatenate([np.stack([t, a, d, ssd, edges]), np.asarray(context, np.float32)]).astype(
        np.float32
    )


class VoteNet(nn.Module):
    """Fully convolutional scorer ``(B, 7, *S) -> (B, 1, *S)`` logits of "the atlas label is right here"
    (inputs: :data:`FEATURES`).

    Dilated 3x3 convolutions (dilations 1, 2, 4, 1: receptive field 17 voxels) keep it small enough to
    train on CPU in seconds and apply to any image size.
    """

    def __init__(self, dims: int = 2, width: int = 8) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims!r}")
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive int, got {width!r}")
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.dims, self.width = dims, width
        layers: list[nn.Module] = []
        c_in = len(FEATURES)
        for dilation in (1, 2, 4, 1):
            layers += [conv(c_in, width, 3, padding=dilation, dilation=dilation), nn.LeakyReLU(0.1)]
            c_in = width
        layers.append(conv(width, 1, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features: ``(B, 7, *S)`` from :func:`vote_features` -> ``(B, 1, *S)`` logits."""
        return self.body(features)


def _z(a: np.ndarray) -> np.ndarray:
    sd = float(a.std())
    return ((a - float(a.mean())) / (sd if sd > 0 else 1.0)).astype(np.float32)


@dataclass
class LearnedFusion:
    """A trained :class:`VoteNet` and how it was trained (``history``: loss per step)."""

    net: VoteNet
    history: list[float]
    train_seconds: float
    n_examples: int

    def weights(self, target, atlas_images: Sequence, label_maps: Sequence) -> np.ndarray:
        """Per-atlas voxel scores ``(N, *S)`` in (0, 1): the predicted probability each atlas label is right."""
        stack = _label_stack(label_maps)
        shape = stack.shape[1:]
        if len(shape) != self.net.dims:
            raise ValueError(f"label maps must be {self.net.dims}D like the training data, got shape {shape}")
        if len(atlas_images) != len(stack):
            raise ValueError(
                f"atlas_images and label_maps must list the same atlases, got {len(atlas_images)} and {len(stack)}"
            )
        t = _image_array(target, "target", shape)
        images = [_image_array(a, f"atlas_images[{k}]", shape) for k, a in enumerate(atlas_images)]
        context = atlas_context(t, images, list(stack))
        device = next(self.net.parameters()).device
        out = []
        self.net.eval()
        with torch.no_grad():
            for k, (a, lab) in enumerate(zip(images, stack)):
                x = vote_features(t, a, lab, context[k])
                out.append(torch.sigmoid(self.net(torch.from_numpy(x)[None].to(device)))[0, 0].cpu().numpy())
        return np.stack(out).astype(np.float32)

    def fuse(
        self, target, atlas_images: Sequence, label_maps: Sequence, weighting: str = "odds"
    ) -> FusionResult:
        """Weighted vote of ``label_maps`` with the network's per-voxel scores p_j(x).

        weighting: ``"odds"`` (default): vote ``p / (1 - p)``, so a confident atlas outweighs several unsure
        ones (log-odds add up as evidence); ``"probability"``: vote ``p`` (VoteNet's plain weighted vote).
        """
        if weighting not in ("odds", "probability"):
            raise ValueError(f"weighting must be 'odds' or 'probability', got {weighting!r}")
        p = self.weights(target, atlas_images, label_maps)
        if weighting == "odds":
            p = np.clip(p, 1e-4, 1 - 1e-4)
            p = p / (1 - p)
        return weighted_vote(list(_label_stack(label_maps)), p, method=Fusion.LEARNED.value)


def train_votenet(
    examples: Sequence[VoteExample],
    *,
    steps: int = 300,
    batch_size: int = 4,
    crop: int = 48,
    lr: float = 3e-3,
    width: int = 8,
    seed: int = 0,
    device: str | torch.device = "cpu",
    time_limit_s: float | None = None,
    log: Callable[[int, float], None] | None = None,
    threads: int | None = 1,
) -> LearnedFusion:
    """Train a :class:`VoteNet` on ``examples`` (BCE of "warped atlas label == target label").

    Batches are ``batch_size`` random ``crop``-voxel patches (the same window for the batch) of examples of
    the same shape. ``time_limit_s`` stops early (CPU budgets). ``threads``: torch CPU threads while
    training (default 1: this net is too small to gain from more, and on a busy machine extra threads
    spin; restored afterwards; None keeps the current setting).
    """
    if not examples:
        raise ValueError("examples must hold at least one VoteExample (atlas-to-atlas registrations)")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    shapes: dict[tuple[int, ...], list[int]] = {}
    for k, e in enumerate(examples):
        if not isinstance(e, VoteExample):
            raise TypeError(f"examples[{k}] must be a VoteExample, got {type(e).__name__}")
        shape = np.shape(e.target)
        for name in ("atlas_image", "atlas_labels", "target_labels"):
            if np.shape(getattr(e, name)) != shape:
                raise ValueError(
                    f"examples[{k}].{name} has shape {np.shape(getattr(e, name))}, expected {shape}"
                )
        if np.shape(e.context) != (2, *shape):
            raise ValueError(f"examples[{k}].context has shape {np.shape(e.context)}, expected {(2, *shape)}")
        shapes.setdefault(shape, []).append(k)
    dims = len(next(iter(shapes)))
    if any(len(s) != dims for s in shapes):
        raise ValueError("examples must all be 2D or all 3D")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    device = torch.device(device)
    net = VoteNet(dims, width).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    inputs = [
        (
            vote_features(e.target, e.atlas_image, e.atlas_labels, e.context),
            (np.asarray(e.atlas_labels) == np.asarray(e.target_labels)).astype(np.float32),
            ((np.asarray(e.atlas_labels) != 0) | (np.asarray(e.target_labels) != 0)).astype(np.float32),
        )
        for e in examples
    ]
    groups = list(shapes.values())
    sizes = np.array([len(g) for g in groups], dtype=float)
    history: list[float] = []
    t0 = time.perf_counter()
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        _loop(
            net,
            opt,
            inputs,
            groups,
            sizes,
            rng,
            steps,
            batch_size,
            crop,
            device,
            history,
            t0,
            time_limit_s,
            log,
        )
    finally:
        torch.set_num_threads(old_threads)
    net.eval()
    return LearnedFusion(net, history, time.perf_counter() - t0, len(examples))


def _loop(
    net, opt, inputs, groups, sizes, rng, steps, batch_size, crop, device, history, t0, time_limit_s, log
):
    net.train()
    for step in range(steps):
        group = groups[rng.choice(len(groups), p=sizes / sizes.sum())]
        pick = rng.choice(group, size=min(batch_size, len(group)), replace=False)
        shape = inputs[pick[0]][1].shape
        lo = [int(rng.integers(0, max(1, n - crop) + 1)) for n in shape]
        box = tuple(slice(o, o + crop) for o in lo)  # random crop (the same for the batch): fast CPU steps
        x = torch.from_numpy(np.stack([inputs[i][0][(slice(None), *box)] for i in pick])).to(device)
        y = torch.from_numpy(np.stack([inputs[i][1][box] for i in pick]))[:, None].to(device)
        m = torch.from_numpy(np.stack([inputs[i][2][box] for i in pick]))[:, None].to(device)
        if rng.random() < 0.5:  # flip augmentation along the last axis
            x, y, m = x.flip(-1), y.flip(-1), m.flip(-1)
        bce = nn.functional.binary_cross_entropy_with_logits(net(x), y, reduction="none")
        loss = (bce * m).sum() / m.sum().clamp_min(1.0)  # foreground only: background is trivially right
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
        if log is not None:
            log(step, float(loss))
        if time_limit_s is not None and time.perf_counter() - t0 > time_limit_s:
            break
