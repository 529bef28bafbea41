"""``regcore`` command line: methods | register | report | bench | train.

    regcore methods [--json]
    regcore register --fixed F --moving M --method NAME [--fixed-labels FL --moving-labels ML]
                     [--fixed-landmarks FP --moving-landmarks MP] [--label-names CSV]
                     [--set key=value ...] [--device auto|cpu|cuda] --out DIR [--report] [--compress]
    regcore report RUN_DIR [--axis 0|1|2 --index N]
    regcore bench --pairs MANIFEST.csv --methods a,b,c [--set method.key=value ...] --out DIR
                  [--engine serial|ray] [--address auto|HOST:PORT] [--grid [method.]key=v1,v2 ...]
    regcore sweep --pairs MANIFEST.csv --methods a,b --grid [method.]key=v1,v2,... --out DIR [engine options]
    regcore train --config FILE --out DIR [--resume] [--nproc N [--nnodes M --node-rank R --master-addr A]]

Errors print one line on stderr and exit with code 2 (no traceback).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import sys
from collections.abc import Sequence
from typing import NoReturn

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def parse_sets(items: Sequence[str] | None, *, qualified: bool = False) -> dict:
    """``["key=value", ...]`` -> ``{key: "value"}``; with ``qualified`` -> ``{method: {key: "value"}}``."""
    out: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CliError(f"--set expects key=value, got {item!r}")
        if qualified:
            method, dot, name = key.partition(".")
            if not dot or not method or not name:
                raise CliError(
                    f"bench --set expects method.key=value (e.g. demons.iterations=20), got {item!r}"
                )
            out.setdefault(method, {})[name] = value.strip()
        else:
            out[key] = value.strip()
    return out


# -- methods ------------------------------------------------------------------------------------
def cmd_methods(args) -> int:
    from regcore.methods.registry import all_specs

    specs = [s.to_json() for s in all_specs()]
    if args.json:
        print(json.dumps(specs, indent=2, default=str))
        return 0
    for s in specs:
        flag = "" if s["available"] else f"  [needs extra: {s['requires']}]"
        print(f"{s['name']:<18} {s['family']:<16} {s['supervision']:<18} dims={s['dims']}{flag}")
        for p in s["parameters"]:
            rng = f" range={p['range']}" if p["range"] else ""
            ch = f" choices={p['choices']}" if p["choices"] else ""
            print(f"    {p['name']} ({p['type']}, default={p['default']}){rng}{ch}: {p['help']}")
    return 0


def cmd_report(args) -> int:
    from regcore.report import write_report

    path = write_report(args.run_dir, axis=args.axis, index=args.index)
    print(f"wrote {path}", file=sys.stderr)
    return 0


# -- bench / train ------------------------------------------------------------------------------
def cmd_bench(args) -> int:
    from regcore.bench import run_benchmark

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise CliError(f"--methods needs a comma-separated list of method names, got {args.methods!r}")
    report = run_benchmark(
        args.pairs,
        methods,
        overrides=parse_sets(args.set, qualified=True),
        out_dir=args.out,
        device=args.device,
        log=None,
        command="regcore " + shlex.join(sys.argv[1:]),
        **_batch_kwargs(args),
    )
    _print_batch_summary(report, args.quiet)
    return 0


def _batch_kwargs(args) -> dict:
    """Engine options shared by `bench` and `sweep` (see regcore.batch)."""
    if args.address and args.engine != "ray":
        raise CliError("--address needs --engine ray")
    return {
        "engine": args.engine,
        "address": args.address,
        "num_cpus": args.num_cpus,
        "threads": args.threads,
        "grid": args.grid or None,
        "retry_failed": args.retry_failed,
        "fresh": args.fresh,
        "bar": not args.quiet,
    }


def _print_batch_summary(report: dict, quiet: bool) -> None:
    failed = sum("error" in r for r in report["pairs"])
    if not quiet:
        print(f"{len(report['pairs'])} tasks, {failed} failed", file=sys.stderr)
    if report.get("reused"):
        print(
            f"{report['reused']} task(s) reused from the results already in the output folder "
            "(--fresh reruns them)",
            file=sys.stderr,
        )
    for p in report["paths"].values():
        print(f"wrote {p}", file=sys.stderr)


def cmd_sweep(args) -> int:
    if not args.grid:
        raise CliError("sweep needs at least one --grid KEY=V1,V2,... (e.g. --grid weight=0.1,1,10)")
    return cmd_bench(args)


def _add_batch_options(b: argparse.ArgumentParser) -> None:
    """--engine/--address/--num-cpus/--threads/--grid/--retry-failed/--fresh of `bench` and `sweep`."""
    b.add_argument(
        "--engine",
        default="serial",
        choices=("serial", "ray"),
        help="serial: one task after another in this process (default); ray: one Ray task per "
        "(method, pair), on an embedded local Ray or the cluster at --address",
    )
    b.add_argument(
        "--address", help="Ray cluster to join: auto, HOST:PORT or ray://HOST:10001 (with --engine ray)"
    )
    b.add_argument("--num-cpus", type=int, help="CPUs of the embedded local Ray (default: all cores)")
    b.add_argument(
        "--threads", type=int, help="torch threads per task (ray default 1, serial default torch's)"
    )
    b.add_argument(
        "--grid",
        action="append",
        metavar="[METHOD.]KEY=V1,V2,...",
        help="sweep a method parameter over values (repeatable; grid points multiply)",
    )
    b.add_argument("--retry-failed", action="store_true", help="rerun tasks recorded as failed in --out")
    b.add_argument(
        "--fresh",
        action="store_true",
        help="rerun every task, also those whose result is already in --out (a re-run otherwise reuses the "
        "results of the same inputs, method settings and regcore code)",
    )


# Subcommands that live beside their feature: name -> (module, help). The module defines
# ``add_arguments(parser)`` and ``run(args) -> int`` and imports its heavy dependencies inside ``run``.
COMMAND_MODULES: dict[str, tuple[str, str]] = {
    "register": ("regcore.register_cli", "register one pair and write warped image, field and metrics"),
    "train": ("regcore.train.cli", "train a learned method from a config file"),
    "atlas": ("regcore.atlas.cli", "build an unbiased template (atlas) from many subjects"),
    "uncertainty": ("regcore.uncertainty.cli", "per-voxel registration uncertainty maps"),
    "segment": ("regcore.segment.cli", "multi-atlas segmentation: register labelled atlases, fuse labels"),
}


def _add_module_commands(sub) -> None:
    for name, (module_name, help_text) in COMMAND_MODULES.items():
        module = importlib.import_module(module_name)
        parser = sub.add_parser(name, help=help_text)
        module.add_arguments(parser)
        parser.set_defaults(func=module.run)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="regcore", description="RegLab registration engine")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("methods", help="list registered methods and their parameters")
    m.add_argument("--json", action="store_true", help="machine-readable JSON")
    m.set_defaults(func=cmd_methods)

    q = sub.add_parser("report", help="write RUN_DIR/report.html from a folder written by `register --out`")
    q.add_argument("run_dir", metavar="RUN_DIR")
    q.add_argument("--axis", type=int, choices=(0, 1, 2), help="3D: slice axis (default 2, axial)")
    q.add_argument("--index", type=int, help="3D: slice index along --axis (default the middle)")
    q.set_defaults(func=cmd_report)

    b = sub.add_parser("bench", help="run methods over the pairs of a CSV manifest")
    b.add_argument("--pairs", required=True, help="CSV manifest (name,fixed,moving,fixed_labels,...)")
    b.add_argument("--methods", required=True, help="comma-separated method names")
    b.add_argument("--set", action="append", metavar="METHOD.KEY=VALUE")
    b.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    b.add_argument("--out", required=True)
    b.add_argument("--quiet", action="store_true")
    _add_batch_options(b)
    b.set_defaults(func=cmd_bench)

    w = sub.add_parser("sweep", help="sweep method parameters x pairs; results table and Pareto plots")
    w.add_argument("--pairs", required=True, help="CSV manifest (name,fixed,moving,fixed_labels,...)")
    w.add_argument("--methods", required=True, help="comma-separated method names")
    w.add_argument("--set", action="append", metavar="METHOD.KEY=VALUE", help="fixed parameter (repeatable)")
    w.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    w.add_argument("--out", required=True)
    w.add_argument("--quiet", action="store_true")
    _add_batch_options(w)
    w.set_defaults(func=cmd_sweep)

    _add_module_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``regcore`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse exits with code 2 on bad usage
    from regcore.heap import return_large_frees

    return_large_frees()  # image-sized frees go back to the system: ~230 MiB lower peak on a 1 mm 3D run
    try:
        return args.func(args)
    except (CliError, ValueError, TypeError, ImportError, OSError, RuntimeError) as exc:
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"regcore {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        print(
            f"regcore {args.command}: error: out of memory; use smaller images or a larger machine",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"regcore {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug, not bad input: still one line (REGCORE_DEBUG=1: traceback)
        if os.environ.get("REGCORE_DEBUG"):
            raise
        msg = " ".join(str(exc).split()) or "no message"
        print(
            f"regcore {args.command}: internal error ({type(exc).__name__}: {msg}); please report it "
            "(REGCORE_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1


def console_main() -> NoReturn:
    """The ``regcore`` console script: :func:`main`, then a fast exit (:func:`exit_without_teardown`)."""
    exit_without_teardown(main())


def exit_without_teardown(code: int) -> NoReturn:
    """End the process with ``code`` as a normal exit would, minus the interpreter's teardown.

    Output streams are flushed and ``atexit`` handlers run (file finalisers, Ray's shutdown), then the process
    ends at once: Python's module clean-up and final garbage collection passes over everything torch
    loaded (~0.25 s of a CLI run) are skipped. With other non-daemon threads still running, or when it cannot
    flush, it falls back to ``sys.exit``, which waits for them.
    """
    import atexit
    import threading

    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: let the normal exit report it as Python would
        sys.exit(code)
    os._exit(code)


if __name__ == "__main__":
    console_main()
