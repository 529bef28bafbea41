"""Data-parallel training over processes and machines: torch.distributed, launched by torchrun.

    regcore train --config R.json --out runs/x --nproc 2                  # 2 processes on this machine
    regcore train --config R.json --out runs/x --nproc 4 --nnodes 2 --node-rank 0 \\
                  --master-addr 10.0.0.1 --master-port 29500              # on each machine (rank 0 / 1)

:func:`launch` writes ``OUT/config.json`` and runs torch's elastic launcher
(``python -m torch.distributed.run``) with ``python -m regcore.train.worker OUT`` as the program; each
process then trains through the ordinary loop (:mod:`regcore.train.loop`), which asks
:func:`context` who it is:

* backend: NCCL when the run trains on CUDA (each process on GPU ``LOCAL_RANK``), gloo on CPU;
* data: the batch of a step still depends on ``(seed, step)`` only; rank ``r`` of ``N`` keeps items
  ``r, r+N, ...`` of that global batch (``batch_size`` must be a multiple of ``N``), so N processes see
  exactly the batches one process would;
* gradients: every parameter of the family's networks gets a hook that averages its gradient over
  the processes (``all_reduce``) as soon as backward has accumulated it, so the family's own
  ``train_step`` (backward + every optimiser's step, one or several networks) is untouched and every
  process takes the same step: the result equals one process with the same global batch (up to
  floating-point summation order). Families whose networks get gradients only on some processes
  (data-dependent graphs) are not supported;
* only rank 0 writes: ``status.json``, ``metrics.jsonl`` (loss terms averaged over the processes),
  checkpoints and previews. Stop (``STOP`` file) and the time limit are decided by rank 0 and shared;
* resume: every process reads ``checkpoints/last.pt`` (the run folder must be on a filesystem every
  machine sees), then rank 0's weights are broadcast.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["DistContext", "context", "launch", "launch_command"]


@dataclass
class DistContext:
    """Who this process is in a (possibly 1-process) training run, and the few collectives the loop uses."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    _hooks: list = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """The device of this process: ``cuda:LOCAL_RANK`` on CUDA, else unchanged."""
        if self.enabled and device.type == "cuda":
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

    def check_batch_size(self, batch_size: int) -> None:
        if self.enabled and batch_size % self.world_size:
            raise ValueError(
                f"TrainConfig.batch_size ({batch_size}) must be a multiple of the number of processes "
                f"({self.world_size}) so every process gets an equal share of each batch"
            )

    def shard(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This process's items ``rank, rank+N, ...`` of a global batch (every value has a leading batch axis)."""
        if not self.enabled:
            return batch
        return {k: v[self.rank :: self.world_size] for k, v in batch.items()}

    def attach(self, nets: torch.nn.Module) -> None:
        """Average every parameter's gradient over the processes as soon as backward accumulates it."""
        if not self.enabled:
            return
        import torch.distributed as dist

        world = float(self.world_size)

        def hook(p: torch.Tensor) -> None:
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad.div_(world)

        for p in nets.parameters():
            if p.requires_grad:
                self._hooks.append(p.register_post_accumulate_grad_hook(hook))

    def broadcast(self, nets: torch.nn.Module) -> None:
        """Give every process rank 0's weights and buffers."""
        if not self.enabled:
            return
        import torch.distributed as dist

        with torch.no_grad():
            for t in list(nets.parameters()) + list(nets.buffers()):
                dist.broadcast(t.data, src=0)

    def average(self, terms: dict[str, float], device: torch.device) -> dict[str, float]:
        """Loss terms averaged over the processes (each process's are the mean over its share)."""
        if not self.enabled or not terms:
            return terms
        import torch.distributed as dist

        keys = sorted(terms)
        t = torch.tensor([float(terms[k]) for k in keys], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= self.world_size
        return dict(zip(keys, t.tolist()))

    def decide(self, flags: list[bool], device: torch.device) -> list[bool]:
        """Rank 0's decisions (stop, time limit), shared with every process."""
        if not self.enabled:
            return flags
        import torch.distributed as dist

        t = torch.tensor([float(f) for f in flags], dtype=torch.float64, device=device)
        dist.broadcast(t, src=0)
        return [bool(v) for v in t.tolist()]

    def close(self, synchronise: bool = False) -> None:
        """Remove the gradient hooks and end the process group. ``synchronise`` (a run that finished on every
        rank): wait for all ranks first, so no rank tears its connections down while another still uses them
        (a rank exiting early was seen to abort its peer at exit with gloo)."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                if synchronise:
                    dist.barrier()
                dist.destroy_process_group()


def context(device: torch.device) -> DistContext:
    """The process's :class:`DistContext` from torchrun's environment (``WORLD_SIZE``, ``RANK``, ...);
    a 1-process context when not launched by torchrun. Initialises the process group (NCCL on CUDA,
    gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return DistContext()
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    ctx = DistContext(
        rank=int(os.environ["RANK"]),
        world_size=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        backend=backend,
    )
    if not dist.is_initialized():
        if backend == "nccl":
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group(backend=backend)
    return ctx


def launch_command(
    out_dir: str | Path,
    nproc: int,
    *,
    nnodes: int = 1,
    node_rank: int = 0,
    master_addr: str | None = None,
    master_port: int | None = None,
    resume: bool = False,
) -> list[str]:
    """The torchrun command that trains the run folder ``out_dir`` (holding ``config.json``)."""
    if not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"--nproc must be a positive integer, got {nproc!r}")
    if not isinstance(nnodes, int) or nnodes < 1:
        raise ValueError(f"--nnodes must be a positive integer, got {nnodes!r}")
    if not 0 <= node_rank < nnodes:
        raise ValueError(f"--node-rank must be in [0, {nnodes - 1}], got {node_rank!r}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
    if nnodes == 1 and not master_addr:
        cmd += ["--standalone"]
    else:
        if not master_addr:
            raise ValueError("--nnodes > 1 needs --master-addr (the address of the node with --node-rank 0)")
        cmd += [
            "--nnodes",
            str(nnodes),
            "--node-rank",
            str(node_rank),
            "--master-addr",
            master_addr,
            "--master-port",
            str(master_port or 29500),
        ]
    cmd += ["-m", "regcore.train.worker", str(out_dir)] + (["--resume"] if resume else [])
    return cmd


def launch(
    config_path: str | Path,
    out_dir: str | Path,
    nproc: int,
    *,
    nnodes: int = 1,
    node_rank: int = 0,
    master_addr: str | None = None,
    master_port: int | None = None,
    resume: bool = False,
    env: dict[str, str] | None = None,
) -> int:
    """Write ``out_dir/config.json`` and train it with ``nproc`` processes per node; returns torchrun's exit code."""
    from regcore.train.config import load_config, save_config

    out = Path(out_dir)
    config = load_config(config_path)
    out.mkdir(parents=True, exist_ok=True)
    if Path(config_path).resolve() != (out / "config.json").resolve():
        save_config(config, out / "config.json")
    cmd = launch_command(
        out,
        nproc,
        nnodes=nnodes,
        node_rank=node_rank,
        master_addr=master_addr,
        master_port=master_port,
        resume=resume,
    )
    paths = [str(Path(__file__).resolve().parents[2])] + [p for p in sys.path if p and Path(p).is_dir()]
    run_env = {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)), **(env or {})}
    if config.threads:
        run_env["OMP_NUM_THREADS"] = str(config.threads)
    return subprocess.run(cmd, env=run_env, check=False).returncode
