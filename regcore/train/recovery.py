"""Nothing lost: what a training run does when it fails or is resumed.

* A NaN/inf loss (:class:`~regcore.methods.learned.family.NonFiniteLoss`) stops the run with a clear
  status; ``checkpoints/last.pt`` is never overwritten by non-finite weights (:func:`require_finite`),
  so the last good epoch stays resumable.
* A worker killed without warning (``kill -9``, power loss) leaves ``status.json`` saying "running";
  :func:`regcore.train.jobs.status` reads it as failed, and a resume continues from the last checkpoint
  (at most one epoch lost). :func:`truncate_metrics` drops the metric records written after that
  checkpoint, so the curves continue from it instead of repeating steps.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from regcore.methods.learned.family import NonFiniteLoss
from regcore.train.status import read_metrics

__all__ = ["NonFiniteLoss", "failure_message", "require_finite", "truncate_metrics"]


def require_finite(nets: torch.nn.Module, step: int) -> None:
    """NonFiniteLoss when any weight is NaN/inf (checked before a checkpoint is written)."""
    for name, p in nets.named_parameters():
        if not torch.isfinite(p).all():
            raise NonFiniteLoss(f"weight {name} became NaN or infinite by step {step}")


def _checkpoint_epoch(out: Path) -> int | None:
    try:
        from regcore.train.checkpoint import load_checkpoint

        return int(load_checkpoint(out / "checkpoints" / "last.pt")["epoch"])
    except (ValueError, KeyError, TypeError):
        return None


def failure_message(exc: BaseException, out: Path) -> str:
    """The status message of a failed run: for NaN/inf, what is kept and how to continue."""
    if isinstance(exc, NonFiniteLoss):
        epoch = _checkpoint_epoch(out)
        kept = (
            f"the last good checkpoint (epoch {epoch}) is kept in checkpoints/last.pt; lower lr or the loss "
            "weights and resume"
            if epoch is not None
            else "no epoch had finished, so there is no checkpoint; "
            "lower lr or the loss weights and start again"
        )
        return f"stopped: {exc}; {kept}"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted; resume to continue from the last checkpoint"
    return f"{type(exc).__name__}: {exc}"


def truncate_metrics(out: Path, step: int) -> int:
    """Keep only the ``metrics.jsonl`` records up to ``step`` (the checkpoint a resume starts from), plus
    one ``kind="resume"`` record; returns how many records were dropped. Written atomically."""
    path = Path(out) / "metrics.jsonl"
    records = read_metrics(out)
    kept = [r for r in records if not isinstance(r.get("step"), (int, float)) or r["step"] <= step]
    dropped = len(records) - len(kept)
    kept.append({"kind": "resume", "step": step, "dropped_records": dropped})
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    os.replace(tmp, path)
    return dropped
