"""Learning-rate schedules: the multiplier of ``--lr`` at each point of a run.

A schedule is a function of the share of the run done (0 to 1; under a time budget, of the clock) and
the floor it decays to (``--min-lr-ratio``). A new one is one entry in ``SCHEDULES`` and its name in
``config.SCHEDULES`` (which validates ``--schedule`` without importing training).
"""

from __future__ import annotations

import math
from typing import Callable

from lstmgen.config import TrainConfig

SCHEDULES: dict[str, Callable[[float, float], float]] = {
    "constant": lambda progress, floor: 1.0,
    "cosine": lambda progress, floor: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)),
    "linear": lambda progress, floor: 1 - (1 - floor) * progress,
}


def lr_factor(progress: float, step: int, config: TrainConfig) -> float:
    """The learning-rate multiplier after ``step`` steps, ``progress`` in [0, 1] through the run: a linear
    warm-up over ``warmup_steps``, then the schedule."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    return SCHEDULES[config.schedule](min(max(progress, 0.0), 1.0), config.min_lr_ratio)
