"""fireants between two contrasts: its ``similarity="auto"`` (MIND-SSC descriptors) against its LNCC, with demons.

    nice -n 5 .venv/bin/python benchmarks/fireants_mind.py

Two parts, each row in the same run:

* ``3d``: a 1 mm pair of two contrasts: OASIS 0455 (fixed) and 0456 with its brain intensities inverted
  (``1.05 - x`` where ``x > 0.05``), 35-label mean Dice, registration seconds and the peak RSS of a fresh process per
  row (so one row's memory cannot hide in another's). Rows: identity, fireants lncc, fireants auto, demons auto.
* ``2d``: the 9 held-out spine T1w -> T2w slices of ``regcore.data.multimodal`` (cord Dice) and the built-in
  T1w -> T2w sample slice: identity, fireants lncc, fireants auto; means.

Needs ../shared/data (``REGLAB_SHARED_DATA``) for all but the sample; writes benchmarks/results/fireants_mind.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from _results import run_meta, write_results  # noqa: E402
from _shared_data import shared_folder  # noqa: E402

ROWS_3D = (("identity", ""), ("fireants", "lncc"), ("fireants", "auto"), ("demons", "auto"))


def inverted_pair():
    """The OASIS pair with the moving brain's intensities inverted (a second contrast; labels unchanged)."""
    import dataclasses

    from regcore.data import load_manifest
    from regcore.image import Image

    (pair, *_) = load_manifest(ROOT / "benchmarks" / "manifests" / "brain3d.csv").pairs()
    x = pair.moving.data.clone()
    brain = x > 0.05
    x[brain] = 1.05 - x[brain]
    return dataclasses.replace(pair, moving=Image(x, pair.moving.geometry))


def register(method: str, similarity: str, pair):
    """``(result, seconds)``; ``similarity`` is fireants' ``similarity`` or demons' ``features`` ("auto" = default)."""
    from regcore.methods.registry import get

    spec = get(method)
    field = "similarity" if method == "fireants" else "features"
    config = spec.make_config({} if similarity == "auto" else {field: similarity})
    start = time.perf_counter()
    result = spec.factory().register(pair.fixed, pair.moving, config)
    return result, time.perf_counter() - start


def one_3d_row(method: str, similarity: str) -> dict:
    """One 3D row in this process (called in a fresh one by :func:`main`)."""
    from regcore.metrics import evaluate, evaluate_identity

    pair = inverted_pair()
    if method == "identity":
        dice, seconds, ran = (
            evaluate_identity(pair.fixed, pair.moving, **pair.annotations)["dice_mean"],
            0.0,
            "",
        )
    else:
        result, seconds = register(method, similarity, pair)
        dice = evaluate(result, **pair.annotations)["dice_mean"]
        ran = str(getattr(result.config, "similarity", getattr(result.config, "features", "")))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "method": method,
        "asked": similarity,
        "ran": ran,
        "dice": round(dice, 4),
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(peak_mib),
    }


def rows_2d() -> list[dict]:
    from regcore.data import sample_pair
    from regcore.data.multimodal import multimodal_pairs
    from regcore.metrics import evaluate, evaluate_identity

    sets = {"sample T1w -> T2w slice": [sample_pair(dims=2, contrast="t2")]}
    if shared_folder("spine_multimodal") is not None:
        sets["spine T1w -> T2w held-out slices"] = multimodal_pairs("spine_t1t2", "heldout")
    rows = []
    for name, pairs in sets.items():
        dice: dict[str, list[float]] = {"identity": [], "fireants lncc": [], "fireants auto": []}
        for pair in pairs:
            dice["identity"].append(
                evaluate_identity(pair.fixed, pair.moving, **pair.annotations)["dice_mean"]
            )
            for similarity in ("lncc", "auto"):
                result, _ = register("fireants", similarity, pair)
                dice[f"fireants {similarity}"].append(evaluate(result, **pair.annotations)["dice_mean"])
        rows += [
            {"set": name, "pairs": len(pairs), "row": row, "mean_dice": round(sum(v) / len(v), 4)}
            for row, v in dice.items()
        ]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fireants_mind"))
    parser.add_argument("--row", nargs=2, metavar=("METHOD", "SIMILARITY"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.row:  # a child process: one 3D row, printed as JSON
        print(json.dumps(one_3d_row(*args.row)))
        return 0
    rows_3d = []
    if shared_folder("brain3d") is not None:
        for method, similarity in ROWS_3D:
            child = [sys.executable, __file__, "--row", method, similarity or "-"]
            out = (
                subprocess.run(child, check=True, capture_output=True, text=True)
                .stdout.strip()
                .splitlines()[-1]
            )
            rows_3d.append(json.loads(out))
            print(rows_3d[-1], flush=True)
    two_d = rows_2d()
    for row in two_d:
        print(row, flush=True)
    meta = run_meta(command="nice -n 5 .venv/bin/python benchmarks/fireants_mind.py")
    lines = [
        "# fireants between two contrasts: similarity auto (MIND-SSC descriptors) against LNCC",
        "",
        f"`{meta['command']}`",
        "",
        f"{meta['date']}; {meta['threads']} threads; torch {meta['torch']}.",
        "",
        "3D: OASIS 0455 <- 0456 with the brain's intensities inverted, 1 mm, 35-label mean Dice; peak RSS of a fresh "
        "process per row.",
        "",
        "| row | ran | Dice | registration s | peak RSS MiB |",
        "|---|---|---|---|---|",
        *[
            f"| {r['method']} {r['asked'].strip('-')} | {r['ran']} | {r['dice']} | {r['seconds']} | {r['peak_rss_mib']} |"
            for r in rows_3d
        ],
        "",
        "2D: mean Dice (cord on the spine slices, labels on the sample).",
        "",
        "| set | pairs | row | mean Dice |",
        "|---|---|---|---|",
        *[f"| {r['set']} | {r['pairs']} | {r['row']} | {r['mean_dice']} |" for r in two_d],
        "",
    ]
    write_results(args.out, {"meta": meta, "3d": rows_3d, "2d": two_d}, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
