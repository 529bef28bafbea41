"""Cost of one full-resolution fireants iteration, kernel by kernel, against another git revision in the same run.

One iteration of ``fireants._iterate_compiled`` on a 160x192x224 grid (a 1 mm brain): warp the moving image, box
LNCC force (window 7), smooth the force (sigma 0.875), gradient step, compose, smooth the field (sigma 0.5): the
3D preset's settings. Inputs are synthetic and seeded (a smooth random volume, a 3-voxel smooth field), so the
script needs no data and both revisions see the same arrays. Each revision runs in its own child process (the
kernels are imported from that checkout), alternating A B A B ... for ``--rounds`` rounds; a stage's figure is the
median over the rounds of the child's median over ``--repeats`` calls, and the ratio A/B is the median of the
per-round ratios (pairing keeps it meaningful when the machine's speed drifts). ``--register`` adds a whole
``fireants`` registration (auto preset) of the real OASIS pair 0456 -> 0455 to each child (needs ../shared/data).

    nice -n 5 .venv/bin/python benchmarks/fireants_iteration.py --against HEAD~1 --register
    .venv/bin/python benchmarks/fireants_iteration.py                       # this checkout only, kernels only

``--against REV`` checks REV out into a temporary git worktree (removed afterwards). Writes
benchmarks/results/fireants_iteration.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _results import write_results

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (160, 192, 224)
STAGES = ("warp", "lncc_force", "smooth_force", "gradient_step", "compose", "smooth_field")


def child(root: str, repeats: int, threads: int, register: bool) -> dict[str, float]:
    """Median seconds of each stage with the kernels of the checkout at ``root`` (and of one registration)."""
    sys.path.insert(0, root)
    import time

    import numpy as np
    import torch
    import torch.nn.functional as F

    from regcore.methods.classical import greedy_kernels
    from regcore.spatial import warp_kernels

    if not Path(greedy_kernels.__file__).is_relative_to(root):
        raise SystemExit(f"imported {greedy_kernels.__file__}, not from {root}")
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)

    def smooth_random(channels: int, scale: float) -> np.ndarray:
        coarse = torch.randn(1, channels, *[s // 16 for s in SHAPE], generator=g)
        up = F.interpolate(coarse, size=SHAPE, mode="trilinear", align_corners=True)[0]
        return (up / up.abs().amax() * scale).contiguous().numpy()

    fixed, moving = smooth_random(1, 1.0), smooth_random(1, 1.0)
    field = smooth_random(3, 3.0)
    warped, force, spare, out = (np.empty_like(a) for a in (moving, field, field, field))
    ws = greedy_kernels.GreedyWorkspace(SHAPE)
    calls = {
        "warp": lambda: warp_kernels.resample(moving, field, warped, "bilinear", "border", threads),
        "lncc_force": lambda: ws.lncc_force(fixed, warped, 7, force),
        "smooth_force": lambda: ws.smooth(force, 0.875, scratch=spare),
        "gradient_step": lambda: ws.gradient_step(force, 1.0),
        "compose": lambda: ws.compose(field, force, out),
        "smooth_field": lambda: ws.smooth(out, 0.5, scratch=spare),
    }
    times: dict[str, list[float]] = {k: [] for k in STAGES}
    for rep in range(repeats + 1):  # the first pass warms up (and compiles a cold numba cache)
        for name in STAGES:
            if name == "lncc_force":
                calls["warp"]()  # the force of a freshly warped image, not of a stepped one
            t0 = time.perf_counter()
            calls[name]()
            if rep:
                times[name].append(time.perf_counter() - t0)
    medians = {name: statistics.median(t) for name, t in times.items()}
    if register:
        medians["registration"] = time_registration()
    return medians


def time_registration() -> float:
    """Seconds of ``FireANTsMethod().register`` (auto preset) on OASIS 0456 -> 0455 (1 mm, 160x192x224)."""
    from _shared_data import shared_folder

    from regcore.io import load_image
    from regcore.methods.classical.fireants import FireANTsMethod

    folder = shared_folder("brain3d")
    if folder is None:
        raise SystemExit("--register needs ../shared/data/brain3d")
    fixed, moving = (load_image(folder / "images" / f"OASIS_OAS1_{s}_MR1.nii.gz") for s in ("0455", "0456"))
    return FireANTsMethod().register(fixed, moving).runtime_s


def run_child(root: Path, repeats: int, threads: int, register: bool) -> dict[str, float]:
    """Seconds per stage (and of the registration with ``register``) from a child process on ``root``."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        str(root),
        "--repeats",
        str(repeats),
        "--threads",
        str(threads),
    ]
    cmd += ["--register"] if register else []
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"child for {root} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def describe(root: Path) -> str:
    """The checkout's commit, short, with ``+changes`` when its tracked files differ from it."""
    sha = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(["git", "-C", str(root), "diff", "--quiet", "HEAD"], check=False).returncode
    return sha.stdout.strip() + ("+changes" if dirty else "")


