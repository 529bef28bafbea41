"""The app's single doorway to regcore (data, methods, registration, metrics).

Every call goes to the documented regcore API (docs/ARCHITECTURE.md). While a module is
still missing from the tree, a small private fallback keeps the app usable:
a synthetic 2D pair, one tiny dense method, Dice/folding metrics. Fallbacks are used only
on ImportError and each says so in ``backend_notes()``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from regcore.image import Geometry, Image, Landmarks
from regcore.methods.base import Progress, RegistrationResult, Timer, report
from regcore.viz import jacobian_determinant_2d3d

_NOTES: set[str] = set()


def _optional(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        _NOTES.add(f"{module} not available yet: using the app's built-in fallback")
        return None


def backend_notes() -> list[str]:
    """Human-readable list of fallbacks in use (empty when every regcore module is present)."""
    return sorted(_NOTES)


# -- data ---------------------------------------------------------------------------------------
@dataclass
class FallbackPair:
    """Same fields as ``regcore.data.pairs.Pair``."""

    name: str
    fixed: Image
    moving: Image
    fixed_labels: Image | None = None
    moving_labels: Image | None = None
    fixed_landmarks: Landmarks | None = None
    moving_landmarks: Landmarks | None = None
    true_displacement: torch.Tensor | None = None
    label_names: dict[int, str] = field(default_factory=dict)
    modality: str = "synthetic"


def _phantom(shape: tuple[int, ...], shift: float, squeeze: float) -> tuple[np.ndarray, np.ndarray]:
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    x, y = grids[0], grids[1]
    head = (x / (0.8 - squeeze)) ** 2 + (y / 0.9) ** 2 < 1
    left = ((x + 0.3 - shift) / 0.22) ** 2 + ((y - 0.1) / 0.35) ** 2 < 1
    right = ((x - 0.3 - shift) / 0.22) ** 2 + ((y - 0.1) / 0.35) ** 2 < 1
    core = ((x - shift) / 0.15) ** 2 + ((y + 0.45) / 0.15) ** 2 < 1
    labels = np.zeros(shape, np.int64)
    labels[head] = 1
    labels[left] = 2
    labels[right] = 3
    labels[core] = 4
    img = np.choose(labels, [0.0, 0.5, 0.9, 0.8, 0.25]) + 0.03 * np.sin(8 * x) * head
    return img.astype(np.float32), labels


def _fallback_pair(dims: int = 2) -> FallbackPair:
    shape = (128, 128) if dims == 2 else (48, 56, 48)
    names = {1: "head", 2: "left lobe", 3: "right lobe", 4: "core"}
    fi, fl = _phantom(shape, 0.0, 0.0)
    mi, ml = _phantom(shape, 0.08, 0.08)
    geom = Geometry.identity(shape, 1.0 if dims == 2 else 2.0)
    pts_f = np.array([[0.5, 0.55], [0.35, 0.55], [0.65, 0.55], [0.5, 0.27]])[:, :dims] if dims == 2 else None
    lm_f = lm_m = None
    if pts_f is not None:
        pf = pts_f * (np.array(shape) - 1)
        pm = pf + np.array([0.08 * (shape[0] - 1) / 2, 0.0])
        ids = [f"p{i}" for i in range(len(pf))]
        lm_f = Landmarks(geom.index_to_world_points(pf), ids)
        lm_m = Landmarks(geom.index_to_world_points(pm), ids)
    mk = lambda a, lab, n: Image.from_array(a, geom, is_labels=lab, label_names=names if lab else None, name=n)
    return FallbackPair("synthetic phantom", mk(fi, False, "fixed"), mk(mi, False, "moving"),
                        mk(fl, True, "fixed labels"), mk(ml, True, "moving labels"), lm_f, lm_m, None, names)


def list_sample_datasets() -> list[str]:
    data = _optional("regcore.data")
    if data is not None and hasattr(data, "list_sample_datasets"):
        return [d["name"] if isinstance(d, dict) else str(d) for d in data.list_sample_datasets()]
    return ["synthetic"]


def sample_pair(dataset: str = "brain", dims: int = 2, **kw) -> Any:
    """``regcore.data.sample_pair`` or the synthetic fallback pair."""
    data = _optional("regcore.data")
    if data is not None and hasattr(data, "sample_pair") and dataset != "synthetic":
        return data.sample_pair(dataset=dataset, dims=dims, **kw)
    return _fallback_pair(dims)


def load_folder(path: str):
    data = _optional("regcore.data")
    if data is None or not hasattr(data, "load_folder"):
        raise ValueError("loading a server folder needs regcore.data.load_folder, which is not installed yet")
    return data.load_folder(path)


def load_image(path: str, **kw) -> Image:
    io = _optional("regcore.io")
    if io is not None:
        return io.load_image(path, **kw)
    import SimpleITK as sitk  # fallback: SimpleITK, same LPS frame, arrays transposed to index order
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise ValueError(f"could not read {path}: {str(e).splitlines()[0] if str(e) else e}") from None
    arr = sitk.GetArrayFromImage(img).T
    n = arr.ndim
    if n == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
        n = 2
    d = np.asarray(img.GetDirection()).reshape(img.GetDimension(), -1)[:n, :n]
    geom = Geometry(arr.shape, img.GetSpacing()[:n], img.GetOrigin()[:n], tuple(map(tuple, d)))
    return Image.from_array(arr.astype(np.float32), geom, is_labels=kw.get("is_labels") or False,
                            label_names=kw.get("label_names"))


def load_landmarks(path: str, geometry: Geometry | None = None) -> Landmarks:
    io = _optional("regcore.io")
    if io is not None:
        return io.load_landmarks(path, geometry)
    import pandas as pd
    try:
        df = pd.read_csv(path)
        pts = df[[c for c in df.columns if c.lower() in ("x", "y", "z")]].to_numpy(float)
        return Landmarks(pts, df.iloc[:, 0].astype(str).tolist())
    except Exception as e:  # noqa: BLE001 - any parse failure becomes one clear message
        raise ValueError(f"could not read landmarks from {path}: {e}") from None


def check_pair(fixed: Image, moving: Image) -> list[str]:
    pre = _optional("regcore.preprocess")
    if pre is not None and hasattr(pre, "check_pair"):
        return list(pre.check_pair(fixed, moving))
    out = []
    if fixed.ndim != moving.ndim:
        out.append(f"fixed is {fixed.ndim}D but moving is {moving.ndim}D")
    if fixed.shape != moving.shape:
        out.append(f"shapes differ: fixed {fixed.shape} vs moving {moving.shape}")
    if not np.allclose(fixed.spacing, moving.spacing, rtol=1e-3):
        out.append(f"spacing differs: fixed {fixed.spacing} vs moving {moving.spacing} mm")
    if fixed.geometry.orientation_codes() != moving.geometry.orientation_codes():
        out.append(f"orientation differs: {fixed.geometry.orientation_codes()} vs {moving.geometry.orientation_codes()}")
    return out


# -- methods and registration ------------------------------------------------------------------
@dataclass(frozen=True)
class FallbackConfig:
    iterations: int = field(default=80, metadata={"help": "Adam steps", "range": (5, 500), "choices": None,
                                                  "step": 5, "advanced": False})
    smoothing: float = field(default=2.0, metadata={"help": "Gaussian smoothing of the update (voxels)",
                                                    "range": (0.0, 6.0), "choices": None, "step": 0.5,
                                                    "advanced": False})


class _FallbackDense:
    """Tiny dense method: Adam on a smoothed displacement, MSE. Fallback only."""

    def register(self, fixed: Image, moving: Image, config: FallbackConfig, progress=None) -> RegistrationResult:
        from regcore.spatial.warp import warp
        f, m = fixed.batch(), moving.batch()
        n = fixed.ndim
        u = torch.zeros((1, n, *fixed.shape), requires_grad=True)
        opt = torch.optim.Adam([u], lr=0.5)
        hist = []
        with Timer(torch.device("cpu")) as t:
            for it in range(config.iterations):
                loss = ((warp(m, u) - f) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    if config.smoothing > 0:
                        from scipy.ndimage import gaussian_filter
                        sm = [gaussian_filter(c, config.smoothing) for c in u[0].numpy()]
                        u.copy_(torch.tensor(np.stack(sm))[None])
                hist.append({"similarity": float(loss)})
                report(progress, (it + 1) / config.iterations, f"iter {it + 1}/{config.iterations}",
                       similarity=float(loss))
        disp = u.detach()
        warped = moving.with_data(warp(m, disp)[0])
        return RegistrationResult("fallback-dense", fixed, moving, warped, disp, loss_history=hist,
                                  runtime_s=t.runtime_s, peak_memory_mb=t.peak_memory_mb, config=config)


@dataclass(frozen=True)
class FallbackSpec:
    name: str = "fallback-dense"
    title: str = "Demo dense (fallback)"
    config_cls: type = FallbackConfig
    family: str = "deformable"
    supervision: str = "none"
    dims: tuple = (2, 3)
    needs_training: bool = False
    description: str = "A tiny built-in method used only until regcore's methods are installed."
    requires: str | None = None

    def available(self) -> bool:
        return True

    def make_config(self, overrides=None):
        return FallbackConfig(**(overrides or {}))

    def factory(self):
        return _FallbackDense()


def method_specs() -> list:
    """Registry specs (``regcore.methods.registry.all_specs``), or the fallback spec when empty."""
    from regcore.methods.registry import all_specs
    try:
        specs = all_specs()
    except Exception as e:  # noqa: BLE001 - a broken method module must not take the app down
        _NOTES.add(f"method registry failed to load: {e}")
        specs = []
    return specs or [FallbackSpec()]


def get_spec(name: str):
    for s in method_specs():
        if s.name == name:
            return s
    raise ValueError(f"unknown method {name!r}; known: {[s.name for s in method_specs()]}")


def describe_params(spec) -> list:
    from regcore.config import describe
    return describe(spec.config_cls)


def spec_unavailable_reason(spec, dims: int) -> str | None:
    """Why a method cannot run on this pair now (None when it can)."""
    if dims not in tuple(spec.dims):
        return f"supports {'/'.join(f'{d}D' for d in spec.dims)} only"
    if not spec.available():
        return f"needs the optional extra '{spec.requires}' (not installed)"
    return None


def run_registration(pair, method: str, overrides: dict | None = None,
                     progress: Callable[[Progress], bool | None] | None = None, device: str = "auto"):
    """``regcore.register.run_registration`` -> (RegistrationResult, metrics dict); fallback otherwise."""
    reg = _optional("regcore.register")
    spec = get_spec(method)
    if reg is not None and not isinstance(spec, FallbackSpec):
        if hasattr(reg, "run_pair"):
            return reg.run_pair(pair, method, overrides or {}, device=device, progress=progress)
        return reg.run_registration(
            pair.fixed, pair.moving, method, overrides or {}, fixed_labels=pair.fixed_labels,
            moving_labels=pair.moving_labels, fixed_landmarks=pair.fixed_landmarks,
            moving_landmarks=pair.moving_landmarks, label_names=pair.label_names, device=device, progress=progress)
    config = spec.make_config(overrides or {})
    result = spec.factory().register(pair.fixed, pair.moving, config, progress)
    return result, evaluate(result, pair)


def evaluate(result: RegistrationResult, pair) -> dict:
    """``regcore.metrics.evaluate`` for a result on a pair (fallback: Dice, folding, runtime)."""
    met = _optional("regcore.metrics")
    if met is not None and hasattr(met, "evaluate"):
        return met.evaluate(result, fixed_labels=pair.fixed_labels, moving_labels=pair.moving_labels,
                            fixed_landmarks=pair.fixed_landmarks, moving_landmarks=pair.moving_landmarks,
                            label_names=pair.label_names)
    out: dict[str, Any] = {"method": result.method, "runtime_s": result.runtime_s,
                           "peak_memory_mb": result.peak_memory_mb, "device": result.device, "warnings": []}
    jac = jacobian_determinant_2d3d(result.displacement[0].numpy())
    out["folding_percent"] = float((jac <= 0).mean() * 100)
    out["sdlogj"] = float(np.log(np.clip(jac, 1e-9, None)).std())
    if pair.fixed_labels is not None and pair.moving_labels is not None:
        from regcore.spatial.warp import warp_labels
        wl = warp_labels(pair.moving_labels.data[None], result.displacement.to(torch.float32))[0, 0].numpy()
        fl = pair.fixed_labels.numpy()
        dice = {}
        for v in [v for v in np.unique(fl) if v != 0]:
            a, b = fl == v, wl == v
            dice[(pair.label_names or {}).get(int(v), str(v))] = float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))
        out["dice"] = dice
        out["dice_mean"] = float(np.mean(list(dice.values()))) if dice else None
    return out


def make_pair(**fields):
    """A ``regcore.data.Pair`` (or the fallback with the same fields) from uploaded parts."""
    data = _optional("regcore.data")
    cls = getattr(data, "Pair", None) if data is not None else None
    if cls is None:
        cls = FallbackPair
    defaults = {"fixed_labels": None, "moving_labels": None, "fixed_landmarks": None, "moving_landmarks": None,
                    "true_displacement": None, "label_names": {}, "modality": "uploaded"}
    defaults.update(fields)
    try:
        return cls(**defaults)
    except TypeError:
        return FallbackPair(**defaults)
