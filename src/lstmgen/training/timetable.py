"""When the loop validates, saves and looks at its losses: arithmetic on the step and the clocks.

Nothing here touches a model, a file or another process, so every rule is tested alone. The loop asks
``clock`` what the clocks say, has the ranks agree on that (their clocks differ), and then asks
``due`` what to do after a step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from lstmgen.config import every

LOG_EVERY = 10  # steps whose losses are brought to the host at once (one sync), and checked for NaN
FLUSH_SECONDS = 5.0  # ...or after this long, so that progress is reported on a slow model too


@dataclass(frozen=True)
class Due:
    """What the loop does after a step."""

    evaluate: bool  # validate, record metrics, keep the best weights
    save: bool  # write the resumable state
    flush: bool  # bring the pending losses to the host (and report progress)


@dataclass
class Timetable:
    """``eval_every``/``save_every`` (steps, or a duration of training such as "30s"; 0: at each
    evaluation / at each epoch's end) turned into decisions.

    By steps, the run also validates at every epoch's end; by time, on the clock alone (an epoch may
    take seconds). It always validates after its last step. Every save point flushes, so no step
    reaches a checkpoint unchecked; other flushes only report progress, and when they happen changes
    nothing that is trained or saved.
    """

    windows: int  # steps per epoch
    total_steps: int
    eval_every: Union[str, int]
    save_every: Union[str, int]
    evaluated_at: float = 0.0  # the training clock at the last validation
    saved_at: float = 0.0  # ... and at the last checkpoint

    def clock(self, elapsed: float, since_flush: float) -> tuple[bool, bool, bool]:
        """(flush, evaluate, save) by the clocks: what the ranks must agree on."""
        _, eval_period = every(self.eval_every)
        _, save_period = every(self.save_every)
        return (since_flush > FLUSH_SECONDS,
                eval_period > 0 and elapsed - self.evaluated_at >= eval_period,
                save_period > 0 and elapsed - self.saved_at >= save_period)

    def due(self, step: int, clock: tuple[bool, bool, bool], pending: int, stopping: bool) -> Due:
        """What to do after ``step`` steps, given what the clocks say and ``pending`` unflushed steps."""
        flush_clock, eval_clock, save_clock = clock
        eval_steps, eval_period = every(self.eval_every)
        save_steps, _ = every(self.save_every)
        evaluate = (step == self.total_steps or eval_clock or (not eval_period and step % self.windows == 0)
                    or bool(eval_steps and step % eval_steps == 0))
        save = save_clock or bool(save_steps and step % save_steps == 0) or (evaluate and not self.save_every)
        flush = pending >= LOG_EVERY or flush_clock or evaluate or save or stopping
        return Due(evaluate=evaluate, save=save, flush=flush)
