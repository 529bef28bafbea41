"""Model-zoo benchmark: every learned family next to classical methods on held-out real 2D pairs.

    .venv/bin/python benchmarks/zoo.py [--per-axis 4] [--classical affine,fireants,demons,sitk_demons]
        [--learned a,b] [--io voxelmorph,transmorph --io-iterations 25]

Pairs: 2D slices of the two labelled OASIS volumes in ../shared/data/brain3d at HELD-OUT slice
positions (``regcore.data.slices``: no learned model is trained, and no default tuned, on those
positions), along all three axes, both directions. Every method runs on the same pairs in the
same process; per method: mean Dice over the labels of each pair (then over pairs), HD95 (mm),
folding %, SDlogJ, median registration time (ms), peak memory, parameters and training minutes (learned).
``--io`` adds "<family>+IO" rows: the same network refined on each pair by instance optimisation
(``refine_iterations``). A method that fails on a pair is reported with its error, not dropped silently.
Writes benchmarks/results/zoo.json and zoo.md (command, date, CPU threads and load at the top).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _shared_data import shared_folder  # noqa: E402

from regcore.data.slices import slice_pairs  # noqa: E402
from regcore.methods import registry  # noqa: E402
from regcore.methods.learned.family import all_families  # noqa: E402
from regcore.metrics import evaluate_identity  # noqa: E402
from regcore.register import run_pair  # noqa: E402

KEYS = ("dice_mean", "hd95_mean_mm", "folding_percent", "sdlogj")


def learned_methods() -> list[str]:
    """Families that can register a 2D pair here: shipped default weights, or no training needed."""
    out = []
    for fam in all_families():
        if 2 not in fam.dims:
            continue
        if fam.needs_training and not registry.get(fam.name).factory().default_checkpoint(2).is_file():
            continue
        out.append(fam.name)
    return out


def model_facts(name: str) -> dict:
    """Parameters and training minutes of a learned method's default weights."""
    spec = registry.get(name)
    method, cfg = spec.factory(), spec.make_config()
    nets, _, data = method.networks(cfg, 2, torch.device("cpu"))
    return {
        "parameters": int(sum(p.numel() for p in nets.parameters())),
        "train_minutes": round(float(data.get("elapsed_s", 0.0)) / 60.0, 1) if data else 0.0,
    }


def summarise(rows: list[dict]) -> dict:
    out = {k: float(np.nanmean([r[k] if r.get(k) is not None else np.nan for r in rows])) for k in KEYS}
    out["runtime_ms_median"] = statistics.median(r["runtime_s"] for r in rows) * 1e3
    out["peak_mb_median"] = statistics.median(float(r.get("peak_mb") or 0.0) for r in rows)
    out["pairs"] = len(rows)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--per-axis", type=int, default=4, help="held-out positions per axis (pairs = 3 x 2 x this)"
    )
    ap.add_argument("--classical", default="affine,fireants,demons,sitk_demons")
    ap.add_argument(
        "--learned",
        default="",
        help="comma-separated learned methods (default: every family with default 2D weights)",
    )
    ap.add_argument("--io", default="", help="learned methods also run with instance optimisation (+IO rows)")
    ap.add_argument("--io-iterations", type=int, default=25, help="instance-optimisation steps of +IO rows")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    folder = shared_folder("brain3d")
    if folder is None:
        return 0
    torch.set_num_threads(2)
    pairs = slice_pairs(folder, "held_out", per_axis=args.per_axis)
    methods = [m for m in args.classical.split(",") if m] + (
        [m for m in args.learned.split(",") if m] or learned_methods()
    )
    methods += [f"{m}+IO" for m in args.io.split(",") if m]
    errors: dict[str, str] = {}
    per_pair: dict[str, list[dict]] = {"identity": []}
    for pair in pairs:
        m = evaluate_identity(
            pair.fixed,
            pair.moving,
            fixed_labels=pair.fixed_labels,
            moving_labels=pair.moving_labels,
            label_names=pair.label_names,
        )
        per_pair["identity"].append({**{k: m.get(k) for k in KEYS}, "runtime_s": 0.0})
    for name in methods:
        method, overrides = name.removesuffix("+IO"), {}
        if name.endswith("+IO"):
            overrides = {"refine_iterations": args.io_iterations}
        rows = []
        try:
            for pair in pairs:
                result, m = run_pair(pair, method, overrides, device="cpu")
                rows.append(
                    {
                        **{k: m.get(k) for k in KEYS},
                        "runtime_s": m["runtime_s"],
                        "peak_mb": result.peak_memory_mb,
                    }
                )
        except Exception as e:  # noqa: BLE001 - one failing method must not lose the others' numbers
            errors[name] = f"{type(e).__name__}: {e}"
            print(f"{name:<14} FAILED: {errors[name]}", flush=True)
            continue
        per_pair[name] = rows
        print(f"{name:<14} Dice {summarise(rows)['dice_mean']:.3f}", flush=True)
    table = {name: summarise(rows) for name, rows in per_pair.items()}
    learned = set(learned_methods())
    for name in table:
        if name.removesuffix("+IO") in learned:
            table[name].update(model_facts(name.removesuffix("+IO")))
    ident = per_pair["identity"]
    for name, rows in per_pair.items():
        table[name]["pairs_above_identity"] = int(
            sum(r["dice_mean"] > i["dice_mean"] for r, i in zip(rows, ident))
        )
    result = {
        "command": "python benchmarks/zoo.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "loadavg": os.getloadavg(),
        "pairs": [p.name for p in pairs],
        "table": table,
        "errors": errors,
        "per_pair": per_pair,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "zoo.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    lines = [
        "# Model zoo on held-out real 2D slice pairs",
        "",
        f"`{result['command']}` on {result['date']}, {result['threads']} threads, load {result['loadavg']}.",
        f"{len(pairs)} pairs: OASIS 0455/0456 slices at held-out positions (regcore.data.slices), 3 axes, "
        "both directions; no model was trained on these positions.",
        "Peak MiB: the most memory the registration held allocated at once above what the process held before "
        "(regcore.memory_peak, sampled every 10 ms: for runs of a few ms it is what the result keeps, a lower "
        "bound).",
        "",
        "| method | Dice | HD95 mm | folding % | SDlogJ | time ms (median) | peak MiB (median) | pairs > identity | "
        "parameters | training min |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, t in table.items():
        lines.append(
            f"| {name} | {t['dice_mean']:.3f} | {t['hd95_mean_mm']:.2f} | {t['folding_percent']:.3f} | "
            f"{t['sdlogj']:.3f} | {t['runtime_ms_median']:.0f} | {t['peak_mb_median']:.0f} | "
            f"{t['pairs_above_identity']}/{t['pairs']} | {t.get('parameters', '')} | {t.get('train_minutes', '')} |"
        )
    lines += [f"- {name} failed: {err}" for name, err in errors.items()]
    (args.out / "zoo.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
