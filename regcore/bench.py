"""Benchmark runner: methods x pairs of a CSV manifest -> results.json + results.md.

    >>> from regcore.bench import run_benchmark
    >>> report = run_benchmark("benchmarks/manifests/brain2d.csv", ["demons", "bspline"], out_dir="out")

Row 0 of every table is ``identity`` (no registration: moving resampled onto the fixed grid).
Runs on a batch engine (:mod:`regcore.batch`): ``engine="serial"`` (default) or ``"ray"`` (one Ray task per
(method, pair); ``address`` joins a cluster), with one result file per task so a rerun skips finished work.
``grid`` sweeps method parameters (:mod:`regcore.batch.sweep`).

Per method: mean Dice, HD95 (mm), TRE (mm), folding %, SDlogJ over pairs, median runtime (s) and
peak memory (MiB, max over pairs). A method that fails on a pair (missing extra, bad input) is
recorded with its error message and the run goes on.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from regcore.batch.records import PAIR_KEYS, finite_or_none

IDENTITY = "identity"
SUMMARY_COLUMNS = (
    ("dice_mean", "Dice", "mean"),
    ("hd95_mean_mm", "HD95 mm", "mean"),
    ("tre_mean_mm", "TRE mm", "mean"),
    ("folding_percent", "folding %", "mean"),
    ("sdlogj", "SDlogJ", "mean"),
    ("runtime_s", "runtime s (median)", "median"),
    ("peak_memory_mb", "peak MiB", "max"),
)


def load_pairs(manifest: str | os.PathLike) -> tuple[list, list[str]]:
    """Pairs of a CSV manifest (``regcore.data.load_manifest``) and the per-row error messages."""
    path = Path(manifest)
    if not path.is_file():
        raise ValueError(f"pairs manifest must be an existing CSV file, got {str(path)!r}")
    from regcore.data import load_manifest

    ds = load_manifest(path)
    pairs = list(getattr(ds, "manifest_pairs", None) or ds.pairs())
    return pairs, list(ds.errors)


def _aggregate(values: list[float | None], how: str) -> float | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"mean": statistics.fmean, "median": statistics.median, "max": max}[how](vals)


def evaluate_identity_pair(pair) -> dict:
    """Metrics of "no registration" for a pair (moving resampled onto the fixed grid)."""
    from regcore.metrics.evaluate import evaluate_identity
    from regcore.register import label_mismatch_warnings, prepare_moving

    t0 = time.perf_counter()
    moving = prepare_moving(pair.fixed, pair.moving)
    mlab = prepare_moving(pair.fixed, pair.moving_labels) if pair.moving_labels is not None else None
    metrics = evaluate_identity(
        pair.fixed,
        moving,
        fixed_labels=pair.fixed_labels,
        moving_labels=mlab,
        fixed_landmarks=pair.fixed_landmarks,
        moving_landmarks=pair.moving_landmarks,
        label_names=pair.label_names,
        method=IDENTITY,
    )
    if pair.fixed_labels is not None and pair.moving_labels is not None:
        metrics.setdefault("warnings", []).extend(
            w
            for w in label_mismatch_warnings(pair.fixed_labels, pair.moving_labels, pair.label_names)
            if w not in metrics["warnings"]
        )
    metrics["runtime_s"] = time.perf_counter() - t0
    return metrics


def run_benchmark(
    manifest: str | os.PathLike,
    methods: Sequence[str],
    *,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    out_dir: str | os.PathLike | None = None,
    device: str = "auto",
    log: Callable[[str], None] | None = None,
    command: str | None = None,
    engine: str | Any = "serial",
    address: str | None = None,
    num_cpus: int | None = None,
    threads: int | None = None,
    grid: Mapping[str, Mapping[str, Sequence[Any]]] | Sequence[str] | None = None,
    retry_failed: bool = False,
    fresh: bool = False,
    bar: bool = False,
    callback: Callable[[dict], None] | None = None,
) -> dict:
    """Run ``methods`` on every pair of ``manifest`` on a batch engine; write results to ``out_dir`` if given.

    Args:
        manifest: CSV with ``name,fixed,moving,fixed_labels,moving_labels,fixed_landmarks,moving_landmarks,
            label_names`` (paths relative to the CSV).
        methods: registry names (``identity`` is always added as row 0).
        overrides: ``{method: {param: value}}``.
        engine: ``"serial"`` (default; this process) or ``"ray"`` (embedded local Ray, or the cluster at
            ``address``); see :mod:`regcore.batch.engine`. Both give the same metrics.
        grid: sweep ``{method: {param: [values]}}`` or ``["weight=0.1,1", "demons.sigma_elastic=1,2"]``
            (:mod:`regcore.batch.sweep`); every grid point is a row labelled ``method[param=value]``.
        retry_failed: rerun tasks recorded as failed in ``out_dir`` (finished ones are skipped unless ``fresh``).
        fresh: rerun every task, also those whose result is in ``out_dir`` (the default reuses them: a task is its
            method, overrides, pair files and regcore's code version, so only results of the same code are reused).
        bar: progress bar on stderr; ``callback`` gets the batch status after each task.
    Returns:
        ``{"manifest", "methods", "pairs": [{pair, method, metrics...}], "summary": [{method, ...}],
        "errors", "environment", "reused", "paths"}`` (``reused``: how many results came from ``out_dir`` instead
        of running); with ``out_dir``: ``results.json``/``results.md`` (+ ``sweep.md``, ``pareto.html``,
        ``pareto.png`` for a grid) and one ``tasks/<key>.json`` per (method, pair).
    """
    from regcore.batch.engine import run_tasks
    from regcore.batch.manifest import manifest_refs
    from regcore.batch.sweep import expand, parse_grid
    from regcore.batch.tasks import Task
    from regcore.methods.registry import get

    if isinstance(methods, str) or not all(isinstance(m, str) for m in methods):
        raise TypeError(f"methods must be a list of method names, got {methods!r}")
    methods = [m for m in methods if m != IDENTITY]
    overrides = {k: dict(v) for k, v in (overrides or {}).items()}
    for name in list(methods) + list(overrides):
        get(name)  # ValueError listing the known names
    for name, ov in overrides.items():
        get(name).make_config(ov)  # bad parameter -> ValueError before any work
    unknown = set(overrides) - set(methods)
    if unknown:
        raise ValueError(f"--set names method(s) {sorted(unknown)} that are not in --methods {methods}")
    if grid is not None and not isinstance(grid, Mapping):
        grid = parse_grid(list(grid), methods)
    grid = {m: {k: list(v) for k, v in g.items()} for m, g in (grid or {}).items()}
    variants = expand(methods, grid, overrides)
    say = log or (lambda s: None)
    refs, errors = manifest_refs(manifest)
    if not refs:
        raise ValueError(f"{manifest}: no loadable pairs ({'; '.join(errors) or 'empty manifest'})")
    tasks = []
    for ref in refs:
        tasks.append(Task(IDENTITY, ref, label=IDENTITY, device=device))
        tasks += [Task(v.method, ref, v.overrides, label=v.label, device=device) for v in variants]

    ran: set[str] = set()  # keys of the tasks this call ran (the others were reused from out_dir)

    def on_record(task, rec) -> None:
        ran.add(task.key)
        say(
            f"[{task.pair_name}] {task.label}: "
            + (
                f"failed: {rec.get('error')}"
                if rec.get("status") != "ok"
                else ", ".join(f"{k}={rec[k]:.4g}" for k in PAIR_KEYS if rec.get(k) is not None)
            )
        )

    records = run_tasks(
        tasks,
        out_dir,
        engine=engine,
        address=address,
        num_cpus=num_cpus,
        threads=threads,
        retry_failed=retry_failed,
        fresh=fresh,
        bar=bar,
        callback=callback,
        on_record=on_record,
    )
    params = {v.label: (v.method, v.params) for v in variants}
    params[IDENTITY] = (IDENTITY, {})
    rows: list[dict] = []
    for rec in records:
        row: dict[str, Any] = {"pair": rec["pair"], "method": rec["label"]}
        if rec["label"] != rec["method"]:
            row.update(base_method=rec["method"], params=params.get(rec["label"], (None, {}))[1])
        if rec.get("status") != "ok":
            row["error"] = rec.get("error", "unknown error")
        else:
            row.update({k: finite_or_none(rec.get(k)) for k in PAIR_KEYS})
            row.update(
                device=rec.get("device"), dice=rec.get("dice") or {}, warnings=rec.get("warnings") or []
            )
        rows.append(row)
    summary = []
    for label in [IDENTITY, *[v.label for v in variants]]:
        ok = [r for r in rows if r["method"] == label and "error" not in r]
        entry: dict[str, Any] = {
            "method": label,
            "pairs": len(ok),
            "failed": sum(1 for r in rows if r["method"] == label and "error" in r),
        }
        if label in params and params[label][0] != label:
            entry.update(base_method=params[label][0], params=params[label][1])
        for key, _, how in SUMMARY_COLUMNS:
            entry[key] = _aggregate([r.get(key) for r in ok], how)
        summary.append(entry)
    eng_name = engine if isinstance(engine, str) else getattr(engine, "name", type(engine).__name__)
    env = {**_environment(device), "engine": eng_name, "address": address, "num_cpus": num_cpus}
    report = {
        "manifest": str(manifest),
        "command": command,
        "methods": [IDENTITY, *methods],
        "overrides": overrides,
        "grid": grid,
        "summary": summary,
        "pairs": rows,
        "errors": errors,
        "environment": env,
        "reused": sum(rec.get("key") not in ran for rec in records),
        "paths": {},
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        report["paths"] = {"json": str(out / "results.json"), "markdown": str(out / "results.md")}
        if grid:
            from regcore.batch.sweep import write_sweep_outputs

            report["paths"].update(write_sweep_outputs(report, out))
        (out / "results.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
        (out / "results.md").write_text(to_markdown(report), encoding="utf-8")
    return report


def _environment(device: str) -> dict:
    import torch

    from regcore.batch.code_version import code_fingerprint

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
        "cuda": torch.cuda.is_available(),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "regcore_code": code_fingerprint(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


def _fmt(v, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def to_markdown(report: Mapping) -> str:
    """Summary table (identity first) + one table per pair + errors."""
    head = ["method", "pairs"] + [label for _, label, _ in SUMMARY_COLUMNS]
    lines = [
        f"# Benchmark: {Path(report['manifest']).name}",
        "",
        *([f"Command: `{report['command']}`", ""] if report.get("command") else []),
        f"Environment: {json.dumps(report.get('environment', {}))}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for s in report["summary"]:
        cells = [s["method"], f"{s['pairs']}" + (f" ({s['failed']} failed)" if s["failed"] else "")]
        cells += [_fmt(s.get(k), 4 if k == "dice_mean" else 2) for k, _, _ in SUMMARY_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    for pair in dict.fromkeys(r["pair"] for r in report["pairs"]):
        lines += [
            "",
            f"## {pair}",
            "",
            "| method | Dice | HD95 mm | TRE mm | folding % | SDlogJ | runtime s | peak MiB |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in (r for r in report["pairs"] if r["pair"] == pair):
            if "error" in r:
                lines.append(f"| {r['method']} | failed: {r['error'][:160]} |  |  |  |  |  |  |")
                continue
            lines.append(
                "| "
                + " | ".join(
                    [r["method"]] + [_fmt(r.get(k), 4 if k == "dice_mean" else 2) for k in PAIR_KEYS]
                )
                + " |"
            )
    if report.get("errors"):
        lines += ["", "## Manifest rows that could not be loaded", ""] + [f"- {e}" for e in report["errors"]]
    overrides = report.get("overrides")
    if overrides:
        lines += ["", f"Overrides: `{json.dumps(overrides)}`"]
    return "\n".join(lines) + "\n"
