"""Quicksilver: does the student reproduce its teacher on HELD-OUT OASIS slices, and how much faster?

For held-out slice pairs (``regcore.data.slices.slice_pairs(split="held_out")``: positions the shipped
weights were never trained on), all on the model grid of the checkpoint (2 mm, its canvas):

* teacher (the checkpoint's ``family_config.teacher``, default settings): Dice and wall time;
* student (one forward pass of the shipped network): Dice and wall time, plus the full
  ``register`` call on the 1 mm slices (resampling in and out included);
* speed-up = median teacher time / median student forward time (same run, same thread count);
* mean |student - teacher| field difference (voxels of the 2 mm grid, Euclidean norm per voxel) over
  the canvas and over the fixed brain (fixed labels > 0), next to the zero-field baseline (mean |teacher|).
Dice: mean over the labels present in the fixed slice (regcore.train.objectives.dice_per_pair).

    nice -n 5 .venv/bin/python benchmarks/quicksilver.py [--checkpoint assets/models/quicksilver2d.pt]
        [--per-axis 4] [--threads 1]

Writes benchmarks/results/quicksilver.{json,md} and quicksilver_difference.png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _shared_data import shared_folder  # noqa: E402

from regcore.methods import registry  # noqa: E402
from regcore.methods.learned.quicksilver import run_teacher  # noqa: E402
from regcore.train.checkpoint import build_nets, load_checkpoint  # noqa: E402
from regcore.train.config import config_from_dict  # noqa: E402
from regcore.train.datasets import pair_to_sample  # noqa: E402
from regcore.train.objectives import dice_per_pair  # noqa: E402

OUT = ROOT / "benchmarks" / "results"


def _norm_mean(u: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Mean Euclidean length of ``(n, *T)`` over all voxels (or where ``mask`` ``(*T)`` is True)."""
    length = u.norm(dim=0)
    return float(length[mask].mean() if mask is not None else length.mean())


