"""Train a family on a batch source the TrainConfig cannot name (e.g. aligned multimodal crops).

The engine's loop (:mod:`regcore.train.loop`) draws its pairs from the data sources a recipe names. Families whose
training data is built differently (CoMIR's aligned multimodal pairs, the deep-similarity scorer's aligned and
misaligned crops) hand :func:`train_on_source` any object with ``batch(rng) -> dict`` and get the same seeded
steps, time limit, ``metrics.jsonl`` and checkpoint format (``model.pt``, loadable by inference).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


def train_on_source(
    config: Any, source: Any, out: str | Path, *, report_key: str, init_checkpoint: str = ""
) -> Path:
    """Run ``config.epochs * config.steps_per_epoch`` steps of ``config``'s family on ``source.batch(rng)``.

    ``rng`` is ``numpy.random.default_rng([seed, step])`` (reproducible). Stops early at ``config.time_limit_min``.
    Writes ``out/metrics.jsonl`` (one line per step: step, time_s, loss terms) and ``out/model.pt``; prints the
    ``report_key`` term every 100 steps. ``init_checkpoint`` starts from those weights. Returns the checkpoint."""
    from regcore.methods.learned.family import StepContext
    from regcore.train.checkpoint import load_checkpoint, save_checkpoint
    from regcore.train.loop import _payload

    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    family = config.learned_family()
    nets = family.build(config.dims, config.family_config)
    if init_checkpoint:  # a second stage starts from the first stage's weights
        from regcore.methods.learned.inference import resolve_checkpoint

        nets.load_state_dict(load_checkpoint(resolve_checkpoint(init_checkpoint))["state_dict"])
    opts = family.optimizers(nets, config.lr)
    ctx = StepContext(config=config, family_config=config.family_config, similarity=nn.Identity())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    total, t0, step, terms = config.epochs * config.steps_per_epoch, time.perf_counter(), 0, {}
    with open(out / "metrics.jsonl", "w", encoding="utf-8") as log:
        while step < total:
            if config.time_limit_min and time.perf_counter() - t0 > 60 * config.time_limit_min:
                break
            ctx.step = step
            terms = family.train_step(
                nets, opts, source.batch(np.random.default_rng([config.seed, step])), ctx
            )
            step += 1
            log.write(
                json.dumps({"step": step, "time_s": round(time.perf_counter() - t0, 2), **terms}) + "\n"
            )
            if step % 100 == 0:
                log.flush()
                print(
                    f"step {step}/{total} {time.perf_counter() - t0:.0f}s {report_key} {terms[report_key]:.4f}",
                    flush=True,
                )
    meta = {f"final_{report_key}": terms.get(report_key, float("nan")), "sets": getattr(source, "names", [])}
    payload = _payload(
        config, nets, None, step // config.steps_per_epoch, step, time.perf_counter() - t0, meta
    )
    return save_checkpoint(out / "model.pt", payload)
