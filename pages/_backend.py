"""The app's single doorway to regcore (data, methods, registration, metrics).

Pages call these thin functions instead of importing regcore modules one by one, so the
page code reads as "what", and the regcore API (docs/ARCHITECTURE.md) stays in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from regcore import bias_field as bias
from regcore import data, io, preprocess
from regcore.config import describe
from regcore.image import Geometry, Image, Landmarks
from regcore.methods import registry
from regcore.methods.base import Progress
from regcore.register import run_pair
from regcore.report import run_report_html  # noqa: F401 - re-exported for the pages
from regcore.run_record import RunRecord, RunSlice  # noqa: F401 - re-exported for the pages

_NOTES: set[str] = set()


def backend_notes() -> list[str]:
    """Human-readable problems met while loading the engine (e.g. a method module that failed)."""
    return sorted(_NOTES)


# -- data ---------------------------------------------------------------------------------------
def list_sample_datasets() -> list[str]:
    """Names of the built-in sample datasets."""
    return [d["name"] if isinstance(d, dict) else str(d) for d in data.list_sample_datasets()]


def sample_pair(dataset: str = "brain", dims: int = 2, **kw) -> Any:
    """``regcore.data.sample_pair`` (builds the sample data on first use)."""
    return data.sample_pair(dataset=dataset, dims=dims, **kw)


def load_folder(path: str):
    """``regcore.data.load_folder``: a server-side folder or CSV manifest of pairs."""
    return data.load_folder(path)


def load_image(path: str, **kw) -> Image:
    return io.load_image(path, **kw)


def load_landmarks(path: str, geometry: Geometry | None = None) -> Landmarks:
    return io.load_landmarks(path, geometry)


def check_pair(fixed: Image, moving: Image) -> list[str]:
    """Warnings about grids, orientation, spacing, overlap and intensity of a fixed/moving pair."""
    return list(preprocess.check_pair(fixed, moving))


def bias_field(image: Image) -> Image:
    """``regcore.bias_field.bias_field``: N4's estimate of the image's MR coil shading (ValueError for CT)."""
    return bias.bias_field(image)


def bias_field_range(image: Image, field: Image) -> tuple[float, float]:
    """``regcore.bias_field.bias_field_range``: the field's 1st/99th percentiles over the object."""
    return bias.bias_field_range(image, field)


def make_pair(**fields):
    """A ``regcore.data.Pair`` from uploaded parts (missing parts default to None)."""
    defaults = {
        "fixed_labels": None,
        "moving_labels": None,
        "fixed_landmarks": None,
        "moving_landmarks": None,
        "true_displacement": None,
        "label_names": {},
        "modality": "uploaded",
    }
    defaults.update(fields)
    return data.Pair(**defaults)


# -- methods ------------------------------------------------------------------------------------
def method_specs() -> list:
    """Registry specs; a broken method module is reported in ``backend_notes`` instead of taking the app down."""
    try:
        return registry.all_specs()
    except Exception as e:  # noqa: BLE001 - shown on the page as an engine note
        _NOTES.add(f"method registry failed to load: {e}")
        return []


def get_spec(name: str):
    return registry.get(name)


def describe_params(spec) -> list:
    return describe(spec.config_cls)


def spec_unavailable_reason(spec, dims: int) -> str | None:
    """Why a method cannot run on this pair now (None when it can)."""
    if dims not in tuple(spec.dims):
        return f"supports {'/'.join(f'{d}D' for d in spec.dims)} only"
    if not spec.available():
        return f"needs the optional extra '{spec.requires}' (not installed)"
    return None


def run_registration(
    pair,
    method: str,
    overrides: dict | None = None,
    progress: Callable[[Progress], bool | None] | None = None,
    device: str = "auto",
    initial: str = "none",
):
    """Resample, register and evaluate one pair -> (RegistrationResult, metrics dict); ``initial``: a rigid or
    affine stage first (:mod:`regcore.pipeline`)."""
    return run_pair(pair, method, overrides or {}, device=device, progress=progress, initial=initial)


def save_image(image: Image, path) -> None:
    io.save_image(image, path)


def save_displacement(displacement, geometry: Geometry, path) -> None:
    io.save_displacement(displacement, geometry, path)
