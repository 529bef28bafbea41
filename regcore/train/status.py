"""Run-folder files shared by the loop, the worker and the job manager (no torch import).

``status.json`` (atomic rewrite), ``metrics.jsonl`` (append-only), the ``STOP`` file.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

STOP_FILE = "STOP"
STATES = ("queued", "running", "stopped", "finished", "failed")


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write_status(run_dir: str | Path, *, state: str, **fields: Any) -> dict[str, Any]:
    """Rewrite ``status.json`` atomically, keeping previous fields not given here."""
    if state not in STATES:
        raise ValueError(f"state must be one of {STATES}, got {state!r}")
    run_dir = Path(run_dir)
    old = read_status(run_dir) or {}
    status = {**old, **fields, "state": state, "pid": fields.get("pid", os.getpid()), "updated": time.time()}
    tmp = run_dir / "status.json.tmp"
    tmp.write_text(json.dumps({k: _clean(v) for k, v in status.items()}), encoding="utf-8")
    os.replace(tmp, run_dir / "status.json")
    return status


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    """The parsed ``status.json``, or None when absent/unreadable."""
    p = Path(run_dir) / "status.json"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def append_metrics(run_dir: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line to ``metrics.jsonl`` (NaN/inf written as null)."""
    with open(Path(run_dir) / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All complete records of ``metrics.jsonl`` (a half-written last line is skipped)."""
    p = Path(run_dir) / "metrics.jsonl"
    if not p.is_file():
        return []
    out = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def finite_or_none(value: Any) -> float | None:
    """``value`` as a float when it is a finite number, else None (metrics records write NaN as null)."""
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def headline_validation(record: dict[str, Any]) -> tuple[str, float] | None:
    """The validation number a run is judged by in one epoch record: ``("Dice", v)``, or ``("loss", v)`` when the
    validation pairs have no labels (Dice empty); None when the record holds neither."""
    dice = finite_or_none(record.get("val_dice"))
    if dice is not None:
        return "Dice", dice
    loss = finite_or_none(record.get("val_loss"))
    return None if loss is None else ("loss", loss)


def validation_summary(record: dict[str, Any]) -> str:
    """``"val Dice 0.712"`` or ``"val loss -0.288"`` (see :func:`headline_validation`)."""
    head = headline_validation(record)
    return "no validation yet" if head is None else f"val {head[0]} {head[1]:.3f}"
