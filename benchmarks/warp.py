"""Speed and agreement of regcore's 3D warp against torch grid_sample and SimpleITK Resample.

Volume: ../shared/data brain3d OASIS 0455 (160x192x224, 1 mm) when present, else random
smooth data of the same size. Displacement: random smooth field, max |u| = --magnitude voxels.
Timed (medians over --repeats after a warm-up, all in this process, order interleaved so
machine-load drift hits every candidate alike):

* ``regcore.warp``           -- the library call, forward only (no autograd: the compiled numba kernel)
* ``regcore grid_sample slab path`` -- the autograd/fallback path (slabs as a batch, fused grid)
* ``grid_sample b1``         -- F.grid_sample at batch 1 on a PREBUILT grid (grid cost excluded)
* ``naive grid+grid_sample`` -- displacement_to_grid + grid_sample, what plain torch code does
* ``SimpleITK Resample``     -- sitk.DisplacementFieldTransform (same field in mm), linear
* ``... fwd+bwd``            -- forward + backward w.r.t. the displacement (optimisation path)

    nice .venv/bin/python benchmarks/warp.py                  # full size, 7 repeats
    .venv/bin/python benchmarks/warp.py --shape 96 112 128 --repeats 5

Writes benchmarks/results/warp.json and warp.md (threads, CPU model, date, load average).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from regcore.spatial import warp_kernels  # noqa: E402
from regcore.spatial.grid import displacement_to_grid  # noqa: E402
from regcore.spatial.warp import choose_slabs, warp  # noqa: E402

DATA = Path(os.environ.get("REGLAB_SHARED_DATA", ROOT.parent / "shared" / "data"))
BRAIN = DATA / "brain3d" / "images" / "OASIS_OAS1_0455_MR1.nii.gz"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_volume(shape: tuple[int, ...], use_data: bool) -> tuple[torch.Tensor, str]:
    """``(1, 1, *shape)`` float32 volume and a description of where it came from."""
    if use_data and BRAIN.is_file():
        import nibabel as nib

        arr = np.asarray(nib.load(str(BRAIN)).dataobj, dtype=np.float32)
        vol = torch.from_numpy(arr)[None, None]
        if tuple(vol.shape[2:]) != shape:
            vol = F.interpolate(vol, size=shape, mode="trilinear", align_corners=True)
        return vol.contiguous(), f"{BRAIN.name} ({'x'.join(map(str, shape))})"
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, 1, *[max(2, s // 8) for s in shape], generator=g)
    vol = F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)
    return vol.contiguous(), "random smooth volume"


def smooth_field(shape: tuple[int, ...], magnitude: float, seed: int = 1) -> torch.Tensor:
    """Random smooth ``(1, 3, *shape)`` voxel displacement with max |u| = magnitude (cubic-upsampled noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 3, *[max(2, s // 16) for s in shape], generator=g, dtype=torch.float64)
    u = F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)
    u = u / u.abs().amax(dim=(2, 3, 4), keepdim=True) * magnitude
    return u.float().contiguous()


def sitk_setup(vol: torch.Tensor, u: torch.Tensor, spacing: tuple[float, ...]):
    """SimpleITK image + DisplacementFieldTransform for the same field (mm, x = last tensor axis)."""
    image = sitk.GetImageFromArray(vol[0, 0].numpy())
    image.SetSpacing(tuple(reversed(spacing)))
    mm = u[0].double() * torch.tensor(spacing, dtype=torch.float64).view(3, 1, 1, 1)
    field = sitk.GetImageFromArray(mm.flip(0).permute(1, 2, 3, 0).numpy(), isVector=True)
    field.CopyInformation(image)
    return image, sitk.DisplacementFieldTransform(field)


def time_interleaved(candidates: dict, repeats: int) -> dict[str, dict[str, float]]:
    """Warm each candidate once, then run them round-robin ``repeats`` times."""
    for fn in candidates.values():
        fn()
    wall = {k: [] for k in candidates}
    cpu = {k: [] for k in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {
        k: {
            "median_s": statistics.median(wall[k]),
            "min_s": min(wall[k]),
            "cpu_median_s": statistics.median(cpu[k]),
        }
        for k in candidates
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", type=int, nargs=3, default=(160, 192, 224))
    p.add_argument("--magnitude", type=float, default=4.0, help="max |u| in voxels")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--no-data", action="store_true", help="use random data even if ../shared/data exists")
    p.add_argument("--no-grad", action="store_true", help="skip the forward+backward timings")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.repeats < 5:
        p.error("--repeats must be >= 5")
    shape = tuple(args.shape)
    spacing = (1.0, 1.0, 1.0)
    vol, source = load_volume(shape, not args.no_data)
    u = smooth_field(shape, args.magnitude)
    grid = displacement_to_grid(u).contiguous()
    image, transform = sitk_setup(vol, u, spacing)

    with torch.no_grad():
        ours = warp(vol, u)
        ref = F.grid_sample(vol, grid, mode="bilinear", padding_mode="border", align_corners=True)
        sitk_out = torch.from_numpy(
            sitk.GetArrayFromImage(sitk.Resample(image, image, transform, sitk.sitkLinear, 0.0))
        )
    m = int(np.ceil(args.magnitude)) + 2
    inner = (slice(m, -m),) * 3
    agreement = {
        "max_abs_diff_vs_grid_sample_interior": float((ours[0, 0][inner] - ref[0, 0][inner]).abs().max()),
        "max_abs_diff_vs_sitk_interior": float((ours[0, 0][inner] - sitk_out[inner]).abs().max()),
        "max_abs_diff_vs_grid_sample_whole": float((ours - ref).abs().max()),
        "border_margin_vox": m,
        "intensity_range": [float(vol.min()), float(vol.max())],
    }

    def ours_fwd():
        with torch.no_grad():
            warp(vol, u)

    def gs_prebuilt():
        with torch.no_grad():
            F.grid_sample(vol, grid, mode="bilinear", padding_mode="border", align_corners=True)

    def gs_naive():
        with torch.no_grad():
            F.grid_sample(
                vol, displacement_to_grid(u), mode="bilinear", padding_mode="border", align_corners=True
            )

    def sitk_resample():
        sitk.Resample(image, image, transform, sitk.sitkLinear, 0.0)

    slab_count = max(2, choose_slabs(vol, u))

    def ours_slabs():
        with torch.no_grad():
            warp(vol, u, slabs=slab_count)

    candidates = {
        "regcore.warp": ours_fwd,
        "regcore grid_sample slab path": ours_slabs,
        "grid_sample b1 (prebuilt grid)": gs_prebuilt,
        "naive grid + grid_sample": gs_naive,
        "SimpleITK Resample": sitk_resample,
    }
    if not args.no_grad:

        def ours_grad():
            d = u.clone().requires_grad_()
            warp(vol, d).sum().backward()

        def naive_grad():
            d = u.clone().requires_grad_()
            F.grid_sample(
                vol, displacement_to_grid(d), padding_mode="border", align_corners=True
            ).sum().backward()

        candidates["regcore.warp fwd+bwd"] = ours_grad
        candidates["naive fwd+bwd"] = naive_grad
    timings = time_interleaved(candidates, args.repeats)

    t = {k: v["median_s"] for k, v in timings.items()}
    ratios = {
        "grid_sample_b1_over_regcore": t["grid_sample b1 (prebuilt grid)"] / t["regcore.warp"],
        "naive_over_regcore": t["naive grid + grid_sample"] / t["regcore.warp"],
        "sitk_over_regcore": t["SimpleITK Resample"] / t["regcore.warp"],
    }
    if "naive fwd+bwd" in t:
        ratios["naive_fwd_bwd_over_regcore_fwd_bwd"] = t["naive fwd+bwd"] / t["regcore.warp fwd+bwd"]
    targets = {
        "grid_sample_b1_over_regcore >= 1.8": ratios["grid_sample_b1_over_regcore"] >= 1.8,
        "sitk_over_regcore >= 3": ratios["sitk_over_regcore"] >= 3.0,
        "agreement < 1e-4 interior": agreement["max_abs_diff_vs_grid_sample_interior"] < 1e-4,
    }
    env = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "sitk_threads": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(),
        "sitk": sitk.Version_VersionString(),
        "slabs": slab_count,
        "warp_backend": "numba" if warp_kernels.AVAILABLE else "torch",
        "load_average_1_5_15": list(os.getloadavg()),
        "python": platform.python_version(),
    }
    result = {
        "volume": source,
        "shape": list(shape),
        "magnitude_vox": args.magnitude,
        "repeats": args.repeats,
        "env": env,
        "timings": timings,
        "ratios": ratios,
        "agreement": agreement,
        "targets_met": targets,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "warp.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    (args.out / "warp.md").write_text(to_markdown(result), encoding="utf-8")
    print(to_markdown(result))
    return result


def to_markdown(r: dict) -> str:
    e = r["env"]
    lines = [
        "# Warp benchmark (3D, CPU)",
        "",
        f"{r['volume']}, random smooth displacement max |u| = {r['magnitude_vox']} vox; "
        f"median of {r['repeats']} interleaved repeats after warm-up.",
        "",
        f"- date {e['date']}; CPU {e['cpu_model']} ({e['cpu_count']} logical); torch {e['torch']} with "
        f"{e['torch_threads']} threads; regcore.warp backend {e.get('warp_backend', 'torch')} (slab path: {e['slabs']} slabs); SimpleITK {e['sitk']} with {e['sitk_threads']} threads",
        f"- load average during the run: {', '.join(f'{x:.2f}' for x in e['load_average_1_5_15'])} "
        "(absolute times are pessimistic when loaded; ratios within one run are the meaningful numbers)",
        "",
        "| candidate | median (ms) | min (ms) | CPU time median (ms) |",
        "|---|---:|---:|---:|",
    ]
    for name, v in r["timings"].items():
        lines.append(
            f"| {name} | {v['median_s'] * 1e3:.1f} | {v['min_s'] * 1e3:.1f} | {v['cpu_median_s'] * 1e3:.1f} |"
        )
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f}x |" for k, v in r["ratios"].items()]
    a = r["agreement"]
    lines += [
        "",
        f"Agreement (interior, {a['border_margin_vox']} vox margin): max |regcore - grid_sample| = "
        f"{a['max_abs_diff_vs_grid_sample_interior']:.2e}, max |regcore - SimpleITK| = "
        f"{a['max_abs_diff_vs_sitk_interior']:.2e} (intensity range {a['intensity_range'][0]:.3g}.."
        f"{a['intensity_range'][1]:.3g}).",
        "",
        "Targets: " + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in r["targets_met"].items()),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
