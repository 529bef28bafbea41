"""Scale-out benchmark: the same `regcore bench` batch on the serial engine and on Ray with 2 workers.

Pairs: 8 real 2D brain MRI pairs with 35 labels, built from ../shared/data/brain3d (OASIS 0455 and 0456,
axial slices 83, 93, 103, 113; both directions; slice 103 is the shipped brain2d pair) into a temporary
folder (nothing is copied into the project). Methods: affine, demons, fireants (+ the identity row),
so 8 x 4 = 32 tasks. Same process, same run:

1. serial engine, one task after another: with 1 torch thread per task (the same work per task as a Ray
   worker: the engine comparison) and with torch's default threads (the `regcore bench` default);
2. Ray engine on an embedded local Ray with 2 CPUs (one task per CPU, 1 thread each), twice: on a fresh
   cluster (cold: worker processes start, import regcore and load the compiled kernels during the batch) and
   on a reused one (warm: each worker has run every method once, as the serial process has when its timed
   1-thread run starts, and as a cluster that ran an earlier batch has). The
   Ray start-up is timed apart; each batch time includes everything else (submitting, scheduling,
   results written per task). The headline speed-up is the warm one; the cold one is reported beside it.

Reported: wall time of both, speed-up, Ray start-up, overhead per task ((2 x Ray wall - sum of task
times inside the workers) / tasks: scheduling, worker start-up and idle tail, spread over the tasks),
Ray's own round-trip per trivial task, and whether the metrics agree (Dice/HD95/folding/SDlogJ per
(pair, method)). Check `uptime` first: run it on a quiet machine.

    .venv/bin/python benchmarks/scaleout.py            # ~3-4 min on 2 cores

Writes benchmarks/results/scaleout.json and scaleout.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = Path(os.environ.get("REGLAB_SHARED_DATA", ROOT.parent / "shared" / "data"))
SUBJECTS = ("OASIS_OAS1_0455_MR1", "OASIS_OAS1_0456_MR1")
SLICES = (83, 93, 103, 113)
METHODS = ("affine", "demons", "fireants")
COMPARED = ("dice_mean", "hd95_mean_mm", "folding_percent", "sdlogj")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_pairs(folder: Path) -> Path:
    """Axial slices (tensor axis 1, as brain2d's axial103) of both subjects + labels -> 8 pairs and a manifest."""
    import nibabel as nib
    import numpy as np

    ref = nib.load(DATA / "brain2d" / "images" / f"{SUBJECTS[0]}_axial103.nii.gz")  # the 2D header convention
    vols = {
        s: nib.load(DATA / "brain3d" / "images" / f"{s}.nii.gz").get_fdata(dtype=np.float32) for s in SUBJECTS
    }
    labs = {
        s: np.asarray(nib.load(DATA / "brain3d" / "labels" / f"{s}_seg35.nii.gz").dataobj) for s in SUBJECTS
    }
    for s in SUBJECTS:
        for z in SLICES:
            nib.save(
                nib.Nifti1Image(np.ascontiguousarray(vols[s][:, z, :]), ref.affine),
                folder / f"{s}_{z}.nii.gz",
            )
            nib.save(
                nib.Nifti1Image(np.ascontiguousarray(labs[s][:, z, :]).astype(np.uint8), ref.affine),
                folder / f"{s}_{z}_seg.nii.gz",
            )
    names = DATA / "brain3d" / "label_names_seg35.csv"
    lines = ["name,fixed,moving,fixed_labels,moving_labels,label_names"]
    for z in SLICES:
        for f, m in (SUBJECTS, SUBJECTS[::-1]):
            lines.append(
                f"{m[11:15]}->{f[11:15]} axial {z},{f}_{z}.nii.gz,{m}_{z}.nii.gz,{f}_{z}_seg.nii.gz,"
                f"{m}_{z}_seg.nii.gz,{names}"
            )
    manifest = folder / "pairs.csv"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest


def ray_roundtrip_ms(n: int = 200) -> float:
    """Median-free mean round trip of ``n`` trivial Ray tasks (scheduling + serialisation), in ms."""
    import ray

    @ray.remote(num_cpus=1)
    def noop(x):
        return x

    ray.get([noop.remote(i) for i in range(10)])  # workers warm
    t0 = time.perf_counter()
    ray.get([noop.remote(i) for i in range(n)])
    return (time.perf_counter() - t0) / n * 1000.0


def warm_workers(n: int, fixed: Path, moving: Path) -> float:
    """Bring ``n`` Ray workers to the state the serial process is in when its timed run starts: regcore
    imported and each method run once (numba kernels loaded from the cache, torch's first-call set-up), on
    one pair of the batch (seconds). A cluster that has already run a batch is in this state; the cold
    numbers are reported too."""
    import ray

    @ray.remote(num_cpus=1)
    def run_each_method_once(_):
        import time as _time

        import torch as _torch

        from regcore.io import load_image
        from regcore.register import run_registration

        _torch.set_num_threads(1)
        f, m = load_image(fixed), load_image(moving)
        for method in METHODS:
            run_registration(f, m, method)
        _time.sleep(1.0)  # hold this worker so the next warm-up lands on another one
        return os.getpid()

    t0 = time.perf_counter()
    pids = ray.get([run_each_method_once.remote(i) for i in range(n)])
    if len(set(pids)) < n:
        print(f"warning: warm-up reached {len(set(pids))} of {n} workers")
    return time.perf_counter() - t0 - 1.0


def compare(serial: dict, par: dict) -> dict:
    a = {(r["pair"], r["method"]): r for r in serial["pairs"]}
    b = {(r["pair"], r["method"]): r for r in par["pairs"]}
    exact, worst = True, 0.0
    for key, ra in a.items():
        rb = b[key]
        for k in COMPARED:
            x, y = ra.get(k), rb.get(k)
            if x != y:
                exact = False
            if x is not None and y is not None:
                worst = max(worst, abs(x - y) / max(abs(x), abs(y), 1e-12))
            elif (x is None) != (y is None):
                worst = math.inf
    same_dice = all(a[k].get("dice_mean") == b[k].get("dice_mean") for k in a)
    return {
        "identical": exact,
        "dice_identical": same_dice,
        "max_relative_difference": worst,
        "rows": len(a),
        "keys_match": set(a) == set(b),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2, help="CPUs of the embedded Ray")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    if not (DATA / "brain3d").is_dir():
        print(f"needs {DATA}/brain3d (set REGLAB_SHARED_DATA)", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    from regcore.bench import run_benchmark
    from regcore.methods.registry import get

    for m in METHODS:
        get(m)  # the registry is loaded once, outside the timings
    with tempfile.TemporaryDirectory(prefix="scaleout-") as tmp:
        tmp = Path(tmp)
        (tmp / "data").mkdir()
        manifest = build_pairs(tmp / "data")
        print(f"8 pairs x {len(METHODS)} methods (+ identity) from {DATA}; load average {load_before}")

        t0 = time.perf_counter()  # torch's default threads (2 here): what `regcore bench` does by default
        serial_default = run_benchmark(
            manifest, list(METHODS), out_dir=tmp / "serial_default", engine="serial"
        )
        serial_default_s = time.perf_counter() - t0
        print(f"serial, default threads: {serial_default_s:.1f} s")
        import torch

        default_threads = torch.get_num_threads()
        t0 = time.perf_counter()  # 1 thread per task, like each Ray worker: the same work per task
        serial = run_benchmark(manifest, list(METHODS), out_dir=tmp / "serial", engine="serial", threads=1)
        serial_s = time.perf_counter() - t0
        torch.set_num_threads(default_threads)
        print(f"serial, 1 thread: {serial_s:.1f} s")

        import ray

        t0 = time.perf_counter()
        ray.init(
            num_cpus=args.workers, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR
        )
        startup_s = time.perf_counter() - t0
        t0 = time.perf_counter()  # cold: each worker process starts and imports regcore during the batch
        par_cold = run_benchmark(manifest, list(METHODS), out_dir=tmp / "ray_cold", engine="ray")
        ray_cold_s = time.perf_counter() - t0
        print(
            f"ray ({args.workers} workers), cold workers: {ray_cold_s:.1f} s (+ {startup_s:.1f} s start-up)"
        )
        ray.shutdown()
        ray.init(
            num_cpus=args.workers, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR
        )
        first = manifest.read_text(encoding="utf-8").splitlines()[1].split(",")
        warmup_s = warm_workers(args.workers, tmp / "data" / first[1], tmp / "data" / first[2])
        t0 = time.perf_counter()  # warm: worker processes exist and have imported regcore (a reused cluster)
        par = run_benchmark(manifest, list(METHODS), out_dir=tmp / "ray", engine="ray")
        ray_s = time.perf_counter() - t0
        print(f"ray ({args.workers} workers), warm workers: {ray_s:.1f} s (+ {warmup_s:.1f} s warm-up)")
        roundtrip = ray_roundtrip_ms()
        ray.shutdown()

        recs = [json.loads(p.read_text(encoding="utf-8")) for p in (tmp / "ray" / "tasks").glob("*.json")]
        task_sum = sum(r["wall_s"] for r in recs)
        n = len(recs)
        overhead = (args.workers * ray_s - task_sum) / n
        serial_recs = [
            json.loads(p.read_text(encoding="utf-8")) for p in (tmp / "serial" / "tasks").glob("*.json")
        ]
        serial_sum = sum(r["wall_s"] for r in serial_recs)
        per_method = {}
        for m in ("identity", *METHODS):
            per_method[m] = {
                "serial_median_s": statistics.median(r["wall_s"] for r in serial_recs if r["method"] == m),
                "ray_median_s": statistics.median(r["wall_s"] for r in recs if r["method"] == m),
            }
        agreement = compare(serial, par)
    result = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "pairs": 8,
        "methods": list(METHODS),
        "tasks": n,
        "workers": args.workers,
        "serial_s": serial_s,
        "serial_default_threads_s": serial_default_s,
        "speedup_vs_default_threads": serial_default_s / ray_s,
        "agreement_vs_default_threads": compare(serial_default, par),
        "ray_s": ray_s,
        "ray_cold_s": ray_cold_s,
        "speedup_cold_workers": serial_s / ray_cold_s,
        "agreement_cold": compare(serial, par_cold),
        "ray_worker_warmup_s": warmup_s,
        "speedup": serial_s / ray_s,
        "ray_startup_s": startup_s,
        "speedup_including_startup": serial_s / (ray_cold_s + startup_s),
        "serial_task_sum_s": serial_sum,
        "ray_task_sum_s": task_sum,
        "overhead_per_task_s": overhead,
        "ray_roundtrip_per_trivial_task_ms": roundtrip,
        "per_method": per_method,
        "agreement": agreement,
        "summary_serial": serial["summary"],
        "summary_ray": par["summary"],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scaleout.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    (args.out / "scaleout.md").write_text(to_markdown(result), encoding="utf-8")
    print(to_markdown(result))
    return 0


def to_markdown(r: dict) -> str:
    a = r["agreement"]
    lines = [
        "# Scale-out: serial vs Ray (same run)",
        "",
        (
            f"{r['date']}, {r['cpu']}, {r['cores']} cores, load average before {r['load_average_before']}, "
            f"after {r['load_average_after']}. Command: `.venv/bin/python benchmarks/scaleout.py`"
        ),
        "",
        f"{r['pairs']} real 2D OASIS pairs (35 labels) x {', '.join(r['methods'])} + identity = {r['tasks']} tasks.",
        "",
        "| engine | wall s | speed-up | notes |",
        "|---|---|---|---|",
        f"| serial, 1 thread per task | {r['serial_s']:.1f} | 1.00 | sum of task times {r['serial_task_sum_s']:.1f} s |",
        (
            f"| serial, torch default threads ({r['cores']}) | {r['serial_default_threads_s']:.1f} | "
            f"{r['serial_s'] / r['serial_default_threads_s']:.2f} | the `regcore bench` default |"
        ),
        (
            f"| ray, {r['workers']} warm workers | {r['ray_s']:.1f} | **{r['speedup']:.2f}** | a reused cluster: worker "
            f"processes started, each method run once on one pair beforehand ({r['ray_worker_warmup_s']:.1f} s), as "
            "the serial process is after its first run; "
            f"{r['speedup_vs_default_threads']:.2f}x against the default-threads serial run |"
        ),
        (
            f"| ray, {r['workers']} cold workers | {r['ray_cold_s']:.1f} | {r['speedup_cold_workers']:.2f} | a fresh "
            f"cluster: workers start and import regcore during the batch; + {r['ray_startup_s']:.1f} s Ray start-up "
            f"once ({r['speedup_including_startup']:.2f}x including it); metrics identical: "
            f"{'yes' if r['agreement_cold']['identical'] else 'no'} |"
        ),
        "",
        (
            f"- overhead per task: **{r['overhead_per_task_s'] * 1000:.0f} ms** "
            f"(({r['workers']} x Ray wall - {r['ray_task_sum_s']:.1f} s of task time) / {r['tasks']} tasks: "
            "worker start-up and regcore import, scheduling, idle tail)"
        ),
        f"- Ray round trip of a trivial task: {r['ray_roundtrip_per_trivial_task_ms']:.2f} ms",
        (
            f"- metrics identical (Dice, HD95, folding %, SDlogJ per pair and method): "
            f"**{'yes' if a['identical'] else 'no'}**; Dice identical: {'yes' if a['dice_identical'] else 'no'}; "
            f"largest relative difference {a['max_relative_difference']:.1e} over {a['rows']} rows; against the "
            f"default-threads serial run: Dice identical "
            f"{'yes' if r['agreement_vs_default_threads']['dice_identical'] else 'no'}, largest relative difference "
            f"{r['agreement_vs_default_threads']['max_relative_difference']:.1e} (threaded float sums)"
        ),
        "",
        "| method | median task s, serial | median task s, Ray worker (1 thread) |",
        "|---|---|---|",
    ]
    for m, v in r["per_method"].items():
        lines.append(f"| {m} | {v['serial_median_s']:.2f} | {v['ray_median_s']:.2f} |")
    lines += [
        "",
        "| method | Dice (serial) | Dice (Ray) | folding % | runtime s (median) |",
        "|---|---|---|---|---|",
    ]
    for s, p in zip(r["summary_serial"], r["summary_ray"]):
        lines.append(
            f"| {s['method']} | {s['dice_mean']:.4f} | {p['dice_mean']:.4f} | {s['folding_percent']:.3f} | "
            f"{s['runtime_s']:.2f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
