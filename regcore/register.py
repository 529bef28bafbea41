"""The one registration entry point shared by the CLI, the app, the benchmark and notebooks.

``run_registration(fixed, moving, method, overrides)``: validate -> resample moving (and its labels,
nearest neighbour) onto the fixed grid through physical space -> normalise intensities when the
method's config asks for it (field ``normalise``) -> run the method -> evaluate.
``register_images`` does all but the last step and returns a :class:`Registration` whose ``evaluate()``
does it, so a caller can run the evaluation beside other work (``regcore register`` writes its run
folder meanwhile).

The returned displacement lives on the FIXED grid, in its voxels, mapping fixed -> moving
(``warped = moving o (id + u)``); landmarks stay in LPS mm, so TRE compares phi(fixed landmark)
with its moving partner in world space.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from regcore.image import Image, Landmarks
from regcore.methods.base import ProgressCallback, RegistrationResult, resolve_device
from regcore.methods.registry import get

__all__ = [
    "Registration",
    "register_images",
    "register_pair",
    "run_registration",
    "run_pair",
    "prepare_moving",
    "label_mismatch_warnings",
    "compact_labels",
]


def _check_image(value, arg: str, *, labels: bool, optional: bool = False) -> Image | None:
    if value is None and optional:
        return None
    if not isinstance(value, Image):
        raise TypeError(f"{arg} must be a regcore Image, got {type(value).__name__}")
    if labels and not value.is_labels:
        raise ValueError(f"{arg} must be a label map (is_labels=True), got an intensity image {value.name!r}")
    if not labels and value.is_labels:
        raise ValueError(f"{arg} must be an intensity image, got the label map {value.name!r}")
    return value


def _check_landmarks(value, arg: str, ndim: int) -> Landmarks | None:
    if value is None:
        return None
    if not isinstance(value, Landmarks):
        raise TypeError(f"{arg} must be regcore Landmarks or None, got {type(value).__name__}")
    if value.ndim != ndim:
        raise ValueError(f"{arg} must be {ndim}D points like the images, got {value.ndim}D")
    return value


def prepare_moving(fixed: Image, moving: Image) -> Image:
    """``moving`` on ``fixed``'s grid, resampled through physical space (labels: nearest)."""
    if fixed.geometry.same_grid(moving.geometry):
        return moving
    from regcore.preprocess import resample_to

    return resample_to(moving, fixed.geometry)


def label_mismatch_warnings(
    fixed_labels: Image, moving_labels: Image, label_names: Mapping[int, str] | None = None
) -> list[str]:
    """Messages for label values present in one map but not the other (they score no Dice)."""
    fixed_set, moving_set = _present_labels(fixed_labels), _present_labels(moving_labels)
    out = []
    for side, only in (("fixed", fixed_set - moving_set), ("moving", moving_set - fixed_set)):
        if only:
            named = [
                f"{v} ({label_names[v]})" if label_names and v in label_names else str(v)
                for v in sorted(only)
            ]
            out.append(
                f"label value(s) present only in the {side} labels (no overlap possible): {', '.join(named)}"
            )
    return out


def compact_labels(labels: Image | None) -> Image | None:
    """``labels`` stored in the smallest integer dtype that holds its values (uint8 below 256, then int16,
    int32): the same label values in 1/8 (uint8) of int64's memory. Float, bool, negative or already
    compact maps, and None, are returned as they are. Every regcore consumer (warp, metrics, writers)
    reads any integer dtype."""
    if labels is None or labels.data.is_floating_point() or labels.data.dtype in (torch.uint8, torch.bool):
        return labels
    data = labels.data
    if not data.numel() or int(data.min()) < 0:
        return labels
    high = int(data.max())
    for dtype in (torch.uint8, torch.int16, torch.int32):
        if high <= torch.iinfo(dtype).max:
            return labels if data.dtype == dtype else labels.with_data(data.to(dtype))
    return labels


def _present_labels(labels: Image) -> set[int]:
    """Non-zero label values of a label map: one counting pass for small non-negative integer codes
    (uint8/int16 maps: ~20x faster than the sort behind ``Image.present_labels``)."""
    data = labels.data.reshape(-1)
    if data.numel() and not data.is_floating_point() and data.dtype != torch.bool:
        low, high = int(data.min()), int(data.max())
        if low >= 0 and high < 1 << 16:
            counts = torch.bincount(data if data.dtype == torch.uint8 else data.long(), minlength=high + 1)
            return {int(v) for v in torch.nonzero(counts).flatten().tolist() if v != 0}
    return set(labels.present_labels())


