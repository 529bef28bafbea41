"""Accuracy/speed benchmark of regcore's classical methods on real brain MRI.

3D: OASIS 0455 <-> 0456 (both directions), 160x192x224 at 1 mm, 35 labels; 2D: axial slice 103,
moving 0456 -> fixed 0455. Metrics: mean Dice over the labels present in either image (moving labels
warped by nearest neighbour), % voxels with det(J) <= 0, runtime of ``register`` (s).

    nice .venv/bin/python benchmarks/classical_3d.py                       # default methods, 3D + 2D
    .venv/bin/python benchmarks/classical_3d.py --methods fireants --dims 3
    .venv/bin/python benchmarks/classical_3d.py --set fireants:iterations=100,50,0
    .venv/bin/python benchmarks/classical_3d.py --dims 3 --methods identity fireants voxelmorph voxelmorph+IO
        --out benchmarks/results/learned_3d         # learned 3D weights (+IO: instance optimisation)

Needs ../shared/data (or REGLAB_SHARED_DATA); writes benchmarks/results/classical_3d.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from regcore.image import Image  # noqa: E402
from regcore.methods import registry  # noqa: E402
from regcore.spatial.warp import warp_labels  # noqa: E402

DATA = Path(os.environ.get("REGLAB_SHARED_DATA", ROOT.parent / "shared" / "data"))
DEFAULT_METHODS = ("identity", "affine", "dense", "svf", "mind_convex", "fireants")


def load(path: Path, labels: bool = False) -> Image:
    """The file with its geometry (learned 3D models reorient by it; classical methods ignore it)."""
    from regcore.io import load_image

    return load_image(path, is_labels=labels)


def dice_per_label(fixed_labels: np.ndarray, warped_labels: np.ndarray) -> dict[int, float]:
    """Dice of every non-zero label present in either map (``regcore.metrics``; fallback here)."""
    try:
        from regcore.metrics.overlap import dice_per_label as metrics_dice

        return metrics_dice(fixed_labels, warped_labels)
    except ImportError:
        pass
    present = sorted(set(np.unique(fixed_labels)) | set(np.unique(warped_labels)) - {0})
    out = {}
    for lab in present:
        if lab == 0:
            continue
        a, b = fixed_labels == lab, warped_labels == lab
        denom = a.sum() + b.sum()
        out[int(lab)] = float(2.0 * np.logical_and(a, b).sum() / denom) if denom else 1.0
    return out


def folding_percent(disp: torch.Tensor) -> float:
    """% voxels with det(I + grad u) <= 0 (central differences), ``disp`` ``(1, ndim, *S)`` voxels."""
    try:
        from regcore.metrics.deformation import folding_percent as metrics_folding

        return metrics_folding(disp)
    except ImportError:
        pass
    try:
        from regcore.spatial.jacobian import jacobian_determinant

        det = jacobian_determinant(disp)
    except ImportError:
        ndim = disp.shape[1]
        grads = [torch.gradient(disp[0, i], dim=tuple(range(ndim))) for i in range(ndim)]
        jac = torch.stack([torch.stack(g, -1) for g in grads], -2) + torch.eye(ndim)
        det = torch.linalg.det(jac)
    return float((det <= 0).float().mean() * 100.0)


def run_case(method: str, overrides: dict, fixed, moving, fixed_lab, moving_lab) -> dict:
    if method == "identity":
        disp = torch.zeros(1, fixed.ndim, *fixed.shape)
        runtime, cpu, device = 0.0, 0.0, "cpu"
    else:
        spec = registry.get(method.removesuffix("+IO"))
        cfg = spec.make_config(overrides)
        t0, c0 = time.perf_counter(), time.process_time()
        result = spec.factory().register(fixed, moving, cfg)
        runtime, cpu = time.perf_counter() - t0, time.process_time() - c0
        disp, device = result.displacement, result.device
    warped = warp_labels(moving_lab.data[None], disp)[0, 0].numpy()
    dice = dice_per_label(fixed_lab.numpy(), warped)
    return {
        "method": method,
        "dice_mean": float(np.mean(list(dice.values()))),
        "n_labels": len(dice),
        "folding_percent": folding_percent(disp),
        "runtime_s": runtime,
        "cpu_s": cpu,
        "device": device,
        "overrides": overrides,
    }


def parse_sets(items: list[str]) -> dict[str, dict]:
    """``method:key=value`` -> {method: {key: value}} (values parsed by the method's config)."""
    out: dict[str, dict] = {}
    for item in items:
        method, _, kv = item.partition(":")
        key, _, value = kv.partition("=")
        if not key or not value:
            raise SystemExit(f"--set expects method:key=value, got {item!r}")
        out.setdefault(method, {})[key] = value
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    ap.add_argument("--dims", nargs="+", type=int, default=[3, 2])
    ap.add_argument("--set", nargs="*", default=[], help="method:key=value config overrides")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--io-iterations",
        type=int,
        default=25,
        help="instance-optimisation steps of learned 'name+IO' methods",
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "classical_3d"))
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        print(f"shared data not found at {DATA}; set REGLAB_SHARED_DATA", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    sets = parse_sets(args.set)
    cases = []
    if 3 in args.dims:
        a, b = "OASIS_OAS1_0455_MR1", "OASIS_OAS1_0456_MR1"
        img = {k: load(DATA / "brain3d/images" / f"{k}.nii.gz") for k in (a, b)}
        lab = {k: load(DATA / "brain3d/labels" / f"{k}_seg35.nii.gz", True) for k in (a, b)}
        cases += [
            ("3D 0456->0455", img[a], img[b], lab[a], lab[b]),
            ("3D 0455->0456", img[b], img[a], lab[b], lab[a]),
        ]
    if 2 in args.dims:
        a, b = "OASIS_OAS1_0455_MR1_axial103", "OASIS_OAS1_0456_MR1_axial103"
        cases.append(
            (
                "2D 0456->0455",
                load(DATA / "brain2d/images" / f"{a}.nii.gz"),
                load(DATA / "brain2d/images" / f"{b}.nii.gz"),
                load(DATA / "brain2d/labels" / f"{a}_seg35.nii.gz", True),
                load(DATA / "brain2d/labels" / f"{b}_seg35.nii.gz", True),
            )
        )
    rows = []
    for name, fixed, moving, fixed_lab, moving_lab in cases:
        for method in args.methods:
            overrides = dict(sets.get(method, {}))
            if method.endswith("+IO"):  # a learned method + instance optimisation
                overrides.setdefault("refine_iterations", args.io_iterations)
            row = {"case": name, **run_case(method, overrides, fixed, moving, fixed_lab, moving_lab)}
            rows.append(row)
            print(
                f"{name:14s} {method:12s} dice {row['dice_mean']:.4f}  folding {row['folding_percent']:.3f} %  "
                f"{row['runtime_s']:6.2f} s wall, {row['cpu_s']:6.2f} s CPU  ({row['n_labels']} labels)",
                flush=True,
            )
    meta = {
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2), encoding="utf-8")
    lines = [
        "| case | method | mean Dice | folding % | wall s | CPU s (all threads) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['case']} | {r['method']} | {r['dice_mean']:.3f} | {r['folding_percent']:.3f} | "
        f"{r['runtime_s']:.1f} | {r['cpu_s']:.1f} |"
        for r in rows
    ]
    out.with_suffix(".md").write_text(
        f"# Classical methods on OASIS brain MRI\n\n{meta['threads']} CPU threads, torch {meta['torch']}, "
        f"{meta['date']}, 1-min load average at the end {meta['load_average']}.\n\n"
        + "\n".join(lines)
        + "\n",
        encoding="utf-8",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
