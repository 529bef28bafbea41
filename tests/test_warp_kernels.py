"""The compiled (numba) warp kernels against torch grid_sample, scipy and bad input."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from scipy import ndimage

from regcore.spatial import warp_kernels
from regcore.spatial.warp import warp

pytestmark = pytest.mark.skipif(not warp_kernels.AVAILABLE, reason="numba is not installed")


def _field(batch: int, shape: tuple[int, ...], scale: float, dtype=torch.float32) -> torch.Tensor:
    """Random displacement that reaches well outside the image (exercises every padding rule)."""
    return (torch.randn(batch, len(shape), *shape, dtype=torch.float64) * scale).to(dtype)


@pytest.mark.parametrize("shape", [(23, 29), (13, 17, 19)])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_matches_grid_sample(shape, padding, dtype):
    moving = torch.randn(2, 3, *shape, dtype=dtype)
    u = _field(2, shape, 6.0, dtype)
    compiled = warp(moving, u, "bilinear", padding)
    reference = warp(moving, u, "bilinear", padding, slabs=1)  # explicit slabs force grid_sample
    tol = 5e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(compiled, reference, atol=tol, rtol=0)


@pytest.mark.parametrize("shape", [(23, 29), (13, 17, 19)])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_nearest_matches_grid_sample(shape, padding):
    moving = torch.randint(0, 50, (1, 2, *shape)).float()
    u = _field(1, shape, 6.0).round() + 0.3  # keep away from .5 ties, where float rounding decides
    assert torch.equal(warp(moving, u, "nearest", padding), warp(moving, u, "nearest", padding, slabs=1))


def test_linear_matches_scipy_map_coordinates_3d():
    rng = np.random.default_rng(0)
    moving = rng.normal(size=(11, 12, 13))
    u = rng.normal(size=(3, 11, 12, 13)) * 2
    coords = np.indices(moving.shape) + u
    expected = ndimage.map_coordinates(moving, coords, order=1, mode="nearest")
    ours = warp(torch.from_numpy(moving)[None, None], torch.from_numpy(u)[None], "bilinear", "border")
    np.testing.assert_allclose(ours[0, 0].numpy(), expected, atol=1e-12)


def test_batch_broadcast_and_integer_labels():
    shape = (9, 10, 11)
    moving = torch.randn(1, 1, *shape)
    u = _field(3, shape, 2.0)
    out = warp(moving, u)
    for b in range(3):
        assert torch.allclose(out[b : b + 1], warp(moving, u[b : b + 1], slabs=1), atol=5e-5)
    labels = torch.randint(0, 7, (1, 1, *shape), dtype=torch.int16)
    warped = warp(labels, u[:1].round() + 0.2, "nearest", "zeros")
    assert warped.dtype == torch.int16 and set(warped.unique().tolist()) <= set(labels.unique().tolist())


def test_non_finite_displacement_reads_zero_not_memory():
    moving = torch.randn(1, 1, 8, 9, 10) + 5.0
    u = torch.zeros(1, 3, 8, 9, 10)
    u[0, 0, 1, 1, 1] = float("nan")
    u[0, 1, 2, 2, 2] = float("inf")
    u[0, 2, 3, 3, 3] = -1e30
    for mode in ("bilinear", "nearest"):
        out = warp(moving, u, mode, "zeros")
        assert out[0, 0, 1, 1, 1] == 0 and out[0, 0, 2, 2, 2] == 0 and out[0, 0, 3, 3, 3] == 0
        untouched = torch.ones_like(out, dtype=torch.bool)
        untouched[0, 0, 1, 1, 1] = untouched[0, 0, 2, 2, 2] = untouched[0, 0, 3, 3, 3] = False
        assert torch.allclose(out[untouched], moving[untouched])


def test_autograd_still_flows_through_grid_sample_path():
    moving = torch.randn(1, 1, 6, 7, 8)
    u = _field(1, (6, 7, 8), 1.0).requires_grad_(True)
    warp(moving, u).sum().backward()
    assert u.grad is not None and u.grad.abs().sum() > 0


def test_inference_mode_and_non_contiguous_inputs():
    moving = torch.randn(1, 1, 10, 12, 14).transpose(3, 4)  # (1, 1, 10, 14, 12), not contiguous
    u = _field(1, (10, 14, 12), 2.0)
    with torch.inference_mode():
        out = warp(moving, u)
    assert torch.allclose(out, warp(moving, u, slabs=1), atol=5e-5)


def test_concurrent_callers_get_correct_results():
    """Two threads warp at once: one uses the kernel, the other falls back; both must be right."""
    shape = (40, 48, 56)
    moving = torch.randn(1, 1, *shape)
    fields = [_field(1, shape, 3.0) for _ in range(4)]
    expected = [warp(moving, u, slabs=1) for u in fields]
    errors: list[float] = []

    def worker(i: int) -> None:
        for _ in range(5):
            errors.append(float((warp(moving, fields[i]) - expected[i]).abs().max()))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 20 and max(errors) < 5e-5


def test_without_numba_the_torch_path_gives_the_same_result(monkeypatch):
    moving = torch.randn(1, 2, 15, 16, 17)
    u = _field(1, (15, 16, 17), 3.0)
    compiled = warp(moving, u)
    monkeypatch.setattr(warp_kernels, "AVAILABLE", False)
    assert torch.allclose(warp(moving, u), compiled, atol=5e-5)


def test_compile_all_covers_every_kernel_group():
    from regcore.compile_kernels import compile_all

    assert set(compile_all()) == {
        "warp 2D",
        "warp 3D",
        "greedy 2D",
        "greedy 3D",
        "deformation metrics 3D",
        "label overlap",
        "displacement file 3D",
    }


_NEW_SIGNATURES_AFTER_COMPILE_ALL = """
import sys

import numpy as np
import torch
from numba.core.registry import CPUDispatcher

from regcore.compile_kernels import compile_all
from regcore.image import Image
from regcore.register import run_registration


def signatures():
    return {
        f"{name}.{attr}": {str(s) for s in obj.signatures}
        for name, module in list(sys.modules.items())
        if name.startswith("regcore")
        for attr, obj in list(vars(module).items())
        if isinstance(obj, CPUDispatcher)
    }


compile_all()
before = signatures()
rng = np.random.default_rng(0)
for shape in ((40, 44), (26, 28, 30)):
    fixed = torch.from_numpy(rng.random(shape, dtype=np.float32))
    labels = (fixed > 0.5).to(torch.int16)
    for method in ("demons", "fireants"):
        run_registration(
            Image.from_array(fixed),
            Image.from_array(torch.roll(fixed, 2, 0)),
            method,
            fixed_labels=Image.from_array(labels, is_labels=True),
            moving_labels=Image.from_array(torch.roll(labels, 2, 0), is_labels=True),
            device="cpu",
        )
after = signatures()
print(sorted(f"{k} {sorted(after[k] - before.get(k, set()))}" for k in after if after[k] - before.get(k, set())))
"""


def test_compile_all_leaves_nothing_to_compile_for_the_default_methods():
    """`make app`/`make test` run compile_all once; the default deformable methods (demons 2D, fireants 3D, both
    dims) and their evaluation must then need no new kernel signature (each costs seconds of compile on a user's
    first run). In a fresh process, so kernels other tests compiled cannot hide a miss."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _NEW_SIGNATURES_AFTER_COMPILE_ALL], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
