"""Property-based hostile inputs (hypothesis): NIfTI headers, landmark CSVs and training recipes.

Whatever the bytes, the outcome is one of two: a valid object (finite geometry, exact types) or a
ValueError/TypeError whose one-line message names the file or the field. Never another exception,
never a huge allocation (``max_voxels`` is small and declared sizes are checked against the file).
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from regcore.image import Geometry, Image, Landmarks  # noqa: E402
from regcore.io import ImageIOError, load_image, load_landmarks  # noqa: E402

SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
ANY_FLOAT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32), st.sampled_from([0.0, -1.0, 1e30, -1e-30, 1.0])
)
DATATYPES = [2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304, 0, 1, 9999, -4]


@st.composite
def nifti_bytes(draw):
    """A NIfTI-1 single file: a valid 8x8x4 header with some fields replaced by hostile values."""
    h = nib.Nifti1Header()
    h.set_data_shape((8, 8, 4))
    h.set_data_dtype(np.float32)
    h["vox_offset"] = 352
    h.set_sform(np.diag([1.0, 1.0, 1.0, 1.0]), code=1)
    if draw(st.booleans()):
        ndim = draw(st.integers(-2, 9))  # header fields are int16
        sizes = draw(st.lists(st.integers(-3, 32767), min_size=7, max_size=7))
        h["dim"] = [ndim, *sizes]
    if draw(st.booleans()):
        h["datatype"] = draw(st.sampled_from(DATATYPES))
        h["bitpix"] = draw(st.sampled_from([8, 16, 32, 64, 0, 7]))
    if draw(st.booleans()):
        h["pixdim"] = [draw(st.sampled_from([1.0, -1.0, 0.0]))] + draw(
            st.lists(ANY_FLOAT, min_size=7, max_size=7)
        )
    for row in ("srow_x", "srow_y", "srow_z"):
        if draw(st.booleans()):
            h[row] = draw(st.lists(ANY_FLOAT, min_size=4, max_size=4))
    if draw(st.booleans()):
        h["sform_code"] = draw(st.integers(-1, 5))
        h["qform_code"] = draw(st.integers(-1, 5))
        h["quatern_b"], h["quatern_c"], h["quatern_d"] = draw(st.lists(ANY_FLOAT, min_size=3, max_size=3))
    if draw(st.booleans()):
        h["vox_offset"] = draw(st.sampled_from([0.0, 100.0, 352.0, 353.0, 1e9, -5.0, float("nan")]))
    if draw(st.booleans()):
        h["scl_slope"], h["scl_inter"] = draw(ANY_FLOAT), draw(ANY_FLOAT)
    payload = draw(st.one_of(st.just(np.ones(256, np.float32).tobytes()), st.binary(max_size=2048)))
    return h.binaryblock + b"\0" * 4 + payload


@SETTINGS
@given(data=nifti_bytes(), gz=st.booleans())
def test_any_nifti_header_loads_cleanly_or_is_refused_naming_the_file(data, gz):
    import gzip

    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / ("fuzz.nii.gz" if gz else "fuzz.nii")
        p.write_bytes(gzip.compress(data, compresslevel=1) if gz else data)
        try:
            img = load_image(p, max_voxels=10**6)
        except ImageIOError as e:
            msg = str(e)
            assert msg.startswith(str(p)) and "\n" not in msg, msg
            return
        assert isinstance(img, Image)
        g = img.geometry
        assert all(math.isfinite(v) for v in (*g.spacing, *g.origin)) and min(g.spacing) > 0
        assert abs(np.linalg.det(g.direction_matrix)) > 0.5
        assert np.isfinite(img.data.numpy()).all()


CELL = st.one_of(
    st.text(alphabet='0123456789.-+eEinfaxyz,"; \t', max_size=12),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers().map(str),
)


@st.composite
def landmark_csv(draw):
    header = draw(
        st.one_of(
            st.just(["id", "x", "y"]),
            st.just(["x", "y"]),
            st.just(["label", "x_lps", "y_lps", "z_lps"]),
            st.lists(st.sampled_from(["id", "x", "y", "z", "q", "x_px", ""]), max_size=5),
        )
    )
    rows = draw(st.lists(st.lists(CELL, min_size=0, max_size=5), max_size=8))
    text = "\n".join(",".join(r) for r in [header, *rows])
    return draw(st.sampled_from(["utf-8", "latin-1"])), text


@SETTINGS
@given(csv_text=landmark_csv(), binary=st.binary(max_size=64))
def test_any_landmark_csv_loads_or_is_refused_naming_the_file(csv_text, binary):
    encoding, text = csv_text
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "points.csv"
        p.write_bytes(text.encode(encoding, "replace") + binary)
        try:
            lm = load_landmarks(p, geometry=Geometry.identity((32, 32)))
        except ValueError as e:  # ImageIOError is a ValueError
            assert "points.csv" in str(e) and "\n" not in str(e).strip(), str(e)
            return
        assert isinstance(lm, Landmarks) and len(lm) > 0 and np.isfinite(lm.points).all()
        assert lm.points.shape[1] == 2


JSON_VALUE = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**6), 10**6),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=8),
        st.sampled_from(["shapes", "brain", "lncc", "mse", "weak", "cpu", "voxelmorph"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
RECIPE_KEYS = [
    "family",
    "dims",
    "data",
    "data_path",
    "spacing_mm",
    "train_shape",
    "supervision",
    "similarity",
    "epochs",
    "steps_per_epoch",
    "batch_size",
    "lr",
    "augment",
    "seed",
    "device",
    "threads",
    "family_config",
    "val_pairs",
    "synthetic_pool",
    "deform_augment",
    "crop_shape",
    "time_limit_min",
    "unknown_key",
]


@SETTINGS
@given(changes=st.dictionaries(st.sampled_from(RECIPE_KEYS), JSON_VALUE, max_size=4))
def test_any_recipe_is_exactly_typed_or_refused_naming_the_field(changes):
    from dataclasses import fields

    from regcore.train.config import TrainConfig, config_from_dict

    base = {"family": "voxelmorph", "dims": 2, "data": "shapes", "train_shape": [32, 32]}
    try:
        cfg = config_from_dict(json.loads(json.dumps({**base, **changes})))
    except (ValueError, TypeError) as e:
        msg = str(e)
        assert "\n" not in msg.strip(), msg
        assert any(k in msg for k in ("TrainConfig", "family", "config", "Config.")), msg
        return
    for f in fields(TrainConfig):  # accepted: every value has its declared type, bools are not ints
        v = getattr(cfg, f.name)
        if f.type in ("int", int):
            assert type(v) is int, (f.name, v)
        elif f.type in ("float", float):
            assert isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), (f.name, v)
        elif f.type in ("bool", bool):
            assert type(v) is bool, (f.name, v)
