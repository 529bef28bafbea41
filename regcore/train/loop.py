"""The training loop for any learned family: ``run_training(config_path, out_dir, resume=False)``.

Each step calls the family's ``train_step`` (one or several networks and optimisers); the loop
owns data, validation, checkpoints, previews, stop/resume and status, and never names a family.

Writes to ``out_dir`` (a run folder):

* ``config.json`` - the validated TrainConfig;
* ``status.json`` - ``{state, epoch, step, total_steps, message, pid, updated}``; state is one
  of queued / running / stopped / finished / failed;
* ``metrics.jsonl`` - one JSON object per line: ``kind="step"`` (each loss term, lr, time) and
  ``kind="epoch"`` (validation Dice before/after, folding %, validation loss, time);
* ``checkpoints/last.pt`` (every epoch and on stop; resumable) and ``model.pt`` (final weights);
  both record the family name, its constructor arguments and the weights of its networks;
* ``previews/epoch_XXX.png`` - checkerboard, deformation grid and Jacobian of validation pair 0.

Stop: create ``out_dir/STOP``; the loop checks it every step, saves a checkpoint and exits with
state "stopped". Resume continues from ``checkpoints/last.pt``; batches depend on (seed, step)
only, so on CPU a stopped-and-resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from regcore.train.checkpoint import load_checkpoint, save_checkpoint
from regcore.train.config import TrainConfig, config_to_dict, load_config, save_config
from regcore.train.status import (  # noqa: F401 - see _train
    STOP_FILE,
    append_metrics,
    validation_summary,
    write_status,
)


def _device(config: TrainConfig) -> torch.device:
    from regcore.methods.base import resolve_device

    return resolve_device(config.device)


def _payload(
    config: TrainConfig,
    nets,
    optimizers: dict | None,
    epoch: int,
    step: int,
    elapsed: float,
    metrics: dict,
    orientation: str | None = None,
) -> dict[str, Any]:
    """Checkpoint contents: family name + constructor arguments + weights (+ optimisers and RNG to resume);
    3D runs on real images also record their voxel orientation (inference reorients other images to it)."""
    fam = config.learned_family()
    payload = {
        "family": fam.name,
        "family_module": fam.module(),
        "dims": int(config.dims),
        "family_config": fam.config_dict(config.family_config),
        "config": config_to_dict(config),
        "spacing_mm": float(config.spacing_mm),
        "train_shape": list(config.train_shape),
        "state_dict": {k: v.detach().cpu() for k, v in nets.state_dict().items()},
        "epoch": int(epoch),
        "step": int(step),
        "elapsed_s": float(elapsed),
        "metrics": metrics,
    }
    if orientation and config.dims == 3:
        payload["orientation"] = orientation
    if optimizers is not None:
        payload["optimizers"] = {k: opt.state_dict() for k, opt in optimizers.items()}
        payload["rng"] = {"torch": torch.get_rng_state()}
    return payload


def _mean_of_labelled(dice: torch.Tensor) -> float:
    """Mean of the per-pair Dice ``(B,)`` over pairs with labels (NaN entries skipped); NaN, without numpy's
    empty-slice warning, when no validation pair has labels (e.g. a manifest of unlabelled volumes)."""
    known = dice[~torch.isnan(dice)]
    return float(known.mean()) if known.numel() else float("nan")


@torch.no_grad()
def validate(family, nets, batch: dict[str, torch.Tensor], ctx, device) -> dict[str, float]:
    """Validation Dice (before/after), folding % and loss of the family's prediction on the fixed batch."""
    from regcore.train.objectives import dice_per_pair, folding_percent

    nets.eval()
    b = {k: v.to(device) for k, v in batch.items()}
    pred = family.predict(nets, b["moving"], b["fixed"], ctx.family_config)
    terms = family.losses(nets, b, ctx)
    u = pred.displacement.float()
    zero = torch.zeros_like(u)
    nets.train()
    return {
        "val_dice": _mean_of_labelled(dice_per_pair(b["fixed_labels"], b["moving_labels"], u)),
        "val_dice_before": _mean_of_labelled(dice_per_pair(b["fixed_labels"], b["moving_labels"], zero)),
        "val_folding_percent": folding_percent(u),
        "val_loss": float(terms["total"]),
    }


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
    from regcore.train.distributed import context

    dist = context(_device(config))  # 1 process unless launched by torchrun (`regcore train --nproc N`)
    if dist.is_main:  # only rank 0 writes to the run folder
        (out / STOP_FILE).unlink(missing_ok=True)
    finished = False
    try:
        result = _train(config, out, resume, dist)
        finished = True
        return result
    except BaseException as e:  # record every failure for the UI, then re-raise
        if dist.is_main:
            from regcore.train.recovery import failure_message

            write_status(out, state="failed", message=failure_message(e, out))
        raise
    finally:
        dist.close(synchronise=finished)


