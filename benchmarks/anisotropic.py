"""Thick-slice 3D images: the spacing-aware pyramid against the voxel-count pyramid, same run.

    nice -n 5 .venv/bin/python benchmarks/anisotropic.py
    nice -n 5 .venv/bin/python benchmarks/anisotropic.py --methods fireants demons --sets oasis_5mm

Default methods: affine, fireants, demons and SimpleITK demons (a peer; it sees the same two modes), plus the
variants ``fireants_mm`` and ``demons_mm`` (smoothing widths in mm, ``smooth_in_mm``; opt-in rows). bspline,
dense and svf take it too (``--methods``) but run on torch autograd: minutes per 1.4 M-voxel pair on 2 cores.

Clinical MR and CT often come as thin in-plane voxels and thick slices (0.5 x 0.5 x 7.5 mm). regcore's
pyramids shrink each axis towards isotropic voxels (``regcore.methods.classical.pyramid.axis_factors``);
a pyramid counted in voxels shrinks a 45-slice axis to 11 slices of 20 mm, or, when too few slices are
left, gets no coarse level at all. Each method runs twice on the same voxels:

* ``spacing``: the images as loaded (what regcore does);
* ``voxels``: the same arrays with the spacing hidden (1 mm on every axis), i.e. every pyramid counted in
  voxels (what regcore did before). Dice is computed on the label grid, so the two modes compare exactly.

Sets (from ../shared/data, or REGLAB_SHARED_DATA; none was used to choose anything):

* ``oasis_5mm``: the two labelled OASIS volumes made thick-slice along tensor axis 2 (Gaussian slice profile,
  FWHM 5 mm, every 5th slice: 160 x 192 x 45 at 1 x 1 x 5 mm), both directions, 35 labels.
* ``spine_t2star``: spine T2w (1 mm) -> T2* crop (0.5 x 0.5 x 7.5 mm, 49 x 54 x 9), spinal-cord masks.

Writes ``benchmarks/results/anisotropic.{json,md}``: mean Dice, SDlogJ, max folding %, median runtime per
method and mode, and the Dice difference spacing - voxels.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _results import write_results  # noqa: E402
from dev_benchmark import run_one, summarise  # noqa: E402
from dev_sets import spine_t2star_pair  # noqa: E402

from regcore.data.pairs import Pair  # noqa: E402
from regcore.image import Image  # noqa: E402
from regcore.io import load_image  # noqa: E402
from regcore.methods import registry  # noqa: E402
from regcore.spatial.smooth import gaussian_smooth  # noqa: E402

DATA = Path(os.environ.get("REGLAB_SHARED_DATA", ROOT.parent / "shared" / "data"))
SETS = ("oasis_5mm", "spine_t2star")
METHODS = ("affine", "fireants", "demons", "sitk_demons")
VARIANTS = {  # extra rows: name -> (registry method, overrides)
    "fireants_mm": ("fireants", {"smooth_in_mm": True}),
    "demons_mm": ("demons", {"smooth_in_mm": True}),
}
SLAB_MM = 5


def thick_slices(image: Image, axis: int = 2, every: int = SLAB_MM) -> Image:
    """Every ``every``-th slice along ``axis`` after a Gaussian slice profile of FWHM ``every`` voxels
    (label maps: the slices only); spacing along ``axis`` times ``every``."""
    data = image.data.float()
    if not image.is_labels:
        sigma = [0.0] * image.ndim
        sigma[axis] = every / 2.355
        data = gaussian_smooth(data[None], sigma, truncate=3.0)[0]
    keep = torch.arange(every // 2, image.shape[axis], every)
    thick = data.index_select(axis + 1, keep)[0]
    spacing = list(image.spacing)
    spacing[axis] *= every
    return Image.from_array(
        thick.to(image.data.dtype) if image.is_labels else thick,
        spacing=tuple(spacing),
        is_labels=image.is_labels,
        label_names=image.label_names or None,
        name=f"{image.name} ({every} mm slices)",
    )


def oasis_5mm_pairs() -> list[Pair]:
    d = DATA / "brain3d"
    img = {s: thick_slices(load_image(d / "images" / f"OASIS_OAS1_{s}_MR1.nii.gz")) for s in ("0455", "0456")}
    lab = {
        s: thick_slices(load_image(d / "labels" / f"OASIS_OAS1_{s}_MR1_seg35.nii.gz", is_labels=True))
        for s in ("0455", "0456")
    }
    return [
        Pair(
            name=f"OASIS {m} -> {f}, 1 x 1 x 5 mm",
            fixed=img[f],
            moving=img[m],
            fixed_labels=lab[f],
            moving_labels=lab[m],
        )
        for f, m in (("0455", "0456"), ("0456", "0455"))
    ]


def hide_spacing(pair: Pair) -> Pair:
    """The same arrays (all on the fixed grid) with 1 mm isotropic spacing, so every pyramid counts voxels."""

    def iso(image: Image) -> Image:
        return Image.from_array(
            image.data[0], spacing=1.0, is_labels=image.is_labels, label_names=image.label_names or None
        )

    return Pair(
        name=pair.name,
        fixed=iso(pair.fixed),
        moving=iso(pair.moving),
        fixed_labels=iso(pair.fixed_labels),
        moving_labels=iso(pair.moving_labels),
    )


def markdown(meta: dict, results: dict) -> str:
    lines = [
        "# Thick-slice 3D: spacing-aware pyramid vs voxel-count pyramid",
        "",
        f"`{meta['command']}`",
        "",
        f"{meta['date']}; {meta['threads']} threads; load average at the end {meta['load_average_1_5_15']}. "
        "`spacing` = regcore as it is; `voxels` = the same arrays with the spacing hidden (pyramids counted in "
        "voxels, regcore before). Identity is the same in both modes. fireants and demons smooth in voxels by "
        "default, so for them the two modes differ only in the pyramid; `_mm` rows smooth over the same width "
        "in mm on every axis (`smooth_in_mm`), as SimpleITK demons does; affine (its transform frame is in mm) "
        "also sees the hidden spacing elsewhere.",
    ]
    for name, res in results.items():
        lines += [
            "",
            f"## {name} ({res['pairs']} pairs)",
            "",
            "| method | Dice spacing | Dice voxels | difference | SDlogJ spacing / voxels | "
            "folding % max spacing / voxels | runtime s spacing / voxels |",
            "|---|---|---|---|---|---|---|",
        ]
        for method, by_mode in res["methods"].items():
            if "error" in by_mode:
                lines.append(f"| {method} | {by_mode['error']} ||||||")
                continue
            s, v = by_mode["spacing"], by_mode["voxels"]
            diff = (
                f"{s['dice_mean'] - v['dice_mean']:+.4f}"
                if s["dice_mean"] is not None and v["dice_mean"] is not None
                else "–"
            )
            lines.append(
                f"| {method} | {s['dice_mean']} | {v['dice_mean']} | {diff} | {s['sdlogj_mean']} / "
                f"{v['sdlogj_mean']} | {s['folding_percent_max']:.3f} / {v['folding_percent_max']:.3f} | "
                f"{s['runtime_median_s']} / {v['runtime_median_s']} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    ap.add_argument(
        "--methods",
        nargs="+",
        default=list(METHODS),
        help=f"registry methods or the variants {sorted(VARIANTS)}",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "anisotropic"))
    args = ap.parse_args(argv)
    if not (DATA / "brain3d").is_dir():
        print(f"skipped: {DATA} has no brain3d folder (set REGLAB_SHARED_DATA)")
        return 0
    known = {s.name for s in registry.all_specs()} | set(VARIANTS)
    unknown = sorted(set(args.methods) - known)
    if unknown:
        raise SystemExit(f"--methods: unknown method(s) {unknown}; known: {sorted(known)}")
    torch.set_num_threads(args.threads)
    results: dict = {}
    for name in args.sets:
        pairs = oasis_5mm_pairs() if name == "oasis_5mm" else [spine_t2star_pair()]
        modes = {"spacing": pairs, "voxels": [hide_spacing(p) for p in pairs]}
        per: dict = {}
        for method in ["identity", *args.methods]:
            try:
                spec, overrides = VARIANTS.get(method, (method, {}))
                per[method] = {
                    mode: summarise([run_one(spec, overrides, p) for p in mode_pairs])
                    for mode, mode_pairs in modes.items()
                }
            except Exception as exc:  # recorded, the run goes on
                per[method] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
            print(f"{name:12s} {method:12s} {per[method]}", flush=True)
        results[name] = {"pairs": len(pairs), "methods": per}
    meta = {
        "command": "nice -n 5 python benchmarks/anisotropic.py " + " ".join(argv or sys.argv[1:]),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "threads": args.threads,
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
        "torch": torch.__version__,
    }
    write_results(args.out, {"meta": meta, "sets": results}, markdown(meta, results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
