"""The 3D intensity affine on 1 mm brains: how many voxels its mutual information needs per iteration.

    nice -n 5 .venv/bin/python benchmarks/affine_3d.py [--rows affine affine_200k sitk_affine_mi] [--out ...]

Two sets on the OASIS volumes of ../shared/data/brain3d (160 x 192 x 224, 1 mm), three known affines (seeded:
rotation up to 10 degrees per axis, scale 0.9-1.1 per axis, shift up to 8 mm) applied with scipy's
``affine_transform`` (linear interpolation):

* ``recover``: each subject registered to itself under each affine; the error is the distance (mm) between the
  recovered and the true mapping of every brain voxel (intensity > 0.05), mean over the brain.
* ``between``: subject 0456 under each affine (and as stored) registered to 0455; mean Dice of the 35 labels
  after the affine (the pair is affinely aligned as stored, so the as-stored row shows the between-subject level).

Rows: regcore's ``affine`` as shipped (MI, ``spatial_samples`` 20000 voxels per iteration, warped at those points
only); the baseline ``affine_200k`` (the same with 200000, the budget its MI drew per call before, when every
iteration warped the whole volume: 35 s per pair); SimpleITK's affine (Mattes MI, 20 % of the voxels, 3 levels).
Times are registration wall seconds on this machine's threads. Prints and writes
benchmarks/results/affine_3d.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _results import run_meta, write_results  # noqa: E402
from _shared_data import shared_folder  # noqa: E402

ROWS = {
    "affine": ("affine", {}),
    "affine_200k": ("affine", {"spatial_samples": 200_000}),
    "sitk_affine_mi": ("sitk_affine_mi", {}),
}
BASELINE = "affine_200k"
SUBJECTS = ("0455", "0456")


def known_affines(count: int = 3, seed: int = 7) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(linear (3, 3), shift (3,) mm)`` pairs: rotation <= 10 deg per axis, scale 0.9-1.1, shift <= 8 mm."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        rotation = Rotation.from_euler("xyz", rng.uniform(-10, 10, 3), degrees=True).as_matrix()
        out.append((rotation @ np.diag(rng.uniform(0.9, 1.1, 3)), rng.uniform(-8, 8, 3)))
    return out


def apply_affine(
    volume: np.ndarray, linear: np.ndarray, shift: np.ndarray, order: int
) -> tuple[np.ndarray, np.ndarray]:
    """``volume`` resampled at ``linear @ y + offset`` (about the centre, plus ``shift`` voxels) -> (image, offset)."""
    from scipy.ndimage import affine_transform

    centre = (np.array(volume.shape) - 1) / 2
    offset = centre - linear @ centre + shift
    return affine_transform(volume, linear, offset=offset, order=order), offset


def run_row(row: str, fixed: np.ndarray, moving: np.ndarray):
    """Register with ``row``'s method -> (displacement ``(3, *S)`` voxels, fixed -> moving; seconds)."""
    from regcore.image import Image
    from regcore.register import register_images

    method, overrides = ROWS[row]
    start = time.perf_counter()
    registration = register_images(Image.from_array(fixed), Image.from_array(moving), method, overrides)
    return registration.result.displacement[0].numpy(), time.perf_counter() - start


def recover_set(rows, brain3d: Path, affines) -> list[dict]:
    import nibabel as nib

    records = []
    for subject in SUBJECTS:
        volume = (
            nib.load(brain3d / "images" / f"OASIS_OAS1_{subject}_MR1.nii.gz").get_fdata().astype(np.float32)
        )
        points = np.stack(np.nonzero(volume > 0.05), 1)
        for k, (linear, shift) in enumerate(affines):
            moving, offset = apply_affine(volume, linear, shift, order=1)
            truth = (np.linalg.inv(linear) @ (points - offset).T).T  # moving(x) = volume(linear x + offset)
            for row in rows:
                u, seconds = run_row(row, volume, moving.astype(np.float32))
                mapped = points + np.stack([u[axis][tuple(points.T)] for axis in range(3)], 1)
                error = float(np.linalg.norm(mapped - truth, axis=1).mean())
                records.append(
                    {
                        "set": "recover",
                        "case": f"{subject} affine {k}",
                        "row": row,
                        "error_mm": error,
                        "seconds": seconds,
                    }
                )
                print(
                    f"recover {subject} affine {k} {row:12s} error {error:.3f} mm  {seconds:.1f} s",
                    flush=True,
                )
    return records


