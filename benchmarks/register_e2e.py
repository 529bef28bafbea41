"""End-to-end cost of ``regcore register`` on a 1 mm 3D pair: wall time against the registration time it
reports, where the rest goes (imports, load, metrics, write), and peak memory.

Pair: the OASIS 0455 <- 0456 pair of ../shared/data/brain3d (160x192x224, 1 mm, 35 labels) when present,
else the 1 mm sample built by ``python -m regcore.data.samples --resolution 1``.

1. ``regcore --help`` in a child: wall time and which heavy modules it imported (none expected).
2. ``regcore register`` in a child (the real CLI), ``--repeats`` times (3): wall time, the registration
   time it reports (``runtime_s`` of metrics.json), CPU time and peak RSS of the child (``os.wait4``'s
   rusage). Must reach, on the median run (by wall - registration) and the largest RSS: wall <=
   registration + 3 s, peak RSS <= 1.5 GB.
3. Its stages, re-timed in this process on the same inputs and the child's own displacement (no
   second registration), one after another (the CLI overlaps some: it inflates its inputs while torch
   imports and evaluates while it writes): its loader (two files at a time, uint8 label maps), its
   input copies into the run folder, and the numba kernels already loaded: load, label warp, metrics after and before registration (deformation
   metrics and HD95 apart), the run-folder write; then same-run before/after pairs: displacement
   written uncompressed (.nii, the default) vs gzip on all cores (``--compress``) vs the previous
   writer (SimpleITK, float64, single-thread gzip), deformation metrics in the fused compiled
   pass vs the torch path, and Dice/HD95/ASSD with the compiled label counts and surface shell search
   vs numpy bincounts and KD-trees (same values required). The child's metrics.json is checked
   against the re-computed metrics.

    .venv/bin/python benchmarks/register_e2e.py                        # fireants, default schedule
    .venv/bin/python benchmarks/register_e2e.py --set preset=custom --set iterations=20,10,5

Writes benchmarks/results/register_e2e.json and .md (load average before/after: the machine is shared).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("REGLAB_SHARED_DATA", ROOT.parent / "shared" / "data")) / "brain3d"
RESULTS = ROOT / "benchmarks" / "results"
HEAVY = ("torch", "numba", "scipy", "SimpleITK", "nibabel", "monai", "matplotlib", "plotly", "ray", "pandas")
WALL_MARGIN_S = 3.0
RSS_LIMIT_MB = 1.5e9 / 2**20


def pair_files() -> dict[str, Path]:
    """The 1 mm pair: OASIS from ../shared/data when present, else the sample built on demand."""
    if (DATA / "images" / "OASIS_OAS1_0455_MR1.nii.gz").is_file():
        return {
            "fixed": DATA / "images" / "OASIS_OAS1_0455_MR1.nii.gz",
            "moving": DATA / "images" / "OASIS_OAS1_0456_MR1.nii.gz",
            "fixed_labels": DATA / "labels" / "OASIS_OAS1_0455_MR1_seg35.nii.gz",
            "moving_labels": DATA / "labels" / "OASIS_OAS1_0456_MR1_seg35.nii.gz",
            "label_names": DATA / "label_names_seg35.csv",
        }
    subprocess.run(
        [sys.executable, "-m", "regcore.data.samples", "--resolution", "1", "--quiet"], cwd=ROOT, check=True
    )
    folder = ROOT / "sample_data" / "brain" / "3d_1mm"
    # two subjects' T1 images with their own label maps (subject_00_t1 + subject_00_seg, subject_01_t1 + ...)
    t1 = sorted(folder.rglob("*_t1.nii.gz"))
    seg = {p.name.removesuffix("_seg.nii.gz"): p for p in folder.rglob("*_seg.nii.gz")}
    subjects = [
        (img, seg[img.name.removesuffix("_t1.nii.gz")])
        for img in t1
        if img.name.removesuffix("_t1.nii.gz") in seg
    ]
    if len(subjects) < 2:
        raise SystemExit(f"no 1 mm pair found in {DATA} or {folder}")
    (fixed, fixed_labels), (moving, moving_labels) = subjects[:2]
    return {"fixed": fixed, "moving": moving, "fixed_labels": fixed_labels, "moving_labels": moving_labels}


def run_child(cmd: list[str]) -> dict:
    """Run ``cmd`` to the end: wall time, exit code, output, and this child's own rusage from ``os.wait4``
    (CPU seconds, peak RSS in MiB)."""
    with (
        tempfile.TemporaryFile("w+", encoding="utf-8") as out,
        tempfile.TemporaryFile("w+", encoding="utf-8") as err,
    ):
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {
            "wall_s": wall,
            "code": proc.returncode,
            "stdout": out.read(),
            "stderr": err.read(),
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": usage.ru_maxrss / 1024,
        }


def help_check() -> dict:
    code = (
        "import sys, time; t = time.perf_counter(); from regcore.cli import build_parser; build_parser(); "
        "dt = time.perf_counter() - t; import json; "
        f"print(json.dumps({{'parser_s': dt, 'heavy': sorted(m for m in {HEAVY!r} if m in sys.modules)}}))"
    )
    res = run_child([sys.executable, "-c", code])
    timed = run_child([sys.executable, "-m", "regcore.cli", "--help"])
    info = json.loads(res["stdout"]) if res["code"] == 0 else {"error": res["stderr"][-500:]}
    return {"help_wall_s": timed["wall_s"], **info}


def import_time() -> float:
    code = (
        "import time; t = time.perf_counter(); "
        "import regcore.cli; from regcore.data import Pair; from regcore.register import run_pair; "
        "from regcore.run_record import RunRecord; from regcore.run_folder import save_run; from regcore.metrics.evaluate import evaluate; "
        "import regcore.io, nibabel; from regcore.methods.registry import get; "
        "get('fireants').factory(); print(time.perf_counter() - t)"
    )
    res = run_child([sys.executable, "-c", code])
    return float(res["stdout"].strip().splitlines()[-1]) if res["code"] == 0 else float("nan")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(stages: dict, name: str, fn):
    start = time.perf_counter()
    value = fn()
    stages[name] = {"s": round(time.perf_counter() - start, 3), "peak_rss_mb": round(rss_mb(), 1)}
    return value


def legacy_displacement_write(u, geometry, path: Path) -> None:
    """The writer before this change: float64 LPS vectors, SimpleITK's single-thread gzip."""
    import numpy as np
    import SimpleITK as sitk

    from regcore.io.sitk_arrays import sitk_from_array

    n = geometry.ndim
    d_mm = np.einsum("ij,j...->...i", geometry.index_to_world[:n, :n], u[0].double().numpy())
    sitk.WriteImage(sitk_from_array(d_mm, geometry, is_vector=True), str(path), useCompression=True)


