"""Where lstmgen computes and in what precision: the device, bf16 autocast, and peak memory.

The precision is chosen from what this machine really runs, not from its name: bf16 is used only
where a tiny LSTM training step under bf16 autocast has been run here (once per process and device),
and on a CPU ``--amp auto`` also asks for AMX, without which bf16 is slower than fp32 there
(BENCHMARKS.md, quality per minute on the CPU: bf16 with and without AMX).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from dataclasses import dataclass
from typing import Optional

import torch

from lstmgen.errors import LstmgenError

logger = logging.getLogger(__name__)

AMP_MODES = ("auto", "bf16", "off")


def launched() -> bool:
    """Whether a launcher (torchrun) started this process as a rank of a process group."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def local_rank() -> int:
    """This process's rank on its own machine (0 without a launcher); picks its GPU."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def cuda_device() -> torch.device:
    """This process's own GPU: local rank r takes GPU r of its machine.

    Raises:
        LstmgenError: if the machine has fewer GPUs than processes were started on it.
    """
    index, count = local_rank(), torch.cuda.device_count()
    if index >= count:
        raise LstmgenError(f"process {index} on this machine has no GPU of its own (the machine has {count}): "
                           f"start at most {count} per machine (torchrun --nproc-per-node), or add --device cpu")
    return torch.device("cuda", index)


def pick_device(name: str = "auto") -> torch.device:
    """CUDA, then Apple's MPS (not under torchrun), then the CPU; or exactly what ``name`` says."""
    several = launched() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError:
            raise LstmgenError(f"--device {name}: not a device; choose auto, cpu, cuda, cuda:N or mps") from None
        if several and device.index is not None:
            raise LstmgenError(f"--device {name}: under torchrun each process takes its own GPU (the one its "
                               f"LOCAL_RANK names); give --device cuda, and CUDA_VISIBLE_DEVICES to choose GPUs")
        if several and device.type == "mps":
            raise LstmgenError(f"--device {name}: torchrun's processes cannot share an MPS device (gloo does not "
                               f"reach it); give --device cpu")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise LstmgenError(f"--device {name}: CUDA is not available on this machine")
        if device.type == "cuda" and device.index is None:
            device = cuda_device()  # under torchrun, each process its own GPU
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise LstmgenError(f"--device {name}: MPS is not available on this machine")
        return device
    if torch.cuda.is_available():
        return cuda_device()
    if not several and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass(frozen=True)
class Precision:
    """What runs under bf16 autocast: training steps, scoring (validation, test), both or neither."""

    steps_bf16: bool
    scoring_bf16: bool
    reason: str  # for the model line at the start of a run, e.g. "fp32: this CPU has no bf16 LSTM kernel"

    def autocast(self, device: torch.device, *, scoring: bool = False) -> contextlib.AbstractContextManager:
        """bf16 autocast on ``device`` where this precision says so; a no-op elsewhere."""
        if self.scoring_bf16 if scoring else self.steps_bf16:
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def choose_precision(device: torch.device, amp: str) -> Precision:
    """The precision ``--amp`` (auto | bf16 | off) means on ``device``.

    auto: bf16 on a GPU that runs it natively; on a CPU, bf16 for training steps only, and only where
    the CPU has AMX (validation and test stay fp32, so ``lstmgen eval`` reproduces a run's test score
    on any CPU); fp32 elsewhere. bf16: bf16 for steps and scoring, wherever it runs.

    Raises:
        LstmgenError: ``amp`` is "bf16" and bf16 does not run on ``device``.
    """
    if amp == "off":
        return Precision(False, False, "fp32: --amp off")
    if amp not in AMP_MODES:
        raise LstmgenError(f"--amp must be one of {', '.join(AMP_MODES)}, not {amp!r}")
    if amp == "bf16":
        problem = bf16_problem(device)
        if problem is not None:
            raise LstmgenError(f"--amp bf16: {problem}; use --amp auto or off on this machine")
        return Precision(True, True, "bf16 autocast: --amp bf16")
    if device.type == "cpu" and not cpu_has_amx():  # said without a probe: the answer is fp32 either way
        return Precision(False, False, "fp32: this CPU has no AMX, and bf16 without it is slower than fp32")
    problem = bf16_problem(device)
    if problem is not None:
        return Precision(False, False, f"fp32: {problem}")
    if device.type == "cuda":
        return Precision(True, True, "bf16 autocast")
    return Precision(True, False, "bf16 autocast in training steps, fp32 in scoring: this CPU has AMX")


def bf16_problem(device: torch.device) -> Optional[str]:
    """Why bf16 autocast cannot train an LSTM on ``device``, or None where it can."""
    return _bf16_problem(device.type, device.index)


@functools.lru_cache(maxsize=None)
def _bf16_problem(device_type: str, index: Optional[int]) -> Optional[str]:
    if device_type not in ("cpu", "cuda"):
        return f"lstmgen uses bf16 autocast on CUDA and CPUs, not on {device_type}"
    device = torch.device(device_type, index)
    if device_type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if major < 8:  # bf16 arithmetic came with Ampere; older cards only emulate it
            return f"this GPU ({torch.cuda.get_device_name(device)}, compute capability {major}.{minor}) has no bf16"
    try:
        _bf16_lstm_step(device)
    except RuntimeError as err:
        logger.debug("a bf16 LSTM step failed on %s: %s", device, err)
        return f"this {'CPU' if device_type == 'cpu' else 'GPU'} has no bf16 LSTM kernel"
    return None


def _bf16_lstm_step(device: torch.device) -> None:
    """One training step of a tiny two-layer LSTM model under bf16 autocast; raises where it cannot run.

    It draws its weights from the global random generator inside ``fork_rng``: a run's random numbers
    are the same whether or not this probe ran first.
    """
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        embedding = torch.nn.Embedding(11, 8).to(device)
        lstm = torch.nn.LSTM(8, 16, num_layers=2, batch_first=True).to(device)
        output = torch.nn.Linear(16, 11).to(device)
        inputs = torch.randint(0, 11, (2, 5), device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            features, _ = lstm(embedding(inputs))
            loss = torch.nn.functional.cross_entropy(output(features).float().flatten(0, 1), inputs.flatten())
        loss.backward()
        if not bool(torch.isfinite(loss)) or lstm.weight_hh_l0.grad is None:
            raise RuntimeError("the bf16 step gave no finite loss and gradient")


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles for bf16 that oneDNN may use (Intel Xeon from Sapphire Rapids on).

    Read from the flags Linux reports in /proc/cpuinfo (elsewhere: no); an ``ONEDNN_MAX_CPU_ISA``
    below AMX says no, as oneDNN will not use it then.
    """
    isa = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    if isa and isa not in ("ALL", "DEFAULT") and "AMX" not in isa:
        return False
    return {"amx_tile", "amx_bf16"} <= _cpu_flags() and torch.backends.mkldnn.is_available()


@functools.lru_cache(maxsize=None)
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated on a GPU, else the process's peak resident set (RSS)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:  # Linux: this process's own peak. ru_maxrss keeps the parent's from before exec, so a run
        # started by a sweep that had loaded models would report the sweep's peak as its own
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows: psutil knows the peak working set
        import psutil

        info = psutil.Process().memory_info()
        return getattr(info, "peak_wset", info.rss) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024