def between_set(rows, brain3d: Path, affines) -> list[dict]:
    import nibabel as nib
    import torch

    from regcore.metrics.overlap import mean_dice
    from regcore.spatial.warp import warp_labels

    load = lambda name: nib.load(brain3d / name).get_fdata()  # noqa: E731
    fixed = load("images/OASIS_OAS1_0455_MR1.nii.gz").astype(np.float32)
    fixed_labels = load("labels/OASIS_OAS1_0455_MR1_seg35.nii.gz").astype(np.int64)
    moving0 = load("images/OASIS_OAS1_0456_MR1.nii.gz").astype(np.float32)
    labels0 = load("labels/OASIS_OAS1_0456_MR1_seg35.nii.gz").astype(np.int64)
    records = []
    for k, (linear, shift) in enumerate([(np.eye(3), np.zeros(3)), *affines]):
        case = "as stored" if k == 0 else f"affine {k - 1}"
        moving = apply_affine(moving0, linear, shift, order=1)[0].astype(np.float32)
        labels = apply_affine(labels0, linear, shift, order=0)[0]
        for row in rows:
            u, seconds = run_row(row, fixed, moving)
            warped = warp_labels(torch.from_numpy(labels)[None, None], torch.from_numpy(u)[None])[
                0, 0
            ].numpy()
            dice = mean_dice(fixed_labels, warped)
            records.append({"set": "between", "case": case, "row": row, "dice": dice, "seconds": seconds})
            print(f"between {case:9s} {row:12s} Dice {dice:.4f}  {seconds:.1f} s", flush=True)
    return records


def summarise(records: list[dict], rows) -> list[dict]:
    """Per set and row: median error or Dice and median seconds, with the time ratio to :data:`BASELINE`."""
    out = []
    for name, metric in (("recover", "error_mm"), ("between", "dice")):
        times = {}
        for row in rows:
            mine = [r for r in records if r["set"] == name and r["row"] == row]
            if not mine:
                continue
            times[row] = float(np.median([r["seconds"] for r in mine]))
            values = [r[metric] for r in mine]
            out.append(
                {
                    "set": name,
                    "row": row,
                    "metric": metric,
                    "median": float(np.median(values)),
                    "max" if metric == "error_mm" else "min": float(
                        max(values) if metric == "error_mm" else min(values)
                    ),
                    "seconds_median": times[row],
                    "cases": len(mine),
                }
            )
        for entry in out:
            if entry["set"] == name and BASELINE in times:
                entry["time_ratio_to_baseline"] = entry["seconds_median"] / times[BASELINE]
    return out


def markdown(meta: dict, summary: list[dict], records: list[dict]) -> str:
    lines = [
        "# 3D affine: mutual-information samples per iteration",
        "",
        f"`{meta['command']}`",
        "",
        f"{meta['date']}; {meta['threads']} threads; torch {meta['torch']}. Baseline: `{BASELINE}`.",
        "",
        "| set | row | metric | median | worst | median s | time / baseline |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        worst = s.get("max", s.get("min"))
        lines.append(
            f"| {s['set']} | {s['row']} | {s['metric']} | {s['median']:.4f} | {worst:.4f} | {s['seconds_median']:.1f} | "
            f"{s.get('time_ratio_to_baseline', float('nan')):.2f} |"
        )
    lines += ["", "Every case:", "", "| set | case | row | error mm / Dice | s |", "|---|---|---|---|---|"]
    for r in records:
        value = r.get("error_mm", r.get("dice"))
        lines.append(f"| {r['set']} | {r['case']} | {r['row']} | {value:.4f} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", choices=tuple(ROWS), default=list(ROWS))
    parser.add_argument("--sets", nargs="+", choices=("recover", "between"), default=["recover", "between"])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "affine_3d"))
    args = parser.parse_args(argv)
    brain3d = shared_folder("brain3d")
    if brain3d is None:
        return 0

    affines = known_affines()
    records = []
    if "recover" in args.sets:
        records += recover_set(args.rows, brain3d, affines)
    if "between" in args.sets:
        records += between_set(args.rows, brain3d, affines)
    summary = summarise(records, args.rows)
    meta = {
        "command": "nice -n 5 .venv/bin/python benchmarks/affine_3d.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        **run_meta(),
    }
    text = markdown(meta, summary, records)
    print(text)
    write_results(args.out, {"meta": meta, "summary": summary, "records": records}, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
