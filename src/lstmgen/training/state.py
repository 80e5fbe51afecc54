"""What an exact resume restores: the one list of it, with ``state_dict`` / ``load_state_dict``.

A resume state holds the weights, the optimiser, the weight average, the counters, the steps not yet
summarised in a metrics record, every random generator training draws from (each rank's own), and
the LSTM state carried between windows. Anything that must survive a resume is added here, and only
here: both directions read the same fields.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from lstmgen.errors import LstmgenError
from lstmgen.files import describe_error
from lstmgen.model.lstm import State
from lstmgen.training import distributed as dist_utils
from lstmgen.training.checkpoints import STATE_DIR
from lstmgen.training.metrics import MetricsWindow


@dataclass
class Counters:
    """Where the run is."""

    step: int = 0
    tokens: int = 0  # trained on, all ranks together
    best_valid: float = float("inf")  # the best validation NLL so far: its weights are the kept ones
    elapsed: float = 0.0  # seconds of training so far, across resumes
    eval_seconds: float = 0.0  # of those, spent validating and saving
    backoffs: int = 0  # times a NaN sent the run back to its last checkpoint


# The run's clock and its back-off count go on through a back-off to the last checkpoint (the time
# was spent; the back-off happened); a resume takes them from the state like the rest.
CLOCK = ("elapsed", "eval_seconds", "backoffs")


class TrainState:
    """The model, optimiser and weight average being trained, and everything else a resume needs."""

    def __init__(self, model: torch.nn.Module, optimizer: Any, average: Optional[Any], *, device: torch.device,
                 rank: int, world_size: int, batch_size: int, run_dir: Path) -> None:
        self.model, self.optimizer, self.average, self.run_dir = model, optimizer, average, run_dir
        self.device, self.rank, self.world_size, self.batch_size = device, rank, world_size, batch_size
        self.counters = Counters()
        self.window = MetricsWindow()
        self.hidden: Optional[State] = None  # the LSTM state carried from window to window

    def state_dict(self, *, finished: bool = False) -> Optional[dict[str, Any]]:
        """The resume state, on rank 0 (None on the others). Every rank must call it: the ranks'
        carried states and random generators are gathered into it."""
        rows = dist_utils.gather_rows(self.hidden)  # every rank's state, laid out as one process's W*B rows
        rank_rngs = dist_utils.gather_rng_states(self.device)
        if self.rank != 0:
            return None
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            **asdict(self.counters), "world_size": self.world_size, "finished": finished,
            **self.window.state_dict(),
            **({"average": self.average.state_dict()} if self.average is not None else {}),
            **rng_states(self.device), **rank_rngs,
            # in fp32: under a GPU's autocast the LSTM hands back bf16 states, which a CPU resume cannot take
            **({"hidden": (rows[0].detach().float().cpu(), rows[1].detach().float().cpu())} if rows is not None
               else {}),
        }

    def load_state_dict(self, saved: dict[str, Any], *, clock: bool = True) -> None:
        """Put everything back as ``saved`` has it; with ``clock=False`` (a NaN back-off) the run's
        clock and back-off count are kept.

        Raises:
            LstmgenError: the state does not fit this model (config.json or vocab.json edited since).
        """
        try:
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            if self.average is not None:
                self.average.load_state_dict(saved["average"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise LstmgenError(f"{self.run_dir / STATE_DIR}: the saved state does not fit this run's config and "
                               f"vocabulary ({describe_error(err)})")
        kinds = {f.name: type(f.default) for f in fields(Counters)}
        for name, kind in kinds.items():
            if name in saved and (clock or name not in CLOCK):  # older states have no eval_seconds
                setattr(self.counters, name, kind(saved[name]))
        self.window.load_state_dict(saved)
        set_rng_states(saved, self.device)  # rank 0's, then each rank its own where the state has them
        dist_utils.set_own_rng_state(saved, rank=self.rank, device=self.device)
        self.hidden = None if "hidden" not in saved else dist_utils.own_rows(
            saved["hidden"], rank=self.rank, batch_size=self.batch_size, device=self.device)


def rng_states(device: torch.device) -> dict[str, Any]:
    """Every random number generator training could draw from, in a form ``torch.load(weights_only)`` reads."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {"rng_cpu": torch.get_rng_state(), "rng_python": random.getstate(),
                              "rng_numpy": (name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss)}
    if device.type == "cuda":
        states["rng_cuda"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["rng_cpu"])
    if "rng_python" in state:
        version, internal, gauss = state["rng_python"]
        random.setstate((version, tuple(internal), gauss))
    if "rng_numpy" in state:
        name, keys, position, has_gauss, gauss = state["rng_numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    if device.type == "cuda" and "rng_cuda" in state:
        torch.cuda.set_rng_state(state["rng_cuda"], device)