def _maybe_normalise(image: Image, config) -> Image:
    if not getattr(config, "normalise", False):
        return image
    from regcore.preprocess import normalise

    return normalise(image, "percentile")


@dataclass
class Registration:
    """A finished registration, not yet evaluated: the method's result and what it is scored against.

    ``fixed_labels`` and ``moving_labels_on_fixed`` lie on the fixed grid (``moving_labels``: as given, for
    the label-mismatch warnings); landmarks are in LPS mm.
    """

    result: RegistrationResult
    method: str
    fixed_labels: Image | None = None
    moving_labels: Image | None = None
    moving_labels_on_fixed: Image | None = None
    fixed_landmarks: Landmarks | None = None
    moving_landmarks: Landmarks | None = None
    label_names: Mapping[int, str] | None = None

    def evaluate(self) -> dict:
        """:func:`regcore.metrics.evaluate` of the result, with label-mismatch warnings and the method name."""
        from regcore.metrics.evaluate import evaluate

        labelled = self.fixed_labels is not None and self.moving_labels_on_fixed is not None
        metrics = evaluate(
            self.result,
            fixed_labels=self.fixed_labels,
            moving_labels=self.moving_labels_on_fixed,
            fixed_landmarks=self.fixed_landmarks,
            moving_landmarks=self.moving_landmarks,
            label_names=self.label_names,
            warped_labels=self.result.extras.get("warped_labels") if labelled else None,
        )
        if labelled and self.moving_labels is not None:
            metrics.setdefault("warnings", [])
            for w in label_mismatch_warnings(self.fixed_labels, self.moving_labels, self.label_names):
                if w not in metrics["warnings"]:
                    metrics["warnings"].append(w)
        metrics["method"] = self.method
        return metrics


def register_images(
    fixed: Image,
    moving: Image,
    method: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    fixed_labels: Image | None = None,
    moving_labels: Image | None = None,
    fixed_landmarks: Landmarks | None = None,
    moving_landmarks: Landmarks | None = None,
    label_names: Mapping[int, str] | None = None,
    device: str | torch.device = "auto",
    progress: ProgressCallback | None = None,
    initial: str = "none",
) -> Registration:
    """Register ``moving`` to ``fixed`` with registry method ``method``; :meth:`Registration.evaluate` scores it.

    Args:
        fixed, moving: intensity Images; they may differ in grid and orientation.
        method: registry name (``regcore methods`` lists them).
        overrides: config values by name (strings are parsed, as ``--set key=value``).
        fixed_labels, moving_labels: label maps on their image's grid (Dice, HD95).
        fixed_landmarks, moving_landmarks: LPS-mm Landmarks matched by id (TRE).
        label_names: label value -> structure name (default: from the label Images).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        progress: callback receiving :class:`~regcore.methods.base.Progress`; return False to cancel.
        initial: ``"none"``, ``"rigid"`` or ``"affine"``: a stage of regcore's MI affine method first
            (:mod:`regcore.pipeline`); the result's displacement is the composition of both stages.
    Returns:
        a :class:`Registration`: the method's RegistrationResult (displacement on the fixed grid, fixed ->
        moving voxels; moving labels warped into ``extras["warped_labels"]``) and what evaluation needs.
    """
    fixed = _check_image(fixed, "fixed", labels=False)
    moving = _check_image(moving, "moving", labels=False)
    fixed_labels = _check_image(fixed_labels, "fixed_labels", labels=True, optional=True)
    moving_labels = _check_image(moving_labels, "moving_labels", labels=True, optional=True)
    if fixed.ndim != moving.ndim:
        raise ValueError(
            f"fixed and moving must have the same dimensionality, got {fixed.ndim}D and {moving.ndim}D"
        )
    for arg, lab, img in (("fixed_labels", fixed_labels, fixed), ("moving_labels", moving_labels, moving)):
        if lab is not None and lab.shape != img.shape:
            raise ValueError(f"{arg} shape {lab.shape} must match its image's shape {img.shape}")
    fixed_landmarks = _check_landmarks(fixed_landmarks, "fixed_landmarks", fixed.ndim)
    moving_landmarks = _check_landmarks(moving_landmarks, "moving_landmarks", fixed.ndim)
    if not isinstance(method, str):
        raise TypeError(f"method must be a registry name (str), got {type(method).__name__}")
    if overrides is not None and not isinstance(overrides, Mapping):
        raise TypeError(f"overrides must be a dict of config values or None, got {type(overrides).__name__}")
    from regcore.pipeline import check_initial

    check_initial(initial)
    spec = get(method)
    if fixed.ndim not in spec.dims:
        raise ValueError(f"method {method!r} supports {spec.dims}D images, got {fixed.ndim}D")
    dev = resolve_device(device)
    overrides = dict(overrides or {})
    field_names = {f.name for f in dataclasses.fields(spec.config_cls)}
    if "device" in field_names and "device" not in overrides:
        overrides["device"] = "cuda" if dev.type == "cuda" else "cpu"
    config = spec.make_config(overrides)
    runner = spec.factory()  # may raise MissingExtraError with the install command

    moving_on_fixed = prepare_moving(fixed, moving)
    moving_labels_on_fixed = prepare_moving(fixed, moving_labels) if moving_labels is not None else None
    if fixed_labels is not None and not fixed_labels.geometry.same_grid(fixed.geometry):
        fixed_labels = prepare_moving(fixed, fixed_labels)
    names = (
        label_names
        or (fixed_labels.label_names if fixed_labels is not None else None)
        or (moving_labels.label_names if moving_labels is not None else None)
    )

    f_in = _maybe_normalise(fixed, config)
    m_in = _maybe_normalise(moving_on_fixed, config)
    if "device" not in field_names:
        f_in, m_in = f_in.to(dev), m_in.to(dev)
    if initial == "none":
        result = runner.register(f_in, m_in, config, progress=progress)
    else:
        from regcore.pipeline import register_after_initial

        result = register_after_initial(
            initial,
            f_in,
            m_in,
            lambda f, m, p: runner.register(f, m, config, progress=p),
            device="cuda" if dev.type == "cuda" else "cpu",
            progress=progress,
        )
    if m_in is not moving_on_fixed:  # report the warp of the un-normalised moving image
        from regcore.spatial.warp import warp

        warped = warp(moving_on_fixed.batch().to(result.displacement.device), result.displacement)
        result.warped = moving_on_fixed.with_data(warped[0].cpu(), name=result.warped.name)
    result.fixed, result.moving = fixed, moving_on_fixed
    if moving_labels_on_fixed is not None:
        from regcore.spatial.warp import warp_labels

        lab = warp_labels(
            moving_labels_on_fixed.data[None].to(result.displacement.device), result.displacement
        )
        result.extras["warped_labels"] = moving_labels_on_fixed.with_data(lab[0].cpu())

    return Registration(
        result=result,
        method=method,
        fixed_labels=fixed_labels,
        moving_labels=moving_labels,
        moving_labels_on_fixed=moving_labels_on_fixed,
        fixed_landmarks=fixed_landmarks,
        moving_landmarks=moving_landmarks,
        label_names=names,
    )


