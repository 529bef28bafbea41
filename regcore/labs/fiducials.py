"""FLE, FRE and TRE for rigid point-based registration (Fitzpatrick & West).

Fiducials are localised with isotropic Gaussian error (FLE, mm RMS per point); a rigid
transform is fitted by least squares (Kabsch); FRE is the fit residual, TRE the error at
target points not used in the fit.
"""

from __future__ import annotations

import numpy as np


def kabsch(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares rotation R and translation t with ``dst ~= src @ R.T + t``; ``(N, d)`` points."""
    src, dst = np.asarray(src, float), np.asarray(dst, float)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[0] < src.shape[1]:
        raise ValueError(f"src and dst must be matching (N, d) with N >= d, got {src.shape} and {dst.shape}")
    cs, cd = src.mean(0), dst.mean(0)
    h = (src - cs).T @ (dst - cd)
    u, _, vt = np.linalg.svd(h)
    d = np.eye(src.shape[1])
    d[-1, -1] = np.sign(np.linalg.det(vt.T @ u.T))
    r = vt.T @ d @ u.T
    return r, cd - cs @ r.T


def predicted_tre_rms(fiducials: np.ndarray, targets: np.ndarray, fle_rms: float) -> np.ndarray:
    """Expected RMS TRE (mm) at each target for isotropic FLE (Fitzpatrick, West & Maurer 1998).

    3D: ``FLE^2/N (1 + 1/3 sum_k d_k^2 / f_k^2)`` with d_k, f_k the distances of the target and
    (RMS) of the fiducials from principal axis k. 2D (one rotation axis, normal to the plane):
    ``FLE^2/N (1 + r^2 / (2 rho^2))`` with r the target's and rho the fiducials' RMS distance to the centroid.
    """
    f = np.asarray(fiducials, float)
    n, d = f.shape
    c = f.mean(0)
    fc = f - c
    tc = np.atleast_2d(np.asarray(targets, float)) - c
    if d == 2:
        rho2 = np.mean(np.sum(fc**2, 1))
        factor = 1 + np.sum(tc**2, 1) / (2 * rho2)
    else:
        _, _, axes = np.linalg.svd(fc, full_matrices=False)

        def dist2(p, ax):
            return np.sum(p**2, 1) - (p @ ax) ** 2

        factor = 1 + sum(dist2(tc, ax) / np.mean(dist2(fc, ax)) for ax in axes) / 3
    return np.sqrt(fle_rms**2 / n * factor)


def simulate(
    fiducials: np.ndarray, targets: np.ndarray, fle_rms: float, trials: int = 500, seed: int = 0
) -> dict[str, float | np.ndarray]:
    """Monte Carlo: perturb fiducials by FLE, fit rigid, report RMS FRE and per-target RMS TRE (mm)."""
    f, t = np.asarray(fiducials, float), np.atleast_2d(np.asarray(targets, float))
    if fle_rms < 0:
        raise ValueError(f"fle_rms must be >= 0 mm, got {fle_rms}")
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    rng = np.random.default_rng(seed)
    sigma = fle_rms / np.sqrt(f.shape[1])  # per-axis std so that the 2D/3D RMS equals fle_rms
    fre2, tre2 = [], []
    for _ in range(trials):
        noisy = f + rng.normal(0, sigma, f.shape)
        r, tr = kabsch(noisy, f)
        fre2.append(np.mean(np.sum((noisy @ r.T + tr - f) ** 2, 1)))
        tre2.append(np.sum((t @ r.T + tr - t) ** 2, 1))
    return {
        "fre_rms": float(np.sqrt(np.mean(fre2))),
        "tre_rms": np.sqrt(np.mean(tre2, 0)),
        "tre_predicted": predicted_tre_rms(f, t, fle_rms),
    }