def summarise(rounds: dict[str, list[dict[str, float]]]) -> dict:
    """Per revision and stage: median over rounds (ms); with two revisions, median pairwise ratios A/B."""
    labels = list(rounds)
    table: dict = {}

    def value(r: dict[str, float], name: str) -> float:
        return sum(r[k] for k in STAGES) if name == "iteration" else r[name]

    names = (*STAGES, "iteration", *(["registration"] if "registration" in rounds[labels[0]][0] else []))
    for name in names:
        row: dict = {}
        for label in labels:
            row[label] = statistics.median(value(r, name) for r in rounds[label]) * 1000
        if len(labels) == 2:
            a, b = rounds[labels[0]], rounds[labels[1]]
            ratios = [value(x, name) / value(y, name) for x, y in zip(a, b, strict=True)]
            row["ratio"] = statistics.median(ratios)
        table[name] = row
    return table


def to_markdown(payload: dict) -> str:
    labels = payload["revisions"]
    head = "| stage | " + " | ".join(f"{k} ms" for k in labels) + (" | A/B |" if len(labels) == 2 else " |")
    lines = [
        "# One full-resolution fireants iteration, kernel by kernel",
        "",
        f"{payload['date']}, {payload['threads']} threads, grid {'x'.join(map(str, SHAPE))}, "
        f"{payload['rounds']} rounds x {payload['repeats']} calls, load average {payload['load_before']} before, "
        f"{payload['load_after']} after.",
        "",
        f"`{payload['command']}`",
        "",
        head,
        "|---" * (len(labels) + 1 + (len(labels) == 2)) + "|",
    ]
    for name, row in payload["table"].items():
        cells = [f"{row[k]:.1f}" for k in labels] + ([f"{row['ratio']:.2f}"] if "ratio" in row else [])
        lines.append(
            f"| {'**one iteration (sum)**' if name == 'iteration' else name} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "Medians over rounds of each child's median; A/B is the median of per-round ratios (A = this checkout).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict | None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--against", help="a git revision to compare with (checked out into a temporary worktree)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--register", action="store_true", help="also time a whole registration (needs ../shared)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fireants_iteration")
    args = p.parse_args(argv)
    if args.child:  # prints one JSON line of seconds per stage for the parent
        print(json.dumps(child(args.child, args.repeats, args.threads, args.register)))
        return None
    if args.rounds < 1 or args.repeats < 1:
        p.error("--rounds and --repeats must be at least 1")
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="fireants_iteration_") as tmp:
        roots = {f"this checkout ({describe(ROOT)})": ROOT}
        if args.against:
            base = Path(tmp) / "base"
            add = ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.against]
            done = subprocess.run(add, capture_output=True, text=True, check=False)
            if done.returncode:
                p.error(f"--against {args.against!r}: {done.stderr.strip().splitlines()[-1]}")
            roots[f"{args.against} ({describe(base)})"] = base
        try:
            rounds: dict[str, list[dict[str, float]]] = {label: [] for label in roots}
            for k in range(args.rounds):
                for label, root in roots.items():
                    rounds[label].append(run_child(root, args.repeats, args.threads, args.register))
                    done_ms = {name: round(t * 1000, 1) for name, t in rounds[label][-1].items()}
                    print(f"round {k + 1}/{args.rounds} {label}: {done_ms}", flush=True)
        finally:
            if args.against:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False
                )
    payload = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python benchmarks/fireants_iteration.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "threads": args.threads,
        "rounds": args.rounds,
        "repeats": args.repeats,
        "revisions": list(roots),
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "table": summarise(rounds),
        "raw_seconds": rounds,
    }
    markdown = to_markdown(payload)
    write_results(args.out, payload, markdown)
    print(markdown)
    return payload


if __name__ == "__main__":
    main()
