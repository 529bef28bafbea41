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
