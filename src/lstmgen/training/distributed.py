"""Data-parallel training on torch.distributed: gloo on CPUs, NCCL on GPUs, launched by torchrun.

    torchrun --nproc-per-node 2 -m lstmgen train CORPUS --batch-size 16 ...

Each of the W processes (ranks) takes its own rows of the layout one process with W*B rows
would use (``data.batchify``), so rank r trains on a contiguous stretch of the text:

    one process, batch 4:     row 0 | row 1 | row 2 | row 3
    two ranks, batch 2 each:  rank 0: row 0 | row 1       rank 1: row 2 | row 3

Every rank carries the LSTM state of its own rows; DistributedDataParallel averages the
gradients, so the weights move as one process's would on the global batch of W*B rows.
Evaluation is sharded and its sums all-reduced (``evaluate.score_ids``), so every rank gets
the same numbers. Rank 0 alone writes the run directory, the metrics and the progress bar.

A collective (all-reduce, broadcast, barrier) waits until every rank has called it. So every
decision that chooses between branches with different collectives -- stop at the time budget,
stop on a signal, log now, evaluate now, the loss went NaN -- is agreed through the helpers
below, which every rank calls at the same point of the loop. With one process they return
their input and touch nothing.
"""

from __future__ import annotations

import gc
import logging
import os
from typing import Optional

import torch
import torch.distributed as dist

from lstmgen.device import cuda_device, launched, local_rank  # noqa: F401 (what torchrun set)

logger = logging.getLogger(__name__)

State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (num_layers, B, hidden_size)


def is_main_process() -> bool:
    """Rank 0, or the only process: the one that writes and prints."""
    if is_active():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def resume_command(run_dir: object) -> str:
    """How to continue a stopped run (the folder quoted for a shell): under torchrun, launched as before."""
    import shlex

    folder = shlex.quote(str(run_dir))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if launched() and world_size > 1:
        return f"torchrun ... -m lstmgen train --resume {folder} (launched as before: {world_size} processes)"
    return f"lstmgen train --resume {folder}"


def is_active() -> bool:
    """Whether this process is in a process group now."""
    return dist.is_available() and dist.is_initialized()


def init_from_env() -> tuple[int, int]:
    """Join the process group torchrun describes in the environment; returns (rank, world size).

    Without a launcher, returns (0, 1) and starts nothing. The backend is gloo, plus NCCL for
    CUDA tensors when CUDA is there ("cpu:gloo,cuda:nccl"): the small agreements below travel
    over gloo on the CPU, so they never wait for the GPU, and ``--device cpu`` works on a GPU box.
    Ranks other than 0 log warnings and errors only, so the console shows each line once.
    """
    if is_active():
        return dist.get_rank(), dist.get_world_size()
    if not launched():
        return 0, 1
    backend = "gloo"
    if torch.cuda.is_available():
        backend = "cpu:gloo,cuda:nccl"
        if local_rank() < torch.cuda.device_count():
            torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    if rank != 0:
        root = logging.getLogger("lstmgen")
        root.setLevel(max(root.getEffectiveLevel(), logging.WARNING))
    logger.info("data-parallel training over %d processes (%s)", world_size, backend)
    return rank, world_size


