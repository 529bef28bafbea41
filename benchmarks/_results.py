"""Where a benchmark script's results go: ``<out>.json`` and ``<out>.md`` side by side (the folder is made)."""

from __future__ import annotations

import json
import time
from pathlib import Path


def write_results(out: str | Path, payload: dict, markdown: str, indent: int = 1) -> Path:
    """Write ``payload`` as ``<out>.json`` and ``markdown`` as ``<out>.md``; returns ``Path(out)``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(payload, indent=indent), encoding="utf-8")
    out.with_suffix(".md").write_text(markdown, encoding="utf-8")
    return out


def run_meta(**extra) -> dict:
    """What every timing script records about its run: UTC date, torch's thread count and version, then ``extra``."""
    import torch

    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        **extra,
    }
