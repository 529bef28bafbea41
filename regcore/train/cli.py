"""``regcore train``: train a learned method from a recipe file, in this process or data-parallel (DDP).

    regcore train --config FILE --out DIR [--resume] [--nproc N [--nnodes M --node-rank R --master-addr A]]

Bad input (a missing recipe, a bad field in it): one line naming the file or field, exit code 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True, help="training recipe (JSON), e.g. assets/models/*.recipe.json"
    )
    parser.add_argument("--out", required=True, help="run folder (checkpoints, metrics, previews, model.pt)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    parser.add_argument(
        "--nproc",
        type=int,
        help="processes per machine (data-parallel DDP via torchrun; gloo on CPU, "
        "NCCL on GPU); batch_size must be a multiple of the total",
    )
    parser.add_argument(
        "--nnodes", type=int, default=1, help="machines taking part (run the command on each)"
    )
    parser.add_argument("--node-rank", type=int, default=0, help="this machine's index, 0 .. nnodes-1")
    parser.add_argument("--master-addr", help="address of the machine with --node-rank 0 (multi-machine)")
    parser.add_argument(
        "--master-port", type=int, default=29500, help="port on --master-addr (multi-machine)"
    )


def run(args: argparse.Namespace) -> int:
    if not Path(args.config).is_file():
        raise ValueError(f"--config must be an existing file, got {args.config!r}")
    if args.nproc or args.nnodes > 1:
        return _train_distributed(args)
    from regcore.train import run_training

    run_training(args.config, args.out, resume=args.resume)
    return 0


def _train_distributed(args: argparse.Namespace) -> int:
    """`train --nproc N [--nnodes M --node-rank R --master-addr A --master-port P]`: torchrun (DDP)."""
    from regcore.train.distributed import launch

    code = launch(
        args.config,
        args.out,
        args.nproc or 1,
        nnodes=args.nnodes,
        node_rank=args.node_rank,
        master_addr=args.master_addr,
        master_port=args.master_port,
        resume=args.resume,
    )
    if code:
        raise RuntimeError(
            f"distributed training exited with code {code}; see {Path(args.out) / 'status.json'} "
            "and the output above"
        )
    return 0
