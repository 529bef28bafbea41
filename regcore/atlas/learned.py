"""A learned (optionally conditional) template, VoxelMorph-style (Dalca et al., NeurIPS 2019).

A template tensor ``T`` and a small registration network are optimised together: for a subject ``S``
the network reads ``(T, S)`` and predicts a stationary velocity ``v``; ``u = exp(v)`` (scaling and
squaring) maps subject voxels to template voxels, and the loss asks the deformed template to look like
the subject,

    loss = MSE(S, T o (id + u)) / sigma^2 + smooth * diffusion(u) + centre * |mean_batch u|^2 + sharp * |grad T|^2,

where the centrality term keeps the template in the middle of the group (no subject is favoured:
the learned analogue of the classical shift by the mean displacement) and the last term keeps the
template free of noise. With an attribute (``AtlasSubject.attributes[name]``, e.g. a simulated age),
the template is conditional, ``T(a) = T_0 + a' T_1`` with ``a'`` the z-scored attribute (the simplest
of the conditional template decoders), and the network is FiLM-conditioned on ``a'`` too.

After training the template is measured like the classical ones (:mod:`regcore.atlas.measures`): each
subject is warped into template space through ``exp(-v)``; sharpness, mean distance and the Dice of
the warped labels vs their majority vote. CPU-friendly at 2D sample sizes (a few hundred steps).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from regcore.atlas.measures import agreement_dice, majority_vote, mean_distance_mm, sharpness
from regcore.atlas.subjects import MIN_SUBJECTS, AtlasSubject
from regcore.config import param
from regcore.image import Image

__all__ = ["LearnedTemplateConfig", "LearnedTemplateResult", "learn_template"]


@dataclass(frozen=True)
class LearnedTemplateConfig:
    """Hyperparameters of :func:`learn_template`."""

    steps: int = param(300, "Optimisation steps (minibatches).", range=(1, 100_000))
    batch_size: int = param(4, "Subjects per step.", range=(1, 256))
    learning_rate: float = param(3e-3, "Adam learning rate of the network.", range=(1e-5, 1.0))
    template_learning_rate: float = param(1e-2, "Adam learning rate of the template.", range=(1e-5, 1.0))
    widths: tuple[int, ...] = param((8, 16, 16, 16), "U-Net channels per level, finest first.")
    integration_steps: int = param(7, "Scaling-and-squaring steps of the velocity.", range=(0, 12))
    image_sigma: float = param(
        0.05,
        "Expected intensity noise: the data term is MSE / sigma^2 (images in [0, 1]).",
        range=(1e-3, 1.0),
    )
    smooth: float = param(1.0, "Weight of the diffusion regulariser of the displacement.", range=(0.0, 100.0))
    centre: float = param(
        1.0, "Weight of |mean displacement|^2 (keeps the template central).", range=(0.0, 100.0)
    )
    sharp: float = param(0.0, "Weight of |grad T|^2 on the template (denoising).", range=(0.0, 100.0))
    attribute: str = param("", "Subject attribute to condition on ('' = one template for all).")
    seed: int = param(0, "Random seed (network initialisation and minibatches).", range=(0, 2**31 - 1))


@dataclass(eq=False)
class LearnedTemplateResult:
    """A learned template.

    Attributes:
        template: the template (conditional: at the mean attribute value), an Image on the subjects' grid.
        labels: its label map (majority vote of the subjects' labels warped to it), or None.
        loss: training loss per step.
        sharpness, distance_mm, dice: measures of ``template`` (as :class:`~regcore.atlas.AtlasIteration`).
        runtime_s: training and measuring time.
        attribute_stats: ``(mean, std)`` of the attribute used for z-scoring (conditional only).
        template_at: ``template_at(a) -> Image``, the template for attribute value ``a``.
    """

    template: Image
    labels: Image | None
    loss: list[float]
    sharpness: float
    distance_mm: float
    dice: float | None
    runtime_s: float
    attribute_stats: tuple[float, float] | None = None
    template_at: Callable[[float], Image] | None = field(default=None, repr=False)


class _Model(nn.Module):
    def __init__(self, initial: torch.Tensor, dims: int, config: LearnedTemplateConfig, conditional: bool):
        from regcore.nets.conv_unet import ConvUNet

        super().__init__()
        self.base = nn.Parameter(initial.clone())  # (1, 1, *S)
        self.slope = nn.Parameter(torch.zeros_like(initial)) if conditional else None
        self.net = ConvUNet(dims, 2, dims, tuple(config.widths), condition_dim=1 if conditional else 0)
        self.steps = config.integration_steps

    def template(self, a: torch.Tensor | None) -> torch.Tensor:
        """``(B, 1, *S)`` for z-scored attributes ``a`` ``(B, 1)`` (``(1, 1, *S)`` without)."""
        if self.slope is None or a is None:
            return self.base
        return self.base + a.view(-1, *([1] * (self.base.ndim - 1))) * self.slope

    def velocity(self, template: torch.Tensor, subject: torch.Tensor, a: torch.Tensor | None) -> torch.Tensor:
        x = torch.cat([template.expand_as(subject), subject], 1)
        padded, crop = _pad(x, self.net.divisor)
        v = self.net(padded, a if self.slope is not None else None)
        return v[crop]


def _pad(x: torch.Tensor, divisor: int) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Zero-pad the spatial axes of ``x`` up to multiples of ``divisor``; the slices crop back."""
    sizes = x.shape[2:]
    extra = [(-s) % divisor for s in sizes]
    pad: list[int] = []
    for e in reversed(extra):
        pad += [0, e]
    crop = (slice(None), slice(None), *(slice(0, s) for s in sizes))
    return (nn.functional.pad(x, pad) if any(extra) else x), crop


def _check(subjects, config) -> None:
    if not isinstance(config, LearnedTemplateConfig):
        raise TypeError(f"config must be a LearnedTemplateConfig, got {type(config).__name__}")
    if not isinstance(subjects, Sequence) or not all(isinstance(s, AtlasSubject) for s in subjects):
        raise TypeError("subjects must be a list of regcore.atlas.AtlasSubject")
    if len(subjects) < MIN_SUBJECTS:
        raise ValueError(f"subjects: a learned template needs at least {MIN_SUBJECTS}, got {len(subjects)}")
    if config.attribute:
        missing = [s.name for s in subjects if config.attribute not in s.attributes]
        if missing:
            raise ValueError(f"attribute {config.attribute!r} missing for subject(s) {missing[:5]}")


def learn_template(
    subjects: Sequence[AtlasSubject],
    config: LearnedTemplateConfig | None = None,
    *,
    device: str = "auto",
    progress: Callable[[float, str], object] | None = None,
) -> LearnedTemplateResult:
    """Learn a template (and a registration network) from ``subjects``; see the module docstring.

    Subjects are resampled onto the first one's grid and percentile-normalised; the template starts
    as their mean. Returns the template measured like the classical ones.
    """
    from regcore.atlas.inputs import SMALL_GRID_VOXELS
    from regcore.batch.tasks import threads_for_block

    config = config or LearnedTemplateConfig()
    _check(subjects, config)
    small = math.prod(subjects[0].image.shape) < SMALL_GRID_VOXELS
    with threads_for_block(1 if small else None):  # thread pools cost more than they save on small grids
        return _learn(subjects, config, device, progress)


def _learn(subjects, config: LearnedTemplateConfig, device: str, progress) -> LearnedTemplateResult:
    from regcore.atlas.inputs import prepare_subjects
    from regcore.losses.factory import make_regularizer
    from regcore.methods.base import resolve_device
    from regcore.spatial.svf import integrate_svf
    from regcore.spatial.warp import warp, warp_labels

    t0 = time.perf_counter()
    dev = resolve_device(device)
    subs = prepare_subjects(subjects, normalise=True)
    geometry = subs[0].image.geometry
    dims = geometry.ndim
    images = torch.stack([s.image.data.float() for s in subs]).to(dev)  # (N, 1, *S)
    attrs = None
    stats = None
    if config.attribute:
        raw = np.array([float(s.attributes[config.attribute]) for s in subs])
        stats = (float(raw.mean()), float(raw.std()) or 1.0)
        attrs = torch.tensor((raw - stats[0]) / stats[1], dtype=torch.float32, device=dev).view(-1, 1)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = _Model(images.mean(0, keepdim=True), dims, config, attrs is not None).to(dev)
    template_params = [model.base] + ([model.slope] if model.slope is not None else [])
    opt = torch.optim.Adam(
        [
            {"params": model.net.parameters(), "lr": config.learning_rate},
            {"params": template_params, "lr": config.template_learning_rate},
        ]
    )
    diffusion = make_regularizer("diffusion")
    say = progress or (lambda fraction, message: None)
    losses: list[float] = []
    n = len(subs)
    for step in range(config.steps):
        idx = torch.as_tensor(rng.choice(n, size=min(config.batch_size, n), replace=False), device=dev)
        subject = images[idx]
        a = attrs[idx] if attrs is not None else None
        template = model.template(a)
        u = integrate_svf(model.velocity(template, subject, a), steps=config.integration_steps)
        warped = warp(template.expand_as(subject), u)  # template on the subject grid
        loss = ((warped - subject) ** 2).mean() / config.image_sigma**2 + config.smooth * diffusion(u)
        loss = loss + config.centre * u.mean(0).pow(2).mean()
        if config.sharp:
            grads = torch.gradient(template, dim=tuple(range(2, 2 + dims)))
            loss = loss + config.sharp * sum(g.pow(2).mean() for g in grads)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise RuntimeError(f"learned template: the loss became {value} at step {step}; lower the rates")
        losses.append(value)
        if step % 10 == 0 or step == config.steps - 1:
            say((step + 1) / config.steps, f"step {step + 1}/{config.steps}: loss {losses[-1]:.4g}")

    @torch.no_grad()
    def template_at(value: float) -> Image:
        a = None
        if stats is not None:
            a = torch.tensor([[(float(value) - stats[0]) / stats[1]]], device=dev)
        return Image(model.template(a)[0].detach().cpu(), geometry, name=f"template({value:g})")

    with torch.no_grad():
        centre_value = stats[0] if stats is not None else 0.0
        template_img = template_at(centre_value)
        warped_labels, distances = [], []
        for k, s in enumerate(subs):
            a = attrs[k : k + 1] if attrs is not None else None
            v = model.velocity(model.template(a), images[k : k + 1], a)
            to_template = integrate_svf(-v, steps=config.integration_steps).cpu()  # template -> subject
            distances.append(mean_distance_mm(to_template, geometry.spacing))
            if s.labels is not None:
                warped_labels.append(warp_labels(s.labels.data[None], to_template)[0, 0].numpy())
    labels, dice = None, None
    if warped_labels:
        vote = majority_vote(warped_labels)
        dice = float(np.mean(agreement_dice(warped_labels, vote)))
        names = next((s.labels.label_names for s in subs if s.labels is not None), None)
        labels = Image.from_array(vote, geometry, is_labels=True, label_names=names, name="template_labels")
    return LearnedTemplateResult(
        template=template_img.with_data(template_img.data, name="learned template"),
        labels=labels,
        loss=losses,
        sharpness=sharpness(template_img),
        distance_mm=float(np.mean(distances)),
        dice=dice,
        runtime_s=time.perf_counter() - t0,
        attribute_stats=stats,
        template_at=template_at,
    )
