"""The training loop: ``run_training(config_path, out_dir, resume=False)``.

Writes to ``out_dir`` (a run folder):

* ``config.json`` - the validated TrainConfig;
* ``status.json`` - ``{state, epoch, step, total_steps, message, pid, updated}``; state is one
  of queued / running / stopped / finished / failed;
* ``metrics.jsonl`` - one JSON object per line: ``kind="step"`` (each loss term, lr, time) and
  ``kind="epoch"`` (validation Dice before/after, folding %, validation loss, time);
* ``checkpoints/last.pt`` (every epoch and on stop; resumable) and ``model.pt`` (final weights);
* ``previews/epoch_XXX.png`` - checkerboard, deformation grid and Jacobian of validation pair 0.

Stop: create ``out_dir/STOP``; the loop checks it every step, saves a checkpoint and exits with
state "stopped". Resume continues from ``checkpoints/last.pt``; batches depend on (seed, step)
only, so on CPU a stopped-and-resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from regcore.train.checkpoint import load_checkpoint, save_checkpoint
from regcore.train.config import TrainConfig, config_to_dict, load_config, save_config
from regcore.train.status import STOP_FILE, append_metrics, write_status


def _device(config: TrainConfig) -> torch.device:
    from regcore.methods.base import resolve_device
    return resolve_device(config.device)


def _payload(config: TrainConfig, net, opt, epoch: int, step: int, elapsed: float, metrics: dict) -> dict[str, Any]:
    return {"arch": net.arch, "config": config_to_dict(config), "spacing_mm": float(config.spacing_mm),
            "train_shape": list(config.train_shape),
            "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "optimizer": opt.state_dict() if opt is not None else None,
            "rng": {"torch": torch.get_rng_state()}, "epoch": int(epoch), "step": int(step),
            "elapsed_s": float(elapsed), "metrics": metrics}


@torch.no_grad()
def validate(net, batch: dict[str, torch.Tensor], config: TrainConfig, similarity, device) -> dict[str, float]:
    """Validation Dice (before/after), folding % and loss on the fixed validation batch."""
    from regcore.train.objectives import dice_per_pair, folding_percent, training_losses
    net.eval()
    b = {k: v.to(device) for k, v in batch.items()}
    out = net(b["moving"], b["fixed"])
    terms = training_losses(config, out, b, similarity)
    u = out["displacement"].float()
    zero = torch.zeros_like(u)
    net.train()
    return {"val_dice": float(np.nanmean(dice_per_pair(b["fixed_labels"], b["moving_labels"], u).cpu())),
            "val_dice_before": float(np.nanmean(dice_per_pair(b["fixed_labels"], b["moving_labels"], zero).cpu())),
            "val_folding_percent": folding_percent(u),
            "val_loss": float(terms["total"])}


def run_training(config_path: str | Path, out_dir: str | Path, resume: bool = False) -> Path:
    """Train the model a recipe describes; returns the path of the final weights (``model.pt``).

    Args:
        config_path: TrainConfig as ``.json``/``.toml`` (a run's own ``config.json`` works too).
        out_dir: run folder (created). With ``resume=True`` it must hold ``checkpoints/last.pt``.
    Raises:
        ValueError: bad config, data or checkpoint (the message names the culprit).
    """
    out = Path(out_dir)
    config = load_config(config_path)
    out.mkdir(parents=True, exist_ok=True)
    if Path(config_path).resolve() != (out / "config.json").resolve():
        save_config(config, out / "config.json")
    (out / STOP_FILE).unlink(missing_ok=True)
    try:
        return _train(config, out, resume)
    except BaseException as e:  # record every failure for the UI, then re-raise
        write_status(out, state="failed", message=f"{type(e).__name__}: {e}")
        raise


def _train(config: TrainConfig, out: Path, resume: bool) -> Path:
    from regcore.nets.registration_net import RegistrationNet
    from regcore.train.datasets import PairSource
    from regcore.train.objectives import similarity_module, training_losses
    from regcore.train.previews import save_preview

    if config.threads:
        torch.set_num_threads(config.threads)
    device = _device(config)
    use_amp = device.type == "cuda"
    total_steps = config.epochs * config.steps_per_epoch
    write_status(out, state="running", epoch=0, step=0, total_steps=total_steps, message="loading data")

    torch.manual_seed(config.seed)
    net = RegistrationNet(config.arch()).to(device)
    if config.init_checkpoint:
        net.load_state_dict(load_checkpoint(config.init_checkpoint)["state_dict"])
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    step, epoch, elapsed = 0, 0, 0.0
    ckpt_path = out / "checkpoints" / "last.pt"
    if resume:
        data = load_checkpoint(ckpt_path)
        net.load_state_dict(data["state_dict"])
        if data.get("optimizer"):
            opt.load_state_dict(data["optimizer"])
        torch.set_rng_state(data["rng"]["torch"])
        step, epoch, elapsed = int(data["step"]), int(data["epoch"]), float(data.get("elapsed_s", 0.0))
    source = PairSource(config)
    val_batch = source.validation()
    similarity = similarity_module(config.similarity, config.dims).to(device)
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    net.train()
    t0 = time.perf_counter() - elapsed
    last_val: dict[str, float] = {}
    if step == 0:
        last_val = validate(net, val_batch, config, similarity, device)
        append_metrics(out, {"kind": "epoch", "epoch": 0, "step": 0, "time_s": 0.0, **last_val})

    while step < total_steps:
        if config.time_limit_min and time.perf_counter() - t0 > 60.0 * config.time_limit_min:
            break
        if (out / STOP_FILE).exists():
            save_checkpoint(ckpt_path, _payload(config, net, opt, epoch, step, time.perf_counter() - t0, last_val))
            (out / STOP_FILE).unlink(missing_ok=True)
            write_status(out, state="stopped", epoch=epoch, step=step, total_steps=total_steps,
                         message=f"stopped at step {step}; resume to continue")
            return ckpt_path
        rng = np.random.default_rng([config.seed, step])
        batch = {k: v.to(device) for k, v in source.batch(rng).items()}
        with torch.autocast("cuda", dtype=torch.float16) if use_amp else nullcontext():
            res = net(batch["moving"], batch["fixed"])
            terms = training_losses(config, {k: v.float() for k, v in res.items()}, batch, similarity)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(terms["total"]).backward()
            scaler.step(opt)
            scaler.update()
        else:
            terms["total"].backward()
            opt.step()
        step += 1
        if not torch.isfinite(terms["total"]):
            raise ValueError(f"loss became {float(terms['total'])} at step {step}; lower lr or the weights")
        append_metrics(out, {"kind": "step", "epoch": epoch + 1, "step": step, "time_s": time.perf_counter() - t0,
                             **{k: float(v.detach()) for k, v in terms.items()}})
        if step % config.steps_per_epoch == 0:
            epoch = step // config.steps_per_epoch
            last_val = validate(net, val_batch, config, similarity, device)
            append_metrics(out, {"kind": "epoch", "epoch": epoch, "step": step,
                                 "time_s": time.perf_counter() - t0, **last_val})
            try:
                save_preview(net, val_batch, out / "previews" / f"epoch_{epoch:03d}.png", device,
                             title=f"epoch {epoch}: val Dice {last_val['val_dice']:.3f}")
            except Exception as e:  # a preview must never kill a run
                append_metrics(out, {"kind": "warning", "step": step, "message": f"preview failed: {e}"})
            save_checkpoint(ckpt_path, _payload(config, net, opt, epoch, step, time.perf_counter() - t0, last_val))
        write_status(out, state="running", epoch=epoch, step=step, total_steps=total_steps,
                     message=f"epoch {epoch + (step % config.steps_per_epoch > 0)}/{config.epochs}, "
                             f"step {step}/{total_steps}, loss {float(terms['total'].detach()):.4f}")

    if step % config.steps_per_epoch:      # stopped by the time limit mid-epoch: validate the final weights
        last_val = validate(net, val_batch, config, similarity, device)
        append_metrics(out, {"kind": "epoch", "epoch": step / config.steps_per_epoch, "step": step,
                             "time_s": time.perf_counter() - t0, **last_val})
    final = out / "model.pt"
    payload = _payload(config, net, None, epoch, step, time.perf_counter() - t0, last_val)
    payload.pop("optimizer")
    payload.pop("rng")
    save_checkpoint(final, payload)
    write_status(out, state="finished", epoch=epoch, step=step, total_steps=total_steps,
                 message=f"finished: val Dice {last_val.get('val_dice', float('nan')):.3f}")
    return final
