"""Fused CPU kernels (numba) for the greedy optimisers: FireANTs-style and diffeomorphic demons.

At full resolution a 3D brain has ~7M voxels; the torch formulation of one iteration makes dozens of full-size
temporaries (box-filter stacks, Adam moments, products), and on a 2-core CPU the time goes to memory traffic and
page faults rather than arithmetic. These kernels compute the same quantities in a few fused passes over buffers
allocated once per level (:class:`GreedyWorkspace`):

* :meth:`GreedyWorkspace.lncc_force`: box-window LNCC between fixed ``I`` and warped ``J``
  and the update force ``dL/dJ * grad(J)`` (central differences, one-sided at the border),
  the same values as ``lncc.lncc_and_gradient`` times ``filters.image_gradient``; its box sums are the running
  sums of ``box_kernels``;
* :meth:`GreedyWorkspace.smooth`: separable Gaussian truncated at ``pyramid.TRUNCATE`` (2) sigmas, replicate border,
  in place (``regcore.spatial.smooth_kernels``, the compiled backend of ``regcore.spatial.smooth.gaussian_smooth``);
* the two step rules, largest voxel step ``step_size``: :meth:`GreedyWorkspace.adam_step` (Adam moments, each
  voxel normalised) and :meth:`~GreedyWorkspace.gradient_step` (the gradient scaled as a whole, ANTs SyN's);
* :meth:`GreedyWorkspace.compose`: ``u <- s + u o (id + s)`` (``warp_kernels.compose``);
* :meth:`GreedyWorkspace.demons_force`: the demons force of ``demons.demons_step``;
  :meth:`~GreedyWorkspace.max_norm`, which picks demons' number of squarings
  (``regcore.spatial.svf.squaring_steps``).

Every public method holds ``warp_kernels.KERNEL_LOCK`` (a re-entrant lock: numba's fallback threading layer must
not be entered from two threads at once) and uses torch's intra-op thread count. Arrays are numpy views of CPU float32
tensors laid out ``(C, Z, Y, X)``; a 2D image is ``(C, 1, Y, X)`` and its fields carry 2 components (y, x).
``tests/test_greedy_kernels.py`` checks every kernel against the torch implementation it replaces.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from regcore.methods.classical import box_kernels
from regcore.methods.classical.pyramid import TRUNCATE
from regcore.spatial import smooth_kernels, warp_kernels
from regcore.spatial.smooth import gaussian_kernel_1d

AVAILABLE = warp_kernels.AVAILABLE

if AVAILABLE:
    import numba

    _jit, _pjit = warp_kernels.jit, warp_kernels.parallel_jit

    @_pjit
    def _lncc_terms(stats, terms, norm, eps):
        """From box sums of I, J, I^2, J^2, IJ (``stats (5, ...)``) write the four gradient terms
        alpha, alpha*mi, alpha*beta, alpha*beta*mj into ``terms[0:4]``; return sum of cc."""
        nz, ny, nx = stats.shape[1:]
        total = 0.0
        for z in numba.prange(nz):
            row_total = 0.0
            for y in range(ny):
                for x in range(nx):
                    mi = stats[0, z, y, x] * norm
                    mj = stats[1, z, y, x] * norm
                    a = stats[4, z, y, x] * norm - mi * mj
                    b = max(stats[2, z, y, x] * norm - mi * mi, eps)
                    c = max(stats[3, z, y, x] * norm - mj * mj, eps)
                    alpha = 2.0 * a / (b * c)
                    beta = a / c
                    row_total += a * a / (b * c)
                    terms[0, z, y, x] = alpha
                    terms[1, z, y, x] = alpha * mi
                    terms[2, z, y, x] = alpha * beta
                    terms[3, z, y, x] = alpha * beta * mj
            total += row_total
        return total

    @_pjit
    def _force(fixed, warped, terms, norm, scale, out, first_axis):
        """``out[a] = -scale * (I t0 - t1 - J t2 + t3) * norm * dJ/d(axis a)``, central differences
        (one-sided at the border); components for the spatial axes ``first_axis..2``."""
        nz, ny, nx = fixed.shape
        for z in numba.prange(nz):
            for y in range(ny):
                for x in range(nx):
                    i, j = fixed[z, y, x], warped[z, y, x]
                    g = (
                        -scale
                        * norm
                        * (
                            i * terms[0, z, y, x]
                            - terms[1, z, y, x]
                            - j * terms[2, z, y, x]
                            + terms[3, z, y, x]
                        )
                    )
                    if first_axis == 0:
                        if nz == 1:
                            out[0, z, y, x] = 0.0
                        elif z == 0:
                            out[0, z, y, x] = g * (warped[1, y, x] - warped[0, y, x])
                        elif z == nz - 1:
                            out[0, z, y, x] = g * (warped[z, y, x] - warped[z - 1, y, x])
                        else:
                            out[0, z, y, x] = g * 0.5 * (warped[z + 1, y, x] - warped[z - 1, y, x])
                    cy = 1 - first_axis
                    if ny == 1:
                        out[cy, z, y, x] = 0.0
                    elif y == 0:
                        out[cy, z, y, x] = g * (warped[z, 1, x] - warped[z, 0, x])
                    elif y == ny - 1:
                        out[cy, z, y, x] = g * (warped[z, y, x] - warped[z, y - 1, x])
                    else:
                        out[cy, z, y, x] = g * 0.5 * (warped[z, y + 1, x] - warped[z, y - 1, x])
                    cx = 2 - first_axis
                    if nx == 1:
                        out[cx, z, y, x] = 0.0
                    elif x == 0:
                        out[cx, z, y, x] = g * (warped[z, y, 1] - warped[z, y, 0])
                    elif x == nx - 1:
                        out[cx, z, y, x] = g * (warped[z, y, x] - warped[z, y, x - 1])
                    else:
                        out[cx, z, y, x] = g * 0.5 * (warped[z, y, x + 1] - warped[z, y, x - 1])

    # -- Adam step and composition ---------------------------------------------------------------

    @_pjit
    def _adam_direction(grad, m, v, beta1, beta2, bias1, bias2, eps, row_max):
        """Update the moments in place, write the direction into ``grad``; ``row_max[z]`` = max |d|."""
        channels, nz, ny, nx = grad.shape
        for z in numba.prange(nz):
            best = 0.0
            for y in range(ny):
                for x in range(nx):
                    sq = 0.0
                    for c in range(channels):
                        g = grad[c, z, y, x]
                        mc = beta1 * m[c, z, y, x] + (1.0 - beta1) * g
                        vc = beta2 * v[c, z, y, x] + (1.0 - beta2) * g * g
                        m[c, z, y, x] = mc
                        v[c, z, y, x] = vc
                        d = (mc / bias1) / (math.sqrt(vc / bias2) + eps)
                        grad[c, z, y, x] = d
                        sq += d * d
                    best = max(best, sq)
            row_max[z] = math.sqrt(best)

    @_pjit
    def _scale(x, factor):
        channels, nz, ny, nx = x.shape
        for z in numba.prange(nz):
            for c in range(channels):
                for y in range(ny):
                    for xx in range(nx):
                        x[c, z, y, xx] *= factor

    @_pjit
    def _max_norm(field, row_max):
        """``row_max[z]`` = largest vector norm over the voxels of slice z of ``field (n, Z, Y, X)``."""
        channels, nz, ny, nx = field.shape
        for z in numba.prange(nz):
            best = 0.0
            for y in range(ny):
                for x in range(nx):
                    sq = 0.0
                    for c in range(channels):
                        sq += field[c, z, y, x] * field[c, z, y, x]
                    best = max(best, sq)
            row_max[z] = math.sqrt(best)

    @_pjit
    def _demons_force(fixed, warped, field, out, mode, k_inv, first_axis):
        """Demons force ``sum_c (F_c - W_c) J_c / sum_c (|J_c|^2 + (F_c - W_c)^2 k_inv)`` of ``(C, Z, Y, X)``
        images into ``out (ndim, Z, Y, X)`` (multichannel demons; one channel: the classic force). J is the
        central difference (replicate border) of F (mode 0, passive), W (1, active) or their mean (2,
        symmetric): ``weight * (take_f * dF + take_w * dW)``, exact for each mode. Per z-plane, channel by
        channel (each pass streams one channel's planes): first the denominator, then ``J_c (diff_c / denom)``
        added up, J rounded to float32 first as the one-channel kernel always did. A voxel whose mapped point
        ``index + field`` lies outside the moving image (continuous index outside ``[-0.5, n - 0.5]`` on an axis)
        gets no force, as ``demons.demons_step``."""
        channels, nz, ny, nx = fixed.shape
        weight = 0.5 if mode == 2 else 1.0
        take_f = 0.0 if mode == 1 else 1.0
        take_w = 0.0 if mode == 0 else 1.0
        for z in numba.prange(nz):
            zm, zp = max(z - 1, 0), min(z + 1, nz - 1)
            denom = np.zeros((ny, nx), dtype=np.float64)
            out[:, z] = 0.0
            for y in range(ny):  # no force outside the moving image: denominator 0 there
                for x in range(nx):
                    py = y + field[1 - first_axis, z, y, x]
                    px = x + field[2 - first_axis, z, y, x]
                    outside = py < -0.5 or py > ny - 0.5 or px < -0.5 or px > nx - 0.5
                    if first_axis == 0:
                        pz = z + field[0, z, y, x]
                        outside = outside or pz < -0.5 or pz > nz - 0.5
                    if outside:
                        denom[y, x] = -1.0
            for sweep in range(2):  # 0: the denominator; 1: the force
                for c in range(channels):
                    for y in range(ny):
                        ym, yp = max(y - 1, 0), min(y + 1, ny - 1)
                        for x in range(nx):
                            if denom[y, x] < 0.0:
                                continue
                            xm, xp = max(x - 1, 0), min(x + 1, nx - 1)
                            diff = fixed[c, z, y, x] - warped[c, z, y, x]
                            gz = weight * (
                                take_f * (0.5 * (fixed[c, zp, y, x] - fixed[c, zm, y, x]))
                                + take_w * (0.5 * (warped[c, zp, y, x] - warped[c, zm, y, x]))
                            )
                            gy = weight * (
                                take_f * (0.5 * (fixed[c, z, yp, x] - fixed[c, z, ym, x]))
                                + take_w * (0.5 * (warped[c, z, yp, x] - warped[c, z, ym, x]))
                            )
                            gx = weight * (
                                take_f * (0.5 * (fixed[c, z, y, xp] - fixed[c, z, y, xm]))
                                + take_w * (0.5 * (warped[c, z, y, xp] - warped[c, z, y, xm]))
                            )
                            if sweep == 0:
                                norm2 = (gz * gz if first_axis == 0 else 0.0) + gy * gy + gx * gx
                                denom[y, x] += norm2 + diff * diff * k_inv
                            elif denom[y, x] > 1e-9:
                                scale = diff / denom[y, x]
                                if first_axis == 0:
                                    out[0, z, y, x] += np.float32(gz) * scale
                                out[1 - first_axis, z, y, x] += np.float32(gy) * scale
                                out[2 - first_axis, z, y, x] += np.float32(gx) * scale


def _exclusive(method):
    """Run a workspace method under the kernel lock with torch's thread count."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with warp_kernels.KERNEL_LOCK:
            warp_kernels.set_threads(torch.get_num_threads())
            return method(self, *args, **kwargs)

    return wrapper


class GreedyWorkspace:
    """Buffers for one level of shape ``spatial`` (``(Z, Y, X)`` or ``(Y, X)``), allocated once.

    Every method takes and returns ``(C, *spatial)`` float32 numpy arrays; fields have
    ``ndim`` components along tensor axes.
    """

    def __init__(self, spatial: tuple[int, ...]):
        if not AVAILABLE:
            raise RuntimeError("numba is not available; use the torch implementation")
        self.ndim = len(spatial)
        self.shape = (1,) * (3 - self.ndim) + tuple(spatial)
        self._first_axis = 3 - self.ndim
        self._stats = np.empty((5, *self.shape), np.float32)
        self._spare = np.empty((5, *self.shape), np.float32)
        self._field_tmp: np.ndarray | None = None  # smooth()'s scratch when the caller lends none
        self._row_max = np.empty(self.shape[0], np.float64)

    def _as3d(self, a: np.ndarray) -> np.ndarray:
        """``(C, *spatial)`` -> ``(C, Z, Y, X)`` view."""
        return a.reshape(a.shape[0], *self.shape)

    def _box(self, src: np.ndarray, spare: np.ndarray, channels: int, r: int) -> np.ndarray:
        """Box sums of ``src[:channels]`` along y then z (x was done by the caller); returns the result buffer."""
        box_kernels.box_y(src[:channels], spare[:channels], r)
        if self._first_axis == 0:
            box_kernels.box_z(spare[:channels], src[:channels], r)
            return src
        return spare

    @_exclusive
    def lncc_force(
        self, fixed: np.ndarray, warped: np.ndarray, window: int, out: np.ndarray, eps: float = 1e-5
    ) -> float:
        """Box LNCC loss ``-mean cc`` of ``(1, *spatial)`` fixed/warped; writes ``dL/dJ * grad J`` to
        ``out`` ``(ndim, *spatial)``."""
        i, j = self._as3d(fixed)[0], self._as3d(warped)[0]
        r = window // 2
        norm = 1.0 / float(window**self.ndim)
        box_kernels.box_x_of_lncc_terms(i, j, self._stats, r)
        stats = self._box(self._stats, self._spare, 5, r)
        terms = self._spare if stats is self._stats else self._stats
        cc_sum = _lncc_terms(stats, terms, norm, eps)
        other = stats
        box_kernels.box_x(terms, other, 4, r)
        summed = self._box(other, terms, 4, r)
        n_vox = float(i.size)
        _force(i, j, summed, norm, 1.0 / n_vox, self._as3d(out), self._first_axis)
        return -cc_sum / n_vox

    def smooth(
        self, field: np.ndarray, sigma: float | tuple[float, ...], scratch: np.ndarray | None = None
    ) -> None:
        """Gaussian-smooth ``field`` ``(n, *spatial)`` in place: ``sigma`` voxels (one for all axes, or one per
        spatial axis; 0 skips an axis), truncated at :data:`TRUNCATE` sigmas, replicate border
        (``regcore.spatial.smooth``'s compiled backend). ``scratch``: a free float32 buffer of ``field``'s shape
        to work in (its content is overwritten); without it the workspace allocates one once (one field more)."""
        sigmas = (
            tuple(float(s) for s in sigma) if isinstance(sigma, tuple | list) else (float(sigma),) * self.ndim
        )
        if len(sigmas) != self.ndim:
            raise ValueError(f"sigma must be one value or {self.ndim} (one per axis), got {sigma!r}")
        if all(s <= 0 for s in sigmas):
            return
        taps = [gaussian_kernel_1d(s, TRUNCATE).numpy() if s > 0 else None for s in sigmas]
        a = self._as3d(field)
        per_axis = (None, *taps) if self._first_axis == 1 else tuple(taps)
        if scratch is None:
            if self._field_tmp is None:
                self._field_tmp = np.empty((self.ndim, *self.shape), np.float32)
            scratch = self._field_tmp[: field.shape[0]]
        elif scratch.shape != field.shape or scratch.dtype != np.float32 or np.shares_memory(scratch, field):
            raise ValueError(f"scratch must be a separate float32 array of shape {field.shape}")
        out = smooth_kernels.separable_gaussian(a, self._as3d(scratch), per_axis, torch.get_num_threads())
        if out is not a:
            a[...] = out

    @_exclusive
    def adam_step(
        self,
        grad: np.ndarray,
        m: np.ndarray,
        v: np.ndarray,
        t: int,
        beta1: float,
        beta2: float,
        step_size: float,
        eps: float = 1e-8,
    ) -> None:
        """Turn ``grad`` in place into the step ``-step_size * d / max(1, max |d|)``; ``m``, ``v`` updated."""
        g3, m3, v3 = self._as3d(grad), self._as3d(m), self._as3d(v)
        _adam_direction(g3, m3, v3, beta1, beta2, 1.0 - beta1**t, 1.0 - beta2**t, eps, self._row_max)
        _scale(g3, -step_size / max(1.0, float(self._row_max.max())))

    @_exclusive
    def demons_force(
        self,
        fixed: np.ndarray,
        warped: np.ndarray,
        field: np.ndarray,
        mode: int,
        max_step: float,
        out: np.ndarray,
    ) -> None:
        """Demons force of ``(C, *spatial)`` fixed/warped (C > 1: MIND descriptors, the sums over channels of
        ``demons.demons_step``) into ``out`` ``(ndim, *spatial)``; ``mode`` 0 passive, 1 active, 2 symmetric;
        ``|out| <= max_step`` (K = 1 / (4 max_step^2)); 0 where ``field`` ``(ndim, *spatial)``, the displacement
        that made ``warped`` (voxels), maps outside the moving image; as ``demons.demons_step``."""
        _demons_force(
            self._as3d(fixed),
            self._as3d(warped),
            self._as3d(field),
            self._as3d(out),
            mode,
            1.0 / (4.0 * max_step**2),
            self._first_axis,
        )

    @_exclusive
    def gradient_step(self, grad: np.ndarray, step_size: float) -> None:
        """Turn ``grad`` in place into the step ``-step_size * grad / max |grad|`` (ANTs SyN's gradient step)."""
        largest = self.max_norm(grad)
        _scale(self._as3d(grad), -step_size / largest if largest > 0 else 0.0)

    @_exclusive
    def max_norm(self, field: np.ndarray) -> float:
        """Largest vector norm of ``field`` ``(ndim, *spatial)`` (voxels)."""
        _max_norm(self._as3d(field), self._row_max)
        return float(self._row_max.max())

    @_exclusive
    def compose(self, u: np.ndarray, step: np.ndarray, out: np.ndarray) -> None:
        """``out = step + u o (id + step)`` for ``(ndim, *spatial)`` voxel fields (``out`` distinct from both)."""
        warp_kernels.compose(u, step, out, torch.get_num_threads())
