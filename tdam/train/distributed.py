"""Process-group setup for single-process, torchrun and SLURM runs (DDP: NCCL on GPUs, gloo on CPU).

Launch commands (the trainer reads the environment; nothing else to configure):

- one process (CPU or one GPU): ``python -m tdam.train --config params/imagenet/resnet50_td_joint_t2_m1.yaml``
- one node, 4 GPUs: ``torchrun --standalone --nproc_per_node 4 -m tdam.train --config <yaml>``
- several nodes (run on every node): ``torchrun --nnodes 2 --nproc_per_node 4 --rdzv_backend c10d
  --rdzv_endpoint <host0>:29500 --rdzv_id <job> -m tdam.train --config <yaml>``
- SLURM, one task per GPU (``#SBATCH --ntasks-per-node=4 --gpus-per-node=4``)::

      export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1) MASTER_PORT=29500
      srun python -m tdam.train --config <yaml> --resume auto

  ``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID`` become rank/world size/local rank. (Or ``srun torchrun ...``
  with one task per node, which sets the torchrun variables itself.) SLURM pre-emption sends SIGTERM: the trainer
  saves a resumable ``last.pth`` and exits; ``--resume auto`` (requeued job) continues from it when it exists.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from tdam.validation import resolve_device

__all__ = ["DistInfo", "init_distributed", "all_reduce_sum", "barrier", "cleanup"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_rank_info() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's variables, else SLURM's, else a single process."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env.get("LOCAL_RANK", 0)), int(env["WORLD_SIZE"])
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", 0)), int(env["SLURM_NTASKS"])
    return 0, 0, 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group described by the environment (no-op for one process) and pick this rank's device."""
    rank, local_rank, world_size = _env_rank_info()
    dev = resolve_device(device, local_rank)
    if world_size > 1:
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", "29500")
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo",
                                    rank=rank, world_size=world_size)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=dev)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (identity for one process); returns it."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