def _noop(*args, **kwargs) -> None:
    return None


def _train(config: TrainConfig, out: Path, resume: bool, dist=None) -> Path:
    from regcore.methods.learned.family import StepContext
    from regcore.train.checkpoint import CheckpointError
    from regcore.train.datasets import PairSource
    from regcore.train.objectives import similarity_module
    from regcore.train.previews import save_preview
    from regcore.viz.slices import display_flips, slice_axes

    if config.threads:
        torch.set_num_threads(config.threads)
    from regcore.train.distributed import DistContext

    dist = dist or DistContext()
    device = dist.device(_device(config))
    dist.check_batch_size(config.batch_size)
    # only rank 0 writes (the module-level functions, looked up now, so tests can patch them)
    write_status = globals()["write_status"] if dist.is_main else _noop
    append_metrics = globals()["append_metrics"] if dist.is_main else _noop  # noqa: F811
    use_amp = device.type == "cuda"
    total_steps = config.epochs * config.steps_per_epoch
    write_status(out, state="running", epoch=0, step=0, total_steps=total_steps, message="loading data")

    torch.manual_seed(config.seed)
    family = config.learned_family()
    if not family.needs_training:
        raise ValueError(
            f"family {family.name!r} optimises each pair at registration time; there is nothing "
            "to train (use `regcore register --method " + family.name + "`)"
        )
    nets = family.build(config.dims, config.family_config).to(device)
    if config.init_checkpoint:
        init = load_checkpoint(config.init_checkpoint)
        if init["family"] != family.name:
            raise CheckpointError(
                f"init_checkpoint {config.init_checkpoint} holds a {init['family']!r} model, "
                f"not {family.name!r}"
            )
        nets.load_state_dict(init["state_dict"])
    optimizers = family.optimizers(nets, config.lr)
    step, epoch, elapsed = 0, 0, 0.0
    ckpt_path = out / "checkpoints" / "last.pt"
    if resume:
        data = load_checkpoint(ckpt_path)
        nets.load_state_dict(data["state_dict"])
        for name, state in (data.get("optimizers") or {}).items():
            if name in optimizers:
                optimizers[name].load_state_dict(state)
        torch.set_rng_state(data["rng"]["torch"])
        step, epoch, elapsed = int(data["step"]), int(data["epoch"]), float(data.get("elapsed_s", 0.0))
        if dist.is_main:  # curves continue from the checkpoint (steps after it are redone)
            from regcore.train.recovery import truncate_metrics

            truncate_metrics(out, step)
    dist.broadcast(nets)  # every process starts from rank 0's weights
    dist.attach(nets)  # and averages its gradients over the processes
    source = PairSource(config)
    val_batch = source.validation()
    ctx = StepContext(
        config=config,
        family_config=config.family_config,
        similarity=similarity_module(config.similarity, config.dims).to(device),
        autocast=(lambda: torch.autocast("cuda", dtype=torch.float16)) if use_amp else None,
        scaler=torch.amp.GradScaler("cuda") if use_amp else None,
    )
    nets.train()
    t0 = time.perf_counter() - elapsed
    last_val: dict[str, float] = {}
    if step == 0 and dist.is_main:
        last_val = validate(family, nets, val_batch, ctx, device)
        append_metrics(out, {"kind": "epoch", "epoch": 0, "step": 0, "time_s": 0.0, **last_val})

    def checkpoint(path: Path, with_state: bool = True) -> Path:
        if not dist.is_main:
            return path
        from regcore.train.recovery import require_finite

        require_finite(nets, step)  # never overwrite the last good checkpoint with NaN weights
        return save_checkpoint(
            path,
            _payload(
                config,
                nets,
                optimizers if with_state else None,
                epoch,
                step,
                time.perf_counter() - t0,
                last_val,
                source.orientation,
            ),
        )

    while step < total_steps:
        timed_out = bool(config.time_limit_min and time.perf_counter() - t0 > 60.0 * config.time_limit_min)
        stop_now = (out / STOP_FILE).exists()
        timed_out, stop_now = dist.decide([timed_out, stop_now], device)  # rank 0 decides for all
        if timed_out:
            break
        if stop_now:
            checkpoint(ckpt_path)
            if dist.is_main:
                (out / STOP_FILE).unlink(missing_ok=True)
            write_status(
                out,
                state="stopped",
                epoch=epoch,
                step=step,
                total_steps=total_steps,
                message=f"stopped at step {step}; resume to continue",
            )
            return ckpt_path
        rng = np.random.default_rng([config.seed, step])
        batch = {k: v.to(device) for k, v in dist.shard(source.batch(rng)).items()}  # items rank, rank+N, ...
        ctx.step = step
        terms = dist.average(family.train_step(nets, optimizers, batch, ctx), device)
        step += 1
        append_metrics(
            out,
            {"kind": "step", "epoch": epoch + 1, "step": step, "time_s": time.perf_counter() - t0, **terms},
        )
        if step % config.steps_per_epoch == 0:
            epoch = step // config.steps_per_epoch
            if dist.is_main:
                last_val = validate(family, nets, val_batch, ctx, device)
            append_metrics(
                out,
                {
                    "kind": "epoch",
                    "epoch": epoch,
                    "step": step,
                    "time_s": time.perf_counter() - t0,
                    **last_val,
                },
            )
            try:
                if dist.is_main:
                    save_preview(
                        family,
                        nets,
                        config.family_config,
                        val_batch,
                        out / "previews" / f"epoch_{epoch:03d}.png",
                        device,
                        title=f"epoch {epoch}: {validation_summary(last_val)}",
                        flips=display_flips(source.orientation, slice_axes(config.dims, 0)),
                    )
            except Exception as e:  # a preview must never kill a run
                append_metrics(out, {"kind": "warning", "step": step, "message": f"preview failed: {e}"})
            checkpoint(ckpt_path)
        write_status(
            out,
            state="running",
            epoch=epoch,
            step=step,
            total_steps=total_steps,
            message=f"epoch {epoch + (step % config.steps_per_epoch > 0)}/{config.epochs}, "
            f"step {step}/{total_steps}, loss {terms['total']:.4f}",
        )

    if step % config.steps_per_epoch and dist.is_main:  # time limit hit mid-epoch: validate the final weights
        last_val = validate(family, nets, val_batch, ctx, device)
        append_metrics(
            out,
            {
                "kind": "epoch",
                "epoch": step / config.steps_per_epoch,
                "step": step,
                "time_s": time.perf_counter() - t0,
                **last_val,
            },
        )
    final = checkpoint(out / "model.pt", with_state=False)
    write_status(
        out,
        state="finished",
        epoch=epoch,
        step=step,
        total_steps=total_steps,
        message=validation_summary(last_val),
    )
    return final
