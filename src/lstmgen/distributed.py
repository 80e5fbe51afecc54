"""Data-parallel training on torch.distributed: gloo on CPUs, NCCL on GPUs, launched by torchrun.

Each rank takes its own rows of the global batch layout (see ``data.batchify``), carries its own
state, and DistributedDataParallel all-reduces the gradients; evaluation is sharded
(``evaluate.score_ids``) and its sums all-reduced, so every rank reports the same numbers. Rank 0 alone writes.
"""

from __future__ import annotations

import os
import torch
import torch.distributed as dist



def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_from_env() -> tuple[int, int]:
    """(rank, world size); joins the process group torchrun describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` (on its device)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else local_rank()] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)