def _median_time(fn, repeats: int = 5) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def figure(row: dict, sample: dict, u_t: torch.Tensor, u_s: torch.Tensor, path: Path) -> None:
    """One held-out pair: fixed, moving, teacher- and student-warped, |teacher field|, |student - teacher|."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from regcore.spatial.warp import warp

    m = sample["moving"][None]
    panels = [
        ("fixed", sample["fixed"][0], "gray", None),
        ("moving", sample["moving"][0], "gray", None),
        (f"teacher warped (Dice {row['teacher_dice']:.3f})", warp(m, u_t[None])[0, 0], "gray", None),
        (f"student warped (Dice {row['student_dice']:.3f})", warp(m, u_s[None])[0, 0], "gray", None),
        ("|teacher field| (vox)", u_t.norm(dim=0), "magma", None),
        (f"|student - teacher| (vox), mean {row['diff_vox']:.2f}", (u_s - u_t).norm(dim=0), "magma", None),
    ]
    vmax = float(u_t.norm(dim=0).max())
    fig, axes = plt.subplots(1, 6, figsize=(18, 3.6))
    for ax, (title, img, cmap, _) in zip(axes, panels):
        kw = {"vmin": 0, "vmax": vmax} if cmap == "magma" else {"vmin": 0, "vmax": 1}
        im = ax.imshow(img.numpy(), cmap=cmap, **kw)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
        if cmap == "magma":
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"Quicksilver, held-out pair: {row['pair']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "assets" / "models" / "quicksilver2d.pt"))
    ap.add_argument("--per-axis", type=int, default=4, help="held-out positions per axis (x2 pair orders)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    brain3d = shared_folder("brain3d")
    if brain3d is None:
        return 0
    from regcore.data.slices import slice_pairs

    data = load_checkpoint(args.checkpoint)
    nets = build_nets(data, torch.device("cpu")).eval()
    fam = registry.get("quicksilver").factory().family
    fam_cfg = fam.make_config(data["family_config"])
    cfg = config_from_dict({k: v for k, v in data["config"].items() if k != "family_module"})
    teacher = fam_cfg.teacher
    pairs = slice_pairs(brain3d, "held_out", per_axis=args.per_axis)
    spec = registry.get("quicksilver")
    settings = spec.make_config({"checkpoint": str(args.checkpoint), "device": "cpu"})
    rows, shown = [], None
    for pair in pairs:
        s = pair_to_sample(pair, cfg)
        fl, ml = s["fixed_labels"][None], s["moving_labels"][None]
        u_t, t_teacher = run_teacher(s["fixed"], s["moving"], teacher, cfg.spacing_mm)
        with torch.no_grad():
            t_student = _median_time(lambda: fam.predict(nets, s["moving"][None], s["fixed"][None], fam_cfg))
            u_s = fam.predict(nets, s["moving"][None], s["fixed"][None], fam_cfg).displacement[0]
        t_register = _median_time(lambda: spec.factory().register(pair.fixed, pair.moving, settings), 3)
        full = spec.factory().register(pair.fixed, pair.moving, settings)
        ffl, fml = pair.fixed_labels.data[None].long(), pair.moving_labels.data[None].long()
        brain = s["fixed_labels"][0] > 0
        row = {
            "pair": pair.name,
            "identity_dice": float(dice_per_pair(fl, ml, torch.zeros_like(u_t[None]))[0]),
            "teacher_dice": float(dice_per_pair(fl, ml, u_t[None])[0]),
            "student_dice": float(dice_per_pair(fl, ml, u_s[None])[0]),
            "teacher_s": t_teacher,
            "student_forward_s": t_student,
            "student_register_s": t_register,
            "student_register_dice_1mm": float(dice_per_pair(ffl, fml, full.displacement)[0]),
            "identity_dice_1mm": float(dice_per_pair(ffl, fml, torch.zeros_like(full.displacement))[0]),
            "diff_vox": _norm_mean(u_s - u_t),
            "diff_vox_brain": _norm_mean(u_s - u_t, brain),
            "teacher_norm_vox": _norm_mean(u_t),
            "teacher_norm_vox_brain": _norm_mean(u_t, brain),
        }
        rows.append(row)
        print(
            f"{pair.name}: Dice id {row['identity_dice']:.3f} teacher {row['teacher_dice']:.3f} "
            f"student {row['student_dice']:.3f}; t {t_teacher:.3f}s vs {t_student * 1e3:.1f}ms; "
            f"|s-t| {row['diff_vox']:.3f} (|t| {row['teacher_norm_vox']:.3f})",
            flush=True,
        )
        if shown is None and pair.meta["axis"] == 0:
            shown = (row, s, u_t, u_s)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "pair"}
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "pair"}
    summary = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "nice -n 5 .venv/bin/python benchmarks/quicksilver.py " + " ".join(sys.argv[1:]),
        "threads": args.threads,
        "loadavg": os.getloadavg(),
        "checkpoint": str(Path(args.checkpoint).resolve().relative_to(ROOT))
        if Path(args.checkpoint).resolve().is_relative_to(ROOT)
        else str(args.checkpoint),
        "teacher": teacher,
        "held_out_pairs": len(rows),
        "model_grid": list(s["fixed"].shape[1:]),
        "median": med,
        "mean": mean,
        "speedup_forward": med["teacher_s"] / med["student_forward_s"],
        "speedup_register": med["teacher_s"] / med["student_register_s"],
        "dice_gain_over_identity": mean["student_dice"] - mean["identity_dice"],
        "teacher_dice_gain_over_identity": mean["teacher_dice"] - mean["identity_dice"],
        "rows": rows,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    if shown is not None:
        figure(*shown, OUT / "quicksilver_difference.png")
    (OUT / "quicksilver.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (OUT / "quicksilver.md").write_text(markdown(summary), encoding="utf-8")
    print(markdown(summary))
    return 0


def markdown(s: dict) -> str:
    m, a = s["median"], s["mean"]
    lines = [
        "# Quicksilver: student vs teacher on held-out OASIS slices",
        "",
        f"{s['date']}, threads {s['threads']}, load average {tuple(round(x, 1) for x in s['loadavg'])}.",
        f"Command: `{s['command']}`. Checkpoint `{s['checkpoint']}`, teacher `{s['teacher']}` (default "
        f"settings). {s['held_out_pairs']} held-out slice pairs (regcore.data.slices, split held_out), model "
        f"grid {s['model_grid']} at 2 mm; Dice = mean over labels present in the fixed slice.",
        "",
        "| measure | identity | teacher | student |",
        "|---|---|---|---|",
        f"| Dice, mean (model grid) | {a['identity_dice']:.3f} | {a['teacher_dice']:.3f} | {a['student_dice']:.3f} |",
        f"| Dice, median (model grid) | {m['identity_dice']:.3f} | {m['teacher_dice']:.3f} | "
        f"{m['student_dice']:.3f} |",
        f"| Dice, mean (1 mm slices, full `register`) | {a['identity_dice_1mm']:.3f} | - | "
        f"{a['student_register_dice_1mm']:.3f} |",
        f"| time per pair, median | - | {m['teacher_s'] * 1e3:.0f} ms | {m['student_forward_s'] * 1e3:.1f} ms "
        f"forward, {m['student_register_s'] * 1e3:.1f} ms `register` |",
        "",
        f"Speed-up (median teacher time / median student time): **{s['speedup_forward']:.0f}x** (forward), "
        f"{s['speedup_register']:.0f}x (full register call incl. resampling).",
        "",
        "Field difference |student - teacher| (voxels of the 2 mm grid, Euclidean length per voxel, mean over "
        "pairs); the zero field's difference is |teacher|:",
        "",
        "| region | student vs teacher | zero field vs teacher |",
        "|---|---|---|",
        f"| whole canvas | {a['diff_vox']:.3f} | {a['teacher_norm_vox']:.3f} |",
        f"| fixed brain (labels > 0) | {a['diff_vox_brain']:.3f} | {a['teacher_norm_vox_brain']:.3f} |",
        "",
        "Figure: `quicksilver_difference.png` (one held-out pair: fixed, moving, teacher- and student-warped, "
        "|teacher field| and |student - teacher|).",
        "",
        "## Per pair",
        "",
        "| pair | Dice id | Dice teacher | Dice student | teacher ms | student ms | |s-t| vox | |t| vox |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in s["rows"]:
        lines.append(
            f"| {r['pair']} | {r['identity_dice']:.3f} | {r['teacher_dice']:.3f} | {r['student_dice']:.3f} | "
            f"{r['teacher_s'] * 1e3:.0f} | {r['student_forward_s'] * 1e3:.1f} | {r['diff_vox']:.3f} | "
            f"{r['teacher_norm_vox']:.3f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
