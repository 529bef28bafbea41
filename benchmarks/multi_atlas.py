"""Multi-atlas segmentation benchmark: leave-one-out label fusion vs single atlases.

1. Sample brains (``sample_data/brain/2d_2mm``, 10 synthetic subjects, 24 structures): each subject in turn
   is the target, the 9 others are atlases registered to it (demons, ``engine="inline"``: run_registration
   in a loop, the same code ``regcore.segment.segment`` runs). Reported per structure and as a mean, over the
   10 targets: majority vote, STAPLE (SimpleITK), locally weighted voting (Gaussian-windowed SSD -> softmax),
   JLF-style weighted voting (``joint=True``), the learned VoteNet fusion, the best single atlas (per target the
   atlas with the highest mean Dice: an oracle no real pipeline has) and the mean single atlas.
   The VoteNet for target t is trained on registrations among the OTHER 9 subjects only (atlas j warped to
   subject i, i, j != t): the target's image and labels never enter its training; the reported Dice is
   held out.
2. Real data (``../shared/data/brain3d``, OASIS 0455/0456, skipped when absent): only two labelled subjects,
   so the atlases of a target slice are the OTHER subject's slices at nearby positions (p-6 .. p+6, step 3,
   axis 1 = the axial slices of ``brain2d``; position 103 is in the held-out split of
   ``regcore.data.slices``). Both directions. No learned fusion there (nothing left to train on).

    .venv/bin/python -m regcore.data.samples --quiet      # once, if sample_data is missing
    .venv/bin/python benchmarks/multi_atlas.py             # ~3-4 min on 2 loaded cores

Writes benchmarks/results/multi_atlas.json and multi_atlas.md. Registrations are cached in
``--cache`` (default: a file in the system temp folder), so a second run only refits the fusions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pickle
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = Path(os.environ.get("REGLAB_SHARED_DATA", ROOT.parent / "shared" / "data"))
REAL_SUBJECTS = ("OASIS_OAS1_0455_MR1", "OASIS_OAS1_0456_MR1")
REAL_AXIS, REAL_POSITION, REAL_OFFSETS = 1, 103, (-6, -3, 0, 3, 6)
FUSIONS = ("majority", "staple", "weighted", "weighted_jlf", "learned")


def nanmean(d) -> float:
    vals = [v for v in (d.values() if isinstance(d, dict) else d) if v == v]
    return float(np.mean(vals)) if vals else float("nan")


def register_all(targets, atlases_of, method, overrides, log) -> dict:
    """{target name: [WarpedAtlas]} for every target (its atlases from ``atlases_of(name)``)."""
    from regcore.segment.multi_atlas import warp_atlases

    out = {}
    for k, (name, image, labels) in enumerate(targets):
        t0 = time.perf_counter()
        warped, warnings = warp_atlases(
            image, atlases_of(name), method, overrides, target_labels=labels, engine="inline"
        )
        out[name] = warped
        log(
            f"  [{k + 1}/{len(targets)}] {name}: {len(warped)} atlases in {time.perf_counter() - t0:.1f} s"
            + (f" ({'; '.join(warnings)})" if warnings else "")
        )
    return out


def fuse_fold(image, labels, warped, learned=None) -> dict[str, dict[int, float]]:
    from regcore.metrics.overlap import dice_per_label
    from regcore.segment.multi_atlas import fuse

    truth = labels.data[0].numpy()
    present = [int(v) for v in np.unique(truth) if v != 0]
    runs = {
        "majority": lambda: fuse(image, warped, "majority"),
        "staple": lambda: fuse(image, warped, "staple"),
        "weighted": lambda: fuse(image, warped, "weighted"),
        "weighted_jlf": lambda: fuse(image, warped, "weighted", joint=True),
    }
    if learned is not None:
        runs["learned"] = lambda: fuse(image, warped, "learned", learned=learned)
    out = {}
    for name, run in runs.items():
        out[name] = dice_per_label(truth, run().labels, present)
    return out


def summarise(folds: list[dict], label_names: dict[int, str]) -> dict:
    """Per-structure means over folds for each fusion and the single-atlas baselines."""
    methods = [m for m in FUSIONS if all(m in f["fused"] for f in folds)]
    labels = sorted({lab for f in folds for lab in f["fused"]["majority"]})
    columns = methods + ["best single atlas", "mean single atlas"]
    per_structure = []
    for lab in labels:
        row = {"label": lab, "structure": label_names.get(lab, str(lab))}
        for m in methods:
            row[m] = nanmean([f["fused"][m].get(lab, np.nan) for f in folds])
        row["best single atlas"] = nanmean([f["best_atlas_dice"].get(lab, np.nan) for f in folds])
        row["mean single atlas"] = nanmean(
            [nanmean([d.get(lab, np.nan) for d in f["atlas_dice"]]) for f in folds]
        )
        per_structure.append(row)
    mean = {c: nanmean([f["mean"][c] for f in folds]) for c in columns}
    return {"columns": columns, "mean": mean, "per_structure": per_structure}


def fold_record(name, fused, warped) -> dict:
    atlas_dice = [w.dice for w in warped]
    means = [nanmean(d) for d in atlas_dice]
    best = int(np.argmax(means))
    mean = {m: nanmean(d) for m, d in fused.items()}
    mean["best single atlas"] = means[best]
    mean["mean single atlas"] = float(np.mean(means))
    return {
        "target": name,
        "best_atlas": warped[best].name,
        "fused": fused,
        "atlas_dice": atlas_dice,
        "best_atlas_dice": atlas_dice[best],
        "mean": mean,
    }


def sample_benchmark(args, log) -> dict:
    from regcore.data import sample_pair
    from regcore.segment.learned_fusion import make_examples, train_votenet
    from regcore.segment.multi_atlas import Atlas

    subjects = []
    for k in range(args.subjects):
        p = sample_pair("brain", 2, k, k, resolution_mm=2.0)
        subjects.append((p.meta["fixed_subject"], p.fixed, p.fixed_labels))
    label_names = dict(p.label_names or {})
    atlas = {n: Atlas(n, img, lab) for n, img, lab in subjects}
    overrides = dict(args.overrides)
    key = f"sample-{args.subjects}-{args.method}-{sorted(overrides.items())}"
    cache = _load_cache(args.cache, key)
    t0 = time.perf_counter()
    if cache is None:
        log(
            f"registering {args.subjects} x {args.subjects - 1} ordered pairs ({args.method} {overrides}) ..."
        )
        warped = register_all(
            subjects, lambda n: [a for m, a in atlas.items() if m != n], args.method, overrides, log
        )
        _save_cache(args.cache, key, warped)
        reg_s, cached = time.perf_counter() - t0, False
    else:
        warped, reg_s, cached = cache, 0.0, True
        log(f"registrations reused from {args.cache}")
    runtimes = [w.runtime_s for ws in warped.values() for w in ws if w.runtime_s is not None]
    folds, train_s = [], []
    for name, image, labels in subjects:
        examples = []  # atlas j warped to subject i, for i, j != target: the target never enters training
        for other, other_img, other_lab in subjects:
            if other == name:
                continue
            kept = [w for w in warped[other] if w.name != name]
            examples += make_examples(
                other_img.data[0].numpy(),
                other_lab.data[0].numpy().astype(np.int64),
                [w.image for w in kept],
                [w.labels for w in kept],
            )
        model = train_votenet(examples, steps=args.steps, time_limit_s=args.train_seconds, seed=0)
        train_s.append(model.train_seconds)
        fused = fuse_fold(image, labels, warped[name], model)
        rec = fold_record(name, fused, warped[name])
        rec["learned_train"] = {
            "examples": len(examples),
            "steps": len(model.history),
            "seconds": model.train_seconds,
            "final_loss": float(np.mean(model.history[-10:])),
            "targets_seen": sorted({n for n, _, _ in subjects if n != name}),
        }
        folds.append(rec)
        m = rec["mean"]
        log(
            f"  fold {name}: best single {m['best single atlas']:.3f}  majority {m['majority']:.3f}  "
            f"staple {m['staple']:.3f}  weighted {m['weighted']:.3f}  jlf {m['weighted_jlf']:.3f}  "
            f"learned {m['learned']:.3f} ({len(examples)} pairs, {model.train_seconds:.1f} s)"
        )
    summary = summarise(folds, label_names)
    return {
        "data": "sample_data/brain/2d_2mm (synthetic, 80x96 at 2 mm)",
        "subjects": [n for n, _, _ in subjects],
        "method": args.method,
        "overrides": overrides,
        "registration_seconds_total": reg_s,
        "registrations_cached": cached,
        "registration_seconds_per_pair_median": float(np.median(runtimes)) if runtimes else None,
        "learned_train_seconds_per_fold_mean": float(np.mean(train_s)),
        "folds": folds,
        **summary,
    }


def real_benchmark(args, log) -> dict | None:
    folder = DATA / "brain3d"
    if not (folder / "labels").is_dir():
        log(f"real data: {folder} absent, skipped")
        return None
    from regcore.data.slices import _image2d
    from regcore.io import load_image, load_label_names
    from regcore.segment.multi_atlas import Atlas

    vols = {}
    for s in REAL_SUBJECTS:
        img = folder / "images" / f"{s}.nii.gz"
        lab = folder / "labels" / f"{s}_seg35.nii.gz"
        if not img.is_file() or not lab.is_file():
            log(f"real data: {img} or {lab} missing, skipped")
            return None
        vols[s] = (load_image(img, is_labels=False), load_image(lab, is_labels=True))
    names_csv = folder / "label_names_seg35.csv"
    label_names = {k: v for k, v in load_label_names(names_csv).items() if k} if names_csv.is_file() else {}

    def cut(s, pos, labels):
        return _image2d(vols[s][1 if labels else 0], REAL_AXIS, pos, labels)

    targets = [(s, cut(s, REAL_POSITION, False), cut(s, REAL_POSITION, True)) for s in REAL_SUBJECTS]

    def atlases_of(name):
        other = next(s for s in REAL_SUBJECTS if s != name)
        return [
            Atlas(
                f"{other}@{REAL_POSITION + o}",
                cut(other, REAL_POSITION + o, False),
                cut(other, REAL_POSITION + o, True),
            )
            for o in REAL_OFFSETS
        ]

    t0 = time.perf_counter()
    log(f"real data: {len(REAL_SUBJECTS)} targets x {len(REAL_OFFSETS)} atlases ({args.method}) ...")
    warped = register_all(targets, atlases_of, args.method, dict(args.overrides), log)
    folds = []
    for name, image, labels in targets:
        rec = fold_record(name, fuse_fold(image, labels, warped[name]), warped[name])
        folds.append(rec)
        m = rec["mean"]
        log(
            f"  target {name}: best single {m['best single atlas']:.3f}  majority {m['majority']:.3f}  "
            f"staple {m['staple']:.3f}  weighted {m['weighted']:.3f}  jlf {m['weighted_jlf']:.3f}"
        )
    return {
        "data": f"{folder} (OASIS, axis {REAL_AXIS} slice {REAL_POSITION}, atlases = other subject's slices "
        f"at offsets {list(REAL_OFFSETS)})",
        "method": args.method,
        "registration_seconds_total": time.perf_counter() - t0,
        "folds": folds,
        **summarise(folds, label_names),
    }


def _load_cache(path, key):
    try:
        with open(path, "rb") as fh:
            data = pickle.load(fh)  # noqa: S301 - our own cache file
        return data.get(key)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError):
        return None


def _save_cache(path, key, value) -> None:
    try:
        with open(path, "wb") as fh:
            pickle.dump({key: value}, fh)
    except OSError:
        pass


def checks(sample: dict) -> dict:
    m = sample["mean"]
    fusions = [f for f in FUSIONS if f in m]
    best_fusion = max(fusions, key=lambda f: m[f])
    return {
        "best_fusion": best_fusion,
        "best_fusion_minus_best_single": m[best_fusion] - m["best single atlas"],
        "best_fusion_beats_best_single_by_0.03": m[best_fusion] - m["best single atlas"] >= 0.03,
        "staple_beats_majority": m["staple"] > m["majority"],
        "weighted_beats_majority": m["weighted"] > m["majority"],
    }


def table(block: dict, title: str) -> list[str]:
    cols = block["columns"]
    lines = [f"### {title}", "", "| structure | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    lines.append(
        "| **mean over targets** | " + " | ".join(f"**{block['mean'][c]:.3f}**" for c in cols) + " |"
    )
    for row in block["per_structure"]:
        lines.append(f"| {row['structure']} | " + " | ".join(f"{row[c]:.3f}" for c in cols) + " |")
    return lines + [""]


def write_markdown(report: dict, path: Path) -> None:
    s, c = report["sample"], report["checks"]
    lines = [
        "# Multi-atlas segmentation benchmark",
        "",
        f"Run {report['date']} on {report['machine']} (load average at start {report['load_average']}); "
        f"command `{report['command']}`; wall {report['wall_seconds']:.0f} s.",
        "",
        f"Registration: `{s['method']}` {s['overrides']} (median {s['registration_seconds_per_pair_median']:.2f} s "
        f"per pair{', reused from cache' if s['registrations_cached'] else ''}). Dice per structure, mean over "
        "leave-one-out targets. *Best single atlas* = for each target the atlas with the highest mean Dice "
        "(an oracle); *learned* = VoteNet trained per fold on the other 9 subjects only (held out), "
        f"{s['learned_train_seconds_per_fold_mean']:.1f} s training per fold.",
        "",
        "## Checks",
        "",
        f"- best fusion: **{c['best_fusion']}**, {c['best_fusion_minus_best_single']:+.3f} mean Dice vs the best "
        f"single atlas (>= 0.03: {'yes' if c['best_fusion_beats_best_single_by_0.03'] else 'NO'})",
        f"- STAPLE beats majority vote: {'yes' if c['staple_beats_majority'] else 'NO'} "
        f"({s['mean']['staple']:.3f} vs {s['mean']['majority']:.3f})",
        f"- weighted voting beats majority vote: {'yes' if c['weighted_beats_majority'] else 'NO'} "
        f"({s['mean']['weighted']:.3f} vs {s['mean']['majority']:.3f})",
        "",
    ]
    lines += table(s, f"Sample brains, {len(s['subjects'])} subjects, leave-one-out")
    lines += ["Per target (mean Dice):", "", "| target | best atlas | " + " | ".join(s["columns"]) + " |"]
    lines.append("|---" * (len(s["columns"]) + 2) + "|")
    for f in s["folds"]:
        lines.append(
            f"| {f['target']} | {f['best_atlas']} | "
            + " | ".join(f"{f['mean'][k]:.3f}" for k in s["columns"])
            + " |"
        )
    lines.append("")
    if report.get("real"):
        r = report["real"]
        lines += table(r, f"Real OASIS slices: {r['data']}")
    else:
        lines += ["Real data: skipped (../shared/data/brain3d absent or --no-real).", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--subjects", type=int, default=10)
    ap.add_argument("--method", default="demons")
    ap.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=["iterations=20", "levels=2"],
        help="registration parameter key=value (repeatable)",
    )
    ap.add_argument("--steps", type=int, default=400, help="VoteNet training steps per fold")
    ap.add_argument("--train-seconds", type=float, default=6.0, help="VoteNet training time limit per fold")
    ap.add_argument("--no-real", action="store_true")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "regcore_multi_atlas_cache.pkl"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    args.overrides = {}
    for item in args.sets:
        k, _, v = item.partition("=")
        args.overrides[k.strip()] = v.strip()
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)

    import torch

    torch.manual_seed(0)
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "command": "python benchmarks/multi_atlas.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    report["sample"] = sample_benchmark(args, log)
    report["checks"] = checks(report["sample"])
    report["real"] = None if args.no_real else real_benchmark(args, log)
    report["wall_seconds"] = time.perf_counter() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "multi_atlas.json").write_text(json.dumps(report, indent=1, default=_json), encoding="utf-8")
    write_markdown(report, out / "multi_atlas.md")
    log(f"checks: {report['checks']}")
    log(f"wrote {out / 'multi_atlas.json'} and {out / 'multi_atlas.md'}")
    return 0


def _json(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return str(v)


if __name__ == "__main__":
    sys.exit(main())