def stages_in_process(files: dict, run_dir: Path, work: Path) -> dict:
    import numpy as np
    import torch

    from regcore.compile_kernels import compile_all
    from regcore.data import Pair
    from regcore.io import load_displacement, load_image, load_label_names
    from regcore.methods.base import RegistrationResult
    from regcore.metrics import deformation
    from regcore.metrics.evaluate import evaluate
    from regcore.metrics.overlap import label_overlap
    from regcore.register import prepare_moving
    from regcore.run_folder import save_run
    from regcore.run_record import RunRecord
    from regcore.spatial.warp import warp_labels

    compile_all()  # load the cached kernels and start numba's threads first, as the CLI's registration has
    st: dict = {}
    names = load_label_names(files["label_names"]) if "label_names" in files else None

    from regcore.register_cli import _load_inputs, _unchanged_inputs

    args = argparse.Namespace(  # the CLI's own loader: two files at a time, label maps compacted to uint8
        **{"label_names": None, **{role: str(path) for role, path in files.items()}},
        fixed_landmarks=None,
        moving_landmarks=None,
    )
    loaded = timed(st, "load inputs (4 NIfTI.gz)", lambda: _load_inputs(args))
    inp = {role: loaded[role] for role in ("fixed", "moving", "fixed_labels", "moving_labels")}
    fixed = inp["fixed"]
    moving = prepare_moving(fixed, inp["moving"])
    moving_labels = prepare_moving(fixed, inp["moving_labels"])
    u, _ = load_displacement(next(run_dir.glob("displacement.nii*")))
    warped = load_image(run_dir / "warped.nii.gz", is_labels=False)
    wl = timed(
        st,
        "warp labels (nearest)",
        lambda: moving_labels.with_data(warp_labels(moving_labels.data[None], u)[0]),
    )
    child = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    result = RegistrationResult(
        method=child["method"],
        fixed=fixed,
        moving=moving,
        warped=warped,
        displacement=u,
        runtime_s=child["runtime_s"],
        peak_memory_mb=child["peak_memory_mb"],
        device=child["device"],
    )
    result.extras["warped_labels"] = wl
    kw = {"fixed_labels": inp["fixed_labels"], "moving_labels": moving_labels, "label_names": names}
    after = timed(st, "metrics after (evaluate)", lambda: evaluate(result, **kw, warped_labels=wl))
    timed(st, "  of which HD95/ASSD/Dice", lambda: label_overlap(inp["fixed_labels"], wl, label_names=names))
    timed(st, "  of which deformation (fused kernel)", lambda: deformation.deformation_metrics(u))
    pair = Pair(name="e2e", **inp, label_names=names)
    record = RunRecord(pair, result, {**after, "method": child["method"]}, label=child["method"])
    timed(st, "metrics before (evaluate_identity)", lambda: record.before_metrics)
    sources = _unchanged_inputs(args, loaded, record)  # inputs copied, not re-encoded, as the CLI does
    timed(st, "write run folder (.nii field)", lambda: save_run(record, work / "plain", sources=sources))
    timed(
        st,
        "write run folder (--compress)",
        lambda: save_run(record, work / "packed", compress=True, sources=sources),
    )

    pairs: dict = {}

    def compare(label: str, new_name: str, new_fn, old_name: str, old_fn) -> None:
        timed(st, new_name, new_fn)
        timed(st, old_name, old_fn)
        new_s, old_s = st[new_name]["s"], st[old_name]["s"]
        pairs[label] = {
            "old": old_name,
            "old_s": old_s,
            "new": new_name,
            "new_s": new_s,
            "speedup": round(old_s / max(new_s, 1e-6), 2),
        }

    from regcore.io import save_displacement

    geom = fixed.geometry
    compare(
        "displacement write",
        "field .nii float32 (default)",
        lambda: save_displacement(u, geom, work / "f.nii"),
        "field .nii.gz float64 SimpleITK gzip (before)",
        lambda: legacy_displacement_write(u, geom, work / "legacy.nii.gz"),
    )
    timed(
        st, "field .nii.gz parallel gzip (--compress)", lambda: save_displacement(u, geom, work / "f.nii.gz")
    )
    pairs["displacement write"]["compress_s"] = st["field .nii.gz parallel gzip (--compress)"]["s"]
    sizes = {
        p.name: p.stat().st_size / 2**20 for p in (work / "f.nii", work / "f.nii.gz", work / "legacy.nii.gz")
    }

    def torch_deformation():
        det, ndv = deformation.jacobian_determinant_map(u), deformation.non_diffeomorphic_volume(u)
        return float(det.min()), float(ndv.double().sum())

    compare(
        "deformation metrics",
        "det J + NDV fused compiled pass",
        lambda: deformation._maps(u),
        "det J + NDV torch (slab-wise)",
        torch_deformation,
    )

    from regcore.metrics import overlap_kernels

    def overlap_without_kernels() -> dict:  # numpy bincounts + a KD-tree per label and direction
        saved, overlap_kernels.AVAILABLE = overlap_kernels.AVAILABLE, False
        try:
            return label_overlap(inp["fixed_labels"], wl, label_names=names)
        finally:
            overlap_kernels.AVAILABLE = saved

    compare(
        "label overlap (Dice, HD95, ASSD)",
        "compiled counts + shell search",
        lambda: label_overlap(inp["fixed_labels"], wl, label_names=names),
        "bincount + KD-trees",
        overlap_without_kernels,
    )
    fast, trees = label_overlap(inp["fixed_labels"], wl, label_names=names), overlap_without_kernels()
    pairs["label overlap (Dice, HD95, ASSD)"]["same_values"] = all(
        fast[k] == trees[k] for k in ("dice", "hd95", "assd")
    )

    def same(a, b, tol=1e-6) -> list[str]:
        bad = []
        for k in ("dice_mean", "hd95_mean_mm", "assd_mean_mm", "folding_percent", "sdlogj", "ndv_percent"):
            x, y = a.get(k), b.get(k)
            if (x is None) != (y is None) or (x is not None and abs(x - y) > tol * max(1.0, abs(x))):
                bad.append(f"{k}: {x} vs {y}")
        for k, v in (a.get("dice") or {}).items():
            if abs(v - b["dice"][k]) > tol:
                bad.append(f"dice[{k}]")
        return bad

    return {
        "stages": st,
        "same_run_comparisons": pairs,
        "file_sizes_mb": {k: round(v, 1) for k, v in sizes.items()},
        "child_metrics_match_recomputed": same(child, after) or "yes",
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="fireants")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="method parameter")
    ap.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="CLI runs; the must-reach is judged on their medians (default 3)",
    )
    ap.add_argument("--compare-to", type=Path, help="a run folder of an earlier `regcore register` to diff")
    args = ap.parse_args(argv)
    files = pair_files()
    load0 = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="register_e2e_"))
    try:
        warm = run_child(
            [
                sys.executable,
                "-c",
                "from regcore.compile_kernels import compile_all; compile_all(); import numpy as np; "
                "from regcore.metrics.deformation_kernels import jacobian_and_ndv_3d as f; "
                "f(np.zeros((3, 4, 4, 4), np.float32))",
            ]
        )
        out_dir = work / "run"
        cmd = [
            sys.executable,
            "-m",
            "regcore.cli",
            "register",
            "--method",
            args.method,
            "--out",
            str(out_dir),
        ]
        for role, path in files.items():
            cmd += [f"--{role.replace('_', '-')}", str(path)]
        for item in args.set:
            cmd += ["--set", item]
        cmd += ["--device", "cpu", "--quiet"]
        runs = []
        for _ in range(max(1, args.repeats)):
            shutil.rmtree(out_dir, ignore_errors=True)
            child = run_child(cmd)
            if child["code"] != 0:
                raise SystemExit(f"regcore register failed: {child['stderr'][-2000:]}")
            metrics = json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))
            runs.append({**child, "registration_s": float(metrics["runtime_s"])})
        overheads = [c["wall_s"] - c["registration_s"] for c in runs]
        cli = runs[sorted(range(len(runs)), key=overheads.__getitem__)[len(runs) // 2]]  # the median run
        cli["peak_rss_mb"] = max(c["peak_rss_mb"] for c in runs)
        reg_s = cli["registration_s"]
        helpinfo = help_check()
        imports_s = import_time()
        inproc = stages_in_process(files, out_dir, work)
        compared = None
        if args.compare_to:
            before = json.loads((args.compare_to / "metrics.json").read_text(encoding="utf-8"))
            compared = {
                k: {"earlier": before.get(k), "now": metrics.get(k)}
                for k in ("dice_mean", "hd95_mean_mm", "assd_mean_mm", "sdlogj", "ndv_percent", "runtime_s")
            }
        report = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "cores": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in load0],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "pair": {k: str(v) for k, v in files.items()},
            "command": "regcore " + " ".join(cmd[3:]),
            "kernel_warmup_s": round(warm["wall_s"], 1),
            "register": {
                "wall_s": round(cli["wall_s"], 2),
                "registration_s": round(reg_s, 2),
                "overhead_s": round(cli["wall_s"] - reg_s, 2),
                "runs": [
                    {"wall_s": round(c["wall_s"], 2), "registration_s": round(c["registration_s"], 2)}
                    for c in runs
                ],
                "cpu_s": round(cli["cpu_s"], 1),
                "peak_rss_mb": round(cli["peak_rss_mb"], 1),
                "registration_peak_memory_mb": metrics.get("peak_memory_mb"),
                "dice_mean": metrics.get("dice_mean"),
                "hd95_mean_mm": metrics.get("hd95_mean_mm"),
                "files": sorted(p.name for p in out_dir.iterdir()),
            },
            "help": helpinfo,
            "imports_s": round(imports_s, 2),
            **inproc,
            "compare_to": compared,
            "must_reach": {
                f"wall <= registration + {WALL_MARGIN_S:g} s": cli["wall_s"] <= reg_s + WALL_MARGIN_S,
                "peak RSS <= 1.5 GB": cli["peak_rss_mb"] <= RSS_LIMIT_MB,
            },
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "register_e2e.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    (RESULTS / "register_e2e.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    return 0


def markdown(r: dict) -> str:
    reg = r["register"]
    overheads = ", ".join(f"{x['wall_s'] - x['registration_s']:.2f}" for x in reg["runs"])
    lines = [
        "# `regcore register` end to end (1 mm 3D pair)",
        "",
        f"{r['date']}, {r['cores']} cores shared with other jobs: load average {r['load_average_before']} "
        f"before, {r['load_average_after']} after (times scale with the load; compare within this run).",
        "",
        f"`{r['command']}`",
        "",
        "| | value |",
        "|---|---|",
        f"| runs (wall - registration, s) | {overheads} |",
        f"| wall time (median run) | {reg['wall_s']} s |",
        f"| registration time it reports | {reg['registration_s']} s |",
        f"| wall - registration (median) | {reg['overhead_s']} s |",
        f"| CPU time (user + sys) | {reg['cpu_s']} s |",
        f"| peak RSS of the process (largest run) | {reg['peak_rss_mb']} MiB |",
        f"| Dice / HD95 | {reg['dice_mean']:.4f} / {reg['hd95_mean_mm']:.3f} mm |",
        f"| `regcore --help` | {r['help']['help_wall_s']:.2f} s, heavy modules imported: "
        f"{r['help'].get('heavy') or 'none'} |",
        f"| imports of the register path | {r['imports_s']} s |",
        "",
        "## Must reach",
        "",
        *[f"- {k}: **{'yes' if v else 'NO'}**" for k, v in r["must_reach"].items()],
        "",
        "## Stages (re-timed in one process on the same inputs and the CLI's own field)",
        "",
        "| stage | s | peak RSS so far (MiB) |",
        "|---|---|---|",
        *[f"| {k} | {v['s']} | {v['peak_rss_mb']} |" for k, v in r["stages"].items()],
        "",
        "## Same-run before/after",
        "",
        "| | before | s | after | s | speed-up |",
        "|---|---|---|---|---|---|",
        *[
            f"| {k} | {v['old']} | {v['old_s']} | {v['new']} | {v['new_s']} | {v['speedup']}x |"
            for k, v in r["same_run_comparisons"].items()
        ],
        "",
        f"File sizes (MiB): {r['file_sizes_mb']}. The CLI's metrics.json equals the re-computed metrics: "
        f"{r['child_metrics_match_recomputed']}.",
    ]
    if r.get("compare_to"):
        lines += [
            "",
            "Against the earlier run folder (`--compare-to`, e.g. one written before this change with the same "
            "schedule): " + json.dumps(r["compare_to"]),
        ]
    lines += [
        "",
        "Reading the numbers: every stage runs on the same 2 cores as the registration, so on a loaded machine "
        "`wall - registration` grows with the load like the registration does; the stage table says where it "
        "goes. Peak RSS is the child's own (`os.wait4`), MiB = 2**20 bytes; the limit 1.5 GB is taken as 1.5e9 "
        "bytes (1430 MiB).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