def run_registration(
    fixed: Image,
    moving: Image,
    method: str,
    overrides: Mapping[str, Any] | None = None,
    **options: Any,
) -> tuple[RegistrationResult, dict]:
    """Register ``moving`` to ``fixed`` and evaluate the result (:func:`register_images`, then
    :meth:`Registration.evaluate`; the same arguments).

    Returns:
        ``(result, metrics)``: the method's RegistrationResult (displacement on the fixed grid,
        fixed -> moving voxels) and ``regcore.metrics.evaluate``'s dict.
    """
    registration = register_images(fixed, moving, method, overrides, **options)
    return registration.result, registration.evaluate()


def register_pair(
    pair,
    method: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    device: str = "auto",
    progress: ProgressCallback | None = None,
    initial: str = "none",
) -> Registration:
    """:func:`register_images` on a ``regcore.data.Pair`` (labels, landmarks and names included)."""
    for attr in ("fixed", "moving"):
        if not hasattr(pair, attr):
            raise TypeError(f"pair must be a regcore.data.Pair, got {type(pair).__name__}")
    return register_images(
        pair.fixed,
        pair.moving,
        method,
        overrides,
        fixed_labels=getattr(pair, "fixed_labels", None),
        moving_labels=getattr(pair, "moving_labels", None),
        fixed_landmarks=getattr(pair, "fixed_landmarks", None),
        moving_landmarks=getattr(pair, "moving_landmarks", None),
        label_names=getattr(pair, "label_names", None),
        device=device,
        progress=progress,
        initial=initial,
    )


def run_pair(
    pair, method: str, overrides: Mapping[str, Any] | None = None, **options: Any
) -> tuple[RegistrationResult, dict]:
    """:func:`register_pair` (the same arguments: ``device``, ``progress``, ``initial``), then
    :meth:`Registration.evaluate`: ``(result, metrics)``."""
    registration = register_pair(pair, method, overrides, **options)
    return registration.result, registration.evaluate()
