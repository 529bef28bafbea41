"""Learned-registration benchmark (issue 6 targets); writes results/learned.json and .md.

    nice .venv/bin/python benchmarks/learned.py [--train-minutes 5] [--skip-train]

1. Sample brain 2D (regcore.data, 2 mm): Dice before / best classical affine / affine_net, then
   train VoxelMorph for ``--train-minutes`` of CPU time on the other pairs and evaluate it on
   held-out pairs (target: Dice above the best affine within 5 minutes).
2. Inference time per 2D pair (target <= 50 ms): network forward and full ``register`` call.
3. Real OASIS 2D pair (../shared/data/brain2d, 0456 -> 0455; a held-out slice position): shipped models
   vs classical affine (target: learned models raise Dice over affine). Skipped when absent.
4. 3D at 2 mm: VoxelMorph inference time per pair on 2 threads (target <= 3 s).
All timings are wall-clock on this machine with ``torch.set_num_threads(2)``; on a shared
machine they are pessimistic (the load average is recorded with the results).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from regcore.methods import registry  # noqa: E402
from regcore.train.objectives import dice_per_pair  # noqa: E402

SHARED = Path(os.environ.get("REGLAB_SHARED_DATA", ROOT.parent / "shared" / "data"))
VAL_PAIRS = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]


def _dice(pair_fl, pair_ml, u) -> float:
    return float(dice_per_pair(pair_fl, pair_ml, u).mean())


def _run(name, fixed, moving, overrides=None):
    spec = registry.get(name)
    return spec.factory().register(fixed, moving, spec.make_config(overrides or {}))


def _timeit(fn, repeats=10) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def brain_sample(train_minutes: float, skip_train: bool, out: dict) -> None:
    from regcore.data import sample_pair
    from regcore.train import run_training

    pairs = [sample_pair("brain", 2, f, m, resolution_mm=2.0) for f, m in VAL_PAIRS]
    lab = lambda im: im.data[None].long()  # noqa: E731
    rows = {"identity": [], "affine": [], "affine_net": []}
    for p in pairs:
        zero = torch.zeros(1, 2, *p.fixed.shape)
        rows["identity"].append(_dice(lab(p.fixed_labels), lab(p.moving_labels), zero))
        for name in ("affine", "affine_net"):
            r = _run(name, p.fixed, p.moving)
            rows[name].append(_dice(lab(p.fixed_labels), lab(p.moving_labels), r.displacement))
    res = {k: float(np.mean(v)) for k, v in rows.items()}
    if not skip_train:
        with tempfile.TemporaryDirectory() as tmp:
            recipe = {
                "family": "voxelmorph",
                "dims": 2,
                "data": "brain",
                "spacing_mm": 2.0,
                "train_shape": [80, 96],
                "supervision": "weak",
                "epochs": 1000,
                "steps_per_epoch": 25,
                "batch_size": 4,
                "lr": 0.002,
                "val_pairs": 5,
                "seed": 0,
                "device": "cpu",
                "threads": 2,
                "time_limit_min": train_minutes,
            }
            cfg = Path(tmp) / "recipe.json"
            cfg.write_text(json.dumps(recipe), encoding="utf-8")
            t = time.perf_counter()
            weights = run_training(cfg, Path(tmp) / "run")
            res["train_wall_s"] = time.perf_counter() - t
            vm = []
            for p in pairs:
                r = _run("voxelmorph", p.fixed, p.moving, {"checkpoint": str(weights)})
                vm.append(_dice(lab(p.fixed_labels), lab(p.moving_labels), r.displacement))
            res["voxelmorph_trained"] = float(np.mean(vm))
            res["recipe"] = recipe
            res["note"] = (
                "validation = pairs (0,1),(2,3),...; training draws all ordered pairs of the 10 subjects, "
                "so validation pairs are seen in training (the sample set has 10 subjects)"
            )
    res["best_affine"] = max(res["affine"], res["affine_net"])
    out["brain_sample_2d"] = res


def inference_2d(out: dict) -> None:
    from regcore.data import sample_pair
    from regcore.methods.learned.family import all_families
    from regcore.train.checkpoint import CheckpointError

    p = sample_pair("brain", 2, 0, 1, resolution_mm=2.0)
    res = {}
    for fam in (f for f in all_families() if f.needs_training and 2 in f.dims):
        name = fam.name
        spec = registry.get(name)
        method, cfg = spec.factory(), spec.make_config()
        try:
            nets, fam_cfg, _ = method.networks(cfg, 2, torch.device("cpu"))
        except CheckpointError as exc:  # e.g. label_driven ships 3D weights only: recorded, not timed
            res[name] = {"skipped": str(exc).split(";")[0]}
            continue
        div = fam.divisor(2, fam_cfg)
        x = torch.rand(1, 1, *[-(-n // div) * div for n in p.fixed.shape])  # padded model grid
        with torch.no_grad():
            fwd = _timeit(lambda: fam.predict(nets, x, x, fam_cfg))
        reg = _timeit(lambda: method.register(p.fixed, p.moving, cfg))
        res[name] = {"forward_ms": fwd * 1e3, "register_ms": reg * 1e3, "shape": list(p.fixed.shape)}
    out["inference_2d"] = res


def oasis_2d(out: dict) -> None:
    import nibabel as nib

    from regcore.image import Image

    d = SHARED / "brain2d"
    if not d.is_dir():
        out["oasis_2d"] = {"skipped": f"{d} not found"}
        return
    load = lambda p: np.asarray(nib.load(d / p).dataobj).squeeze()  # noqa: E731
    fixed = Image.from_array(load("images/OASIS_OAS1_0455_MR1_axial103.nii.gz").astype(np.float32))
    moving = Image.from_array(load("images/OASIS_OAS1_0456_MR1_axial103.nii.gz").astype(np.float32))
    fl = torch.from_numpy(load("labels/OASIS_OAS1_0455_MR1_axial103_seg35.nii.gz").astype(np.int64))[
        None, None
    ]
    ml = torch.from_numpy(load("labels/OASIS_OAS1_0456_MR1_axial103_seg35.nii.gz").astype(np.int64))[
        None, None
    ]
    res = {"identity": _dice(fl, ml, torch.zeros(1, 2, *fixed.shape))}
    for name in ("affine", "affine_net", "voxelmorph", "transmorph"):
        r = _run(name, fixed, moving)
        res[name] = _dice(fl, ml, r.displacement)
    out["oasis_2d"] = res


def inference_3d(out: dict) -> None:
    from regcore.methods.learned.family import get_family

    res = {}
    fam = get_family("voxelmorph")
    for diffeo in (False, True):
        cfg = fam.make_config({"diffeomorphic": diffeo})
        nets = fam.build(3, cfg).eval()
        x = torch.rand(1, 1, 80, 96, 112)  # 160x192x224 at 1 mm -> 2 mm
        with torch.no_grad():
            res["diffeomorphic" if diffeo else "dense"] = {
                "forward_s": _timeit(lambda: fam.predict(nets, x, x, cfg), repeats=3),
                "shape": [80, 96, 112],
            }
    out["inference_3d_2mm"] = res


def write(out: dict) -> None:
    d = ROOT / "benchmarks" / "results"
    d.mkdir(parents=True, exist_ok=True)
    (d / "learned.json").write_text(json.dumps(out, indent=2), encoding="utf-8")
    lines = [
        "# Learned registration benchmark",
        "",
        f"Load average at start: {out['loadavg']}; threads: 2.",
        "",
    ]
    b = out.get("brain_sample_2d", {})
    if b:
        lines += ["## Sample brain 2D (2 mm), mean Dice over 5 pairs", "", "| method | Dice |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in b.items() if isinstance(v, float) and k != "train_wall_s"]
        lines += ["", f"VoxelMorph training wall time: {b.get('train_wall_s', float('nan')):.0f} s", ""]
    o = out.get("oasis_2d", {})
    if o and "skipped" not in o:
        lines += [
            "## Real OASIS 2D pair (0456 -> 0455), mean Dice over 35 labels",
            "",
            "| method | Dice |",
            "|---|---|",
        ]
        lines += [f"| {k} | {v:.3f} |" for k, v in o.items()]
        lines += [""]
    inf = out.get("inference_2d", {})
    if inf:
        lines += [
            "## 2D inference, shipped weights (median; sample brain pair, 2 mm)",
            "",
            "| family | network forward ms | whole `register` ms |",
            "|---|---|---|",
        ]
        for name, r in inf.items():
            if "skipped" in r:
                lines.append(f"| {name} | {r['skipped']} | |")
            else:
                lines.append(f"| {name} | {r['forward_ms']:.1f} | {r['register_ms']:.1f} |")
        lines += [""]
    if "inference_3d_2mm" in out:
        lines += [
            "## 3D inference at 2 mm",
            "",
            "```",
            json.dumps(out["inference_3d_2mm"], indent=1),
            "```",
            "",
        ]
    (d / "learned.md").write_text("\n".join(lines), encoding="utf-8")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-minutes", type=float, default=5.0)
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--only", choices=("brain", "inference2d", "oasis", "inference3d"), nargs="*")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    out = {"loadavg": os.getloadavg(), "torch": torch.__version__}
    steps = {
        "oasis": oasis_2d,
        "inference2d": inference_2d,
        "inference3d": inference_3d,
        "brain": lambda o: brain_sample(args.train_minutes, args.skip_train, o),
    }
    for name in args.only or ("oasis", "inference2d", "inference3d", "brain"):
        steps[name](out)
        write(out)
        print(json.dumps({k: out[k] for k in out if k != "loadavg"}, indent=1)[-1500:], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
