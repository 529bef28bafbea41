"""Background training process: ``python -m regcore.train.worker runs/<id> [--resume]``.

Reads ``runs/<id>/config.json`` and runs :func:`regcore.train.loop.run_training` into the same
folder. SIGTERM is turned into a graceful stop (checkpoint + state "stopped"). Exit code 0 on
finished/stopped, 1 on failure (the message is in ``status.json``; the traceback in ``worker.log``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from pathlib import Path

from regcore.train.status import STOP_FILE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m regcore.train.worker", description=__doc__)
    parser.add_argument("run_dir", type=Path, help="run folder holding config.json")
    parser.add_argument("--resume", action="store_true", help="continue from checkpoints/last.pt")
    args = parser.parse_args(argv)
    run_dir: Path = args.run_dir
    if not (run_dir / "config.json").is_file():
        print(f"error: {run_dir / 'config.json'} not found", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: (run_dir / STOP_FILE).touch())
    _trust_run_family(run_dir)
    from regcore.train.loop import run_training

    try:
        run_training(run_dir / "config.json", run_dir, resume=args.resume)
    except Exception:
        traceback.print_exc()
        return 1
    return 0


def _trust_run_family(run_dir: Path) -> None:
    """The run's config.json was written by regcore.train.jobs after the family was validated in the
    parent process: its plug-in family module may be imported here (see family.trust_module)."""
    import json

    from regcore.methods.learned.family import trust_module

    try:
        module = json.loads((run_dir / "config.json").read_text(encoding="utf-8")).get("family_module")
    except (OSError, ValueError, AttributeError):
        return
    if isinstance(module, str) and module:
        trust_module(module)


def _exit_without_finalising(code: int) -> None:
    """End a torchrun rank without interpreter finalisation or C++ static destructors. Gloo's worker threads
    can still hold tensors when Python tears down, and a rank then aborts at exit ("terminate called without an
    active exception", SIGABRT) after its training finished and was saved; torchrun reports the whole run failed.
    Everything the run writes is closed by then, so only the standard streams need flushing."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_code = main()
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        _exit_without_finalising(exit_code)
    sys.exit(exit_code)
