"""Training engine: TrainConfig recipes, the loop, background jobs and checkpoints.

``run_training(config_path, out_dir, resume=False)`` trains in-process (the CLI's
``regcore train``); :mod:`regcore.train.jobs` runs the same loop in a separate process.
Imports are lazy so ``import regcore.train`` stays light.
"""

from __future__ import annotations


def run_training(config_path, out_dir, resume: bool = False):
    """Train the recipe at ``config_path`` into ``out_dir``; see :func:`regcore.train.loop.run_training`."""
    from regcore.train.loop import run_training as _run

    return _run(config_path, out_dir, resume=resume)


__all__ = ["run_training"]
