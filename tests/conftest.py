"""Shared fixtures. Tests that need ../shared/data use ``shared_data`` and skip when absent."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# The app keeps each browser session on disk (pages/_session_store.py): tests and the servers they start
# write into a private folder, never into sessions/ beside app.py.
os.environ.setdefault("REGLAB_SESSION_DIR", tempfile.mkdtemp(prefix="reglab_sessions_"))
SHARED_DATA = Path(os.environ.get("REGLAB_SHARED_DATA", ROOT.parent / "shared" / "data"))

# One torch thread per pytest-xdist worker (2 workers on 2 cores); all cores when run serially.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; skips the test cleanly when the folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder not found at {SHARED_DATA} (set REGLAB_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def smooth_random_field(
    shape: tuple[int, ...], magnitude: float, seed: int = 0, sigma: float = 4.0
) -> torch.Tensor:
    """Random smooth displacement ``(1, ndim, *shape)`` in voxels with max |u| ~= magnitude."""
    from scipy.ndimage import gaussian_filter

    g = np.random.default_rng(seed)
    comps = []
    for _ in shape:
        c = gaussian_filter(g.standard_normal(shape), sigma)
        comps.append(c / (np.abs(c).max() + 1e-12) * magnitude)
    return torch.tensor(np.stack(comps)[None], dtype=torch.float32)


@pytest.fixture(autouse=True)
def _private_runs_dir(tmp_path, monkeypatch):
    """Training runs go to the test's own folder: a developer's ./runs (a killed run, a failed one) never shows
    up on the Train page a test renders. Tests that need a named runs folder set REGLAB_RUNS_DIR again."""
    monkeypatch.setenv("REGLAB_RUNS_DIR", str(tmp_path / "runs"))


@pytest.fixture(autouse=True)
def _deterministic_seed():
    """Every test starts from the same torch/numpy RNG state, so random inputs are reproducible."""
    torch.manual_seed(0)
    np.random.seed(0)
    yield


@pytest.fixture(scope="module")
def app_root_cwd():
    """The repository root as working directory for a module of AppTest tests (the app opens relative paths)."""
    old = os.getcwd()
    os.chdir(ROOT)
    yield
    os.chdir(old)


@pytest.fixture(scope="module")
def browser():
    """Debian's headless chromium under Playwright (browser tests); skips when either is missing."""
    from browser_kit import CHROMIUM, CHROMIUM_ARGS

    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium not installed (apt-get install -y chromium, or `make browser-deps`)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()