def finish(*, clean: bool = True) -> None:
    """Leave the process group: every rank, at the end of training.

    Args:
        clean: every rank got here together (training ended, or all agreed to stop). When one
            rank alone fails, it must not wait for the others: it leaves at once, exits, and
            torchrun stops the rest.
    """
    if not is_active():
        return
    # The last collective's tensor outlives the group. On older torch the group's destructor holds
    # the GIL while it joins gloo's worker threads; a worker that drops the last reference to a tensor
    # Python has already let go needs the GIL to free it, and the process hangs there for good.
    last = torch.zeros(1, dtype=torch.float64)
    if clean:
        dist.all_reduce(last)  # leave together, none while another still sends
    dist.destroy_process_group()
    # DistributedDataParallel sits in reference cycles that keep the gloo group (and its threads)
    # alive; left to the interpreter's final collection, their teardown can abort the process.
    gc.collect()
    del last


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` (already on ``device``).

    The adaptive softmax leaves the parameters of a tail cluster unused when no target of a
    batch falls in it; DDP must be told to look for such parameters, or it waits for their
    gradients forever.
    """
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else local_rank()] if device.type == "cuda" else None
    unused = getattr(model, "adaptive", None) is not None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)


# ------------------------------------------------------------------------------------ agreement


def _all_reduce_cpu(values: list[float], op: "dist.ReduceOp.RedOpType") -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, op=op)
    return tensor.tolist()


def wait_for_local_leader() -> None:
    """Ranks other than local rank 0 wait here until ``release_local_ranks`` (see there)."""
    if is_active() and local_rank() != 0:
        _all_reduce_cpu([0.0], dist.ReduceOp.SUM)


def release_local_ranks() -> None:
    """Local rank 0 calls this after preparing the data: the others, waiting in
    ``wait_for_local_leader``, go on and read the segmentation it cached on this machine
    instead of segmenting the corpus again, all at once."""
    if is_active() and local_rank() == 0:
        _all_reduce_cpu([0.0], dist.ReduceOp.SUM)


def max_over_ranks(value: float) -> float:
    """The largest ``value`` of all ranks: one clock for the time budget and the schedule."""
    if not is_active():
        return value
    return _all_reduce_cpu([value], dist.ReduceOp.MAX)[0]


def agree(flags: tuple[bool, ...], signum: Optional[int]) -> tuple[tuple[bool, ...], Optional[int]]:
    """For each flag, whether any rank raised it; and the signal any rank caught (the highest number)."""
    if not is_active():
        return flags, signum
    *raised, signal_max = _all_reduce_cpu([*map(float, flags), float(signum or 0)], dist.ReduceOp.MAX)
    return tuple(r > 0 for r in raised), (int(signal_max) or None)


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The element-wise mean over ranks of a CPU tensor (a NaN on any rank makes a NaN on all).

    Used on the per-step losses: every rank's loss is the mean over its B rows, so the mean over
    ranks is the loss of the global batch, what one process would log.
    """
    if not is_active():
        return values
    out = values.detach().to(torch.float64).clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return (out / dist.get_world_size()).to(values.dtype)


def rank_zero_decides(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank: for a choice only rank 0 can make (it alone reads the run)."""
    if not is_active():
        return flag
    tensor = torch.tensor([float(flag)], dtype=torch.float64)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def rank_zero_text(text: str) -> str:
    """Rank 0's ``text`` on every rank: a name each rank would otherwise make for itself (a run folder
    named after the clock, which may turn a second between ranks)."""
    if not is_active():
        return text
    box = [text]
    dist.broadcast_object_list(box, src=0)
    return str(box[0])


def broadcast_weights(model: torch.nn.Module) -> None:
    """Overwrite every rank's weights with rank 0's (after rank 0 loaded the best ones from disk)."""
    if not is_active():
        return
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src=0)


# ------------------------------------------------------------------------------------ random draws


def gather_rng_states(device: torch.device) -> dict[str, torch.Tensor]:
    """Every rank's torch generator states in rank order, (W, n) bytes each, for the resume state:
    ``rng_cpu_ranks`` and, on GPUs, ``rng_cuda_ranks``. Every rank must call it; {} with one process."""
    if not is_active() or dist.get_world_size() == 1:
        return {}
    states = {"rng_cpu_ranks": torch.get_rng_state()}
    if device.type == "cuda":
        states["rng_cuda_ranks"] = torch.cuda.get_rng_state(device)
    gathered = {}
    for key, state in states.items():
        local = state.to(device)  # NCCL moves only GPU tensors
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local)
        gathered[key] = torch.stack(parts).cpu()
    return gathered


def set_own_rng_state(saved: dict, *, rank: int, device: torch.device) -> None:
    """Restore this rank's torch generators from ``gather_rng_states``'s rows in a resume state. A
    state without them (one process, or an older lstmgen whose ranks all drew alike) leaves the
    generators as ``train`` set them from the state's single copy."""
    if "rng_cpu_ranks" in saved and rank < len(saved["rng_cpu_ranks"]):
        torch.set_rng_state(saved["rng_cpu_ranks"][rank].clone())
    if device.type == "cuda" and "rng_cuda_ranks" in saved and rank < len(saved["rng_cuda_ranks"]):
        torch.cuda.set_rng_state(saved["rng_cuda_ranks"][rank].clone(), device)


# ------------------------------------------------------------------------------------ LSTM state


def gather_rows(state: Optional[State]) -> Optional[State]:
    """Every rank's (h, c), joined in rank order along the batch dimension.

    The result has the layout of one process with W*B rows, (num_layers, W*B, hidden_size),
    which is what the resume state stores. Every rank must call it; None stays None (the ranks
    reset their state at the same steps).
    """
    if state is None or not is_active() or dist.get_world_size() == 1:
        return state
    joined = []
    for tensor in state:
        tensor = tensor.detach().contiguous()
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor)
        joined.append(torch.cat(parts, dim=1))
    return joined[0], joined[1]


def own_rows(state: State, *, rank: int, batch_size: int, device: torch.device) -> State:
    """This rank's rows of a state saved by ``gather_rows``: (num_layers, B, hidden_size) each, in fp32
    (the model's own precision; a state saved under a GPU's autocast by an older lstmgen was bf16)."""
    rows = slice(rank * batch_size, (rank + 1) * batch_size)
    h, c = (part[:, rows].contiguous().to(device=device, dtype=torch.float32) for part in state)
    return h, c
