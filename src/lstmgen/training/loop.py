"""The Trainer: one process's share of a run, from its data to the test score.

    prepare  read, segment and encode the corpus (a resume: with the run's own vocabulary)
    build    lay the training split out as batch rows; make the model, optimiser and TrainState
    start    restore the saved state, or write the new run's files and its step-0 checkpoint
    loop     truncated BPTT: one window per step, the LSTM state carried (and detached) between windows;
             validate, save and report when the Timetable says; stop on the budget or a signal
    test     score the best weights on the test split

A NaN loss sends the run back to its last checkpoint (``nan_policy="backoff"``) or stops it.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from lstmgen.config import RunConfig, parse_duration
from lstmgen.device import Precision, peak_memory_mb
from lstmgen.errors import LstmgenError
from lstmgen.evaluation.score import Score, describe_bits, describe_oov, score_ids
from lstmgen.files import keep_as
from lstmgen.model.lstm import LSTMLM, count_parameters
from lstmgen.model.run_dir import WEIGHTS, load_run_weights, load_weights, save_weights, write_run_files
from lstmgen.tokens.batches import batchify, derived_seed, device_grid, get_window, num_windows, window_bounds
from lstmgen.training import distributed as dist_utils
from lstmgen.training.checkpoints import (
    BEST_KEPT,
    INTERRUPTED_FILE,
    STATE_DIR,
    STATE_FILE,
    load_latest_state,
    load_state,
    remove_state,
    save_state,
)
from lstmgen.training.finetune import Parent
from lstmgen.training.metrics import MetricsLog
from lstmgen.training.optim import WeightAverage, make_optimizer
from lstmgen.training.run_data import new_run_info, run_data
from lstmgen.training.schedule import lr_factor
from lstmgen.training.signals import SignalCatcher, TrainingInterrupted
from lstmgen.training.state import TrainState
from lstmgen.training.timetable import Timetable

logger = logging.getLogger(__name__)


class NonFiniteLoss(LstmgenError):
    """The loss became NaN or infinite."""


@dataclass
class Progress:
    """What the loop reports to whoever draws the progress bar (the CLI)."""

    step: int
    total_steps: int
    epoch: float
    loss: float
    tokens_per_s: float
    elapsed: float
    seconds_left: Optional[float]
    lr: float
    fraction: float = 0.0  # of the run done: by steps, or by the clock under a time budget
    time_budget: Optional[float] = None  # seconds, when the run has one


class Trainer:
    """One process's data, model and state, and the loop in pieces (see the module's docstring)."""

    def __init__(self, corpus: Path, config: RunConfig, run_dir: Path, device: torch.device, precision: Precision, *,
                 rank: int, world_size: int, progress: Optional[Callable[[Progress], None]]) -> None:
        self.corpus, self.config, self.tc, self.run_dir, self.device = corpus, config, config.train, run_dir, device
        self.precision, self.rank, self.world_size, self.progress = precision, rank, world_size, progress
        self.log = MetricsLog(run_dir)  # written by rank 0 alone
        self.parent: Optional[Parent] = None  # the run whose weights this one starts from (init_from), if any

    def run(self, *, resume: bool, cache_dir: Optional[Path]) -> Path:
        started = time.perf_counter()
        saved = self._prepare(resume, cache_dir)
        self._build()
        if not self._start(saved, resume):
            return self.run_dir
        logger.info("model: %s parameters on %s (%s); %d steps of %d x %d tokens per epoch",
                    f"{count_parameters(self.model):,}", self.device, self.precision.reason, self.windows,
                    self.tc.batch_size * self.world_size, self.tc.seq_len)
        logger.info("data ready in %.1fs (%s)", time.perf_counter() - started,
                    ", ".join(f"{k} {v:.1f}s" for k, v in self.data.seconds.items()))
        if self.tc.tensorboard and self.rank == 0:
            self.log.open_tensorboard()
        with SignalCatcher() as signals:
            try:
                self._loop(signals)
                # a time budget may stop between evaluations: score what was learned since the last one
                last = self.log.last_step() if self.rank == 0 else None
                if dist_utils.rank_zero_decides(last != self.state.counters.step):
                    self.record_eval()
            finally:  # stopped, failed or done: the event file is complete and its writer thread ends
                self.log.close()
            self.checkpoint(finished=True)
        # A signal during the last validation or save (the seed's takes minutes on a CPU) stops the run
        # here, not after the test as well: --resume then only scores the test split.
        _, signum = dist_utils.agree((), signals.signum)
        if signum is not None:
            raise TrainingInterrupted(signum, self.run_dir)
        self._final_test()
        return self.run_dir

    # ---------------------------------------------------------------------------------- set-up

    def _prepare(self, resume: bool, cache_dir: Optional[Path]) -> Optional[dict]:
        """Read, segment and encode the corpus; returns the saved state to resume from, if any."""
        dist_utils.wait_for_local_leader()  # one process per machine segments the corpus; the rest read its cache
        saved = load_latest_state(self.run_dir) if resume else None
        self.data, self.parent = run_data(self.corpus, self.config, self.run_dir, resume=resume, saved=saved,
                                          cache_dir=cache_dir, world_size=self.world_size)
        dist_utils.release_local_ranks()
        return saved

    def _build(self) -> None:
        """Lay the training split out as this process's batch rows; make the model and its optimiser."""
        tc, data = self.tc, self.data
        try:
            grid = batchify(data.ids["train"], tc.batch_size, rank=self.rank, world_size=self.world_size)
        except ValueError:
            raise LstmgenError(f"{self.corpus}: the training split ({len(data.ids['train'])} tokens) is too small "
                               f"for one batch of {tc.batch_size * self.world_size} rows; use a smaller "
                               f"--batch-size or more text")
        self.windows = num_windows(grid, tc.seq_len)
        self.grid = device_grid(grid, self.device)
        self.total_steps = max(1, int(round(tc.epochs * self.windows)))
        self.window_tokens = tc.batch_size * tc.seq_len * self.world_size  # what one step trains on, all ranks
        self.budget = parse_duration(tc.time_budget) if tc.time_budget else None
        torch.manual_seed(tc.seed)
        self.model = LSTMLM(self.config.model, len(data.vocab)).to(self.device)
        if self.parent is not None:  # before the optimiser and the weight average, which start from these
            load_run_weights(self.model, self.parent.path)
        optimizer = make_optimizer(self.model, tc, self.device)
        average = WeightAverage(optimizer.param_groups[0]["params"], tc.ema_decay) if tc.ema_decay else None
        if self.rank:  # the same initial weights everywhere, but each rank its own dropout masks
            torch.manual_seed(derived_seed(tc.seed, self.rank))
        self.wrapped = dist_utils.wrap(self.model, self.device) if dist_utils.is_active() else self.model
        self.state = TrainState(self.model, optimizer, average, device=self.device, rank=self.rank,
                                world_size=self.world_size, batch_size=tc.batch_size, run_dir=self.run_dir)

    def _start(self, saved: Optional[dict], resume: bool) -> bool:
        """Restore ``saved``, or write a new run's files and its step-0 checkpoint. False when the
        run was already finished (its test score is then recorded, if it was not yet)."""
        run_dir, counters = self.run_dir, self.state.counters
        if saved is not None:
            self.state.load_state_dict(saved)
            if saved.get("finished"):
                if self.log.has_test():
                    logger.info("%s: the run is finished (step %d); nothing to do", run_dir, counters.step)
                else:
                    self._final_test()
                return False
            if self.rank == 0:
                self.log.truncate(counters.step)
            logger.info("resuming %s at step %d of %d", run_dir, counters.step, self.total_steps)
            return True
        if resume:  # killed after config.json was written but before the first checkpoint
            logger.warning("%s: no saved state yet; starting the run again from step 0", run_dir)
            if self.rank == 0:
                self.log.truncate(-1)  # a started run's step-0 record too: it is written again
        elif self.rank == 0:
            data = self.data
            extra = new_run_info(self.corpus, self.config, data, self.parent, parameters=count_parameters(self.model),
                                 world_size=self.world_size)
            write_run_files(run_dir, self.config, data.tokenizer, data.vocab, extra)
        if self.parent is not None:  # the parent's score on this held-out text: what fine-tuning starts from
            self.record_eval()
        self.checkpoint()  # step 0: a NaN before the first save point backs off to here
        return True

    # ---------------------------------------------------------------------------------- the loop

    def _loop(self, signals: SignalCatcher) -> None:
        """Train until the last step, the time budget or a signal, validating and saving as the Timetable says."""
        counters, tc, budget, world_size = self.state.counters, self.tc, self.budget, self.world_size
        pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        table = Timetable(self.windows, self.total_steps, tc.eval_every, tc.save_every,
                          evaluated_at=counters.elapsed, saved_at=counters.elapsed)
        self.wrapped.train()
        tick = last_flush = time.perf_counter()
        while counters.step < self.total_steps:
            if budget is not None and world_size > 1:  # one clock for all ranks: they stop and decay lr together
                counters.elapsed = dist_utils.max_over_ranks(counters.elapsed)
            if budget is not None and counters.elapsed >= budget:
                if pending:  # the last steps are checked for NaN and counted like any others
                    values, pending = self._flush(pending), []
                    if values is None:  # backed off to the last checkpoint: the run ends there
                        continue
                logger.info("time budget of %s reached at step %d", tc.time_budget, counters.step)
                break
            window = counters.step % self.windows
            if window == 0:
                self.state.hidden = None  # a new pass over the data starts from a zero state
            lr = self._lr()
            pending.append(self._step(window))
            counters.step += 1
            # an epoch's last window may be shorter than seq_len: count what was trained on
            start, stop = window_bounds(self.grid.shape[1], window, tc.seq_len)
            counters.tokens += tc.batch_size * world_size * (stop - start)
            now = time.perf_counter()  # every step: a slow model must not overrun its time budget
            counters.elapsed += now - tick
            tick = now
            clock, signum = table.clock(counters.elapsed, now - last_flush), signals.signum
            if world_size > 1:  # every rank must take the same branches below, or a collective waits forever
                clock, signum = dist_utils.agree(clock, signum)
            due = table.due(counters.step, clock, len(pending), stopping=signum is not None)
            if due.flush:
                values, pending = self._flush(pending), []
                if values is None:  # backed off to the last checkpoint
                    continue
                last_flush = now
                if self.progress is not None and self.rank == 0:
                    self._report(float(values[-1, 0]), lr)
            if due.evaluate:
                eval_start = time.perf_counter()
                self.record_eval()
                counters.eval_seconds += time.perf_counter() - eval_start
                counters.elapsed += time.perf_counter() - tick
                tick = time.perf_counter()
                table.evaluated_at = counters.elapsed
            if due.save:
                save_start = time.perf_counter()
                self.checkpoint()
                counters.eval_seconds += time.perf_counter() - save_start
                table.saved_at = counters.elapsed
            if signum is not None:
                # Between save points the state goes to its own file: checkpoint.pt stays the point a
                # later NaN backs off to, exactly as in a run that was never stopped.
                if not due.save:
                    self.checkpoint(name=INTERRUPTED_FILE)
                raise TrainingInterrupted(signum, self.run_dir)
        counters.elapsed += time.perf_counter() - tick

    def _lr(self) -> float:
        """Set and return this step's learning rate: schedule, time budget and NaN back-offs."""
        counters, tc = self.state.counters, self.tc
        progress_fraction = counters.step / self.total_steps
        if self.budget is not None:
            progress_fraction = max(progress_fraction, counters.elapsed / self.budget)
        lr = tc.lr * lr_factor(progress_fraction, counters.step, tc) * (0.5 ** counters.backoffs)
        for group in self.state.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _step(self, window: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step on one window; returns its loss and gradient norm, still on the device."""
        state, optimizer = self.state, self.state.optimizer
        inputs, targets = get_window(self.grid, window, self.tc.seq_len, self.device)  # (B, T) each
        if state.hidden is not None:  # truncated BPTT: keep the values, cut the graph at the window edge
            state.hidden = (state.hidden[0].detach(), state.hidden[1].detach())
        with self.precision.autocast(self.device):
            loss, state.hidden = self.wrapped(inputs, targets, state.hidden)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.tc.clip if self.tc.clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        optimizer.step()
        if state.average is not None:
            state.average.update()
        return loss.detach(), norm.detach()

    def _flush(self, pending: list[tuple[torch.Tensor, torch.Tensor]]) -> Optional[np.ndarray]:
        """Bring the pending steps' losses and norms to the host in one sync and count them in.

        Returns them as (steps, 2), or None when one was not finite and the run backed off to its
        last checkpoint (a finite loss with an infinite gradient poisons the weights too).
        """
        values = torch.stack([torch.stack(p) for p in pending]).float().cpu()
        values = dist_utils.mean_over_ranks(values).numpy()  # the global batch's; NaN on one rank, NaN on all
        if not np.isfinite(values).all():
            self._back_off()
            return None
        self.state.window.add(values, self.tc.clip)
        return values

    def _report(self, loss: float, lr: float) -> None:
        counters = self.state.counters
        rate = counters.tokens / max(counters.elapsed, 1e-9)
        left = (self.total_steps - counters.step) * self.window_tokens / max(rate, 1e-9)
        fraction = counters.step / self.total_steps
        if self.budget is not None:
            left = min(left, max(self.budget - counters.elapsed, 0.0))
            fraction = max(fraction, counters.elapsed / self.budget)
        self.progress(Progress(step=counters.step, total_steps=self.total_steps, epoch=counters.step / self.windows,
                               loss=loss, tokens_per_s=rate, elapsed=counters.elapsed, seconds_left=left, lr=lr,
                               fraction=min(fraction, 1.0), time_budget=self.budget))

    # ------------------------------------------------------------------- evaluation and checkpoints

    def record_eval(self) -> Optional[Score]:
        """Validate, append a metrics record and keep the weights when they are the best so far."""
        average = self.state.average
        with average.swapped_in() if average is not None else nullcontext():  # validated = kept
            return self._record_eval()

    def _record_eval(self) -> Optional[Score]:
        counters, tc, data = self.state.counters, self.tc, self.data
        epoch = counters.step / self.windows
        score = None
        if len(data.ids["valid"]) >= 2:
            score = score_ids(self.model, data.ids["valid"], characters=data.characters["valid"], device=self.device,
                              amp=tc.amp, max_tokens=tc.eval_tokens, rank=self.rank, world_size=self.world_size)
        record: dict[str, Any] = {
            "step": counters.step, "epoch": round(epoch, 4), "tokens": counters.tokens,
            "seconds": round(counters.elapsed, 2), "lr": self.state.optimizer.param_groups[0]["lr"],
            **self.state.window.summary(), "peak_memory_mb": round(peak_memory_mb(self.device), 1),
            **(score.as_dict("valid_") if score is not None else {}),
        }
        if self.rank == 0:
            self.log.write(record)
            improved = score is None or score.nll < counters.best_valid
            if score is not None and improved:
                counters.best_valid = score.nll
            if improved:
                save_weights(self.model, self.run_dir / WEIGHTS)
        if score is not None:
            logger.info("step %d epoch %.2f: valid perplexity %.2f, %.3f bits/char", counters.step, epoch,
                        score.perplexity, score.bits_per_char)
        return score

    def checkpoint(self, *, name: str = STATE_FILE, finished: bool = False) -> None:
        saved = self.state.state_dict(finished=finished)  # every rank takes part; rank 0 gets it
        if saved is None:
            return
        save_state(self.run_dir, saved, name=name)
        if name == STATE_FILE:  # a newer checkpoint supersedes what an interruption saved
            remove_state(self.run_dir, name=INTERRUPTED_FILE)
            if (self.run_dir / WEIGHTS).exists():  # the best weights that go with this state's best_valid
                keep_as(self.run_dir / WEIGHTS, self.run_dir / STATE_DIR / BEST_KEPT)
            else:
                remove_state(self.run_dir, name=BEST_KEPT)

    def _back_off(self) -> None:
        """After a NaN or infinite loss: stop with a clear message, or (nan_policy=backoff, once) go back
        to the last checkpoint and go on from there with half the learning rate.

        Going back to the checkpoint, rather than patching the weights where the fault was noticed, makes
        the outcome independent of when the loss values were last looked at, so runs stay reproducible.
        """
        counters, tc, run_dir = self.state.counters, self.tc, self.run_dir
        step = counters.step
        saved = load_state(run_dir)  # written only after a check that every loss before it was finite
        if saved is None or tc.nan_policy != "backoff" or counters.backoffs > 0:
            kept = f"; the last good state (step {int(saved['step'])}) is kept in {run_dir / STATE_DIR}" if saved else ""
            if (run_dir / WEIGHTS).exists():
                kept += f" and the best weights in {run_dir / WEIGHTS}"
            advice = ("a lower --lr or a --clip" if tc.nan_policy == "backoff"
                      else "a lower --lr, a --clip, or --nan-policy backoff")
            again = " again after backing off once" if counters.backoffs else ""
            raise NonFiniteLoss(f"the loss became NaN or infinite{again} by step {step}{kept}. "
                                f"Train again with {advice}")
        self.state.load_state_dict(saved, clock=False)
        counters.backoffs += 1
        kept = run_dir / STATE_DIR / BEST_KEPT
        if not dist_utils.rank_zero_decides(self.rank == 0 and kept.exists()):
            counters.best_valid = float("inf")  # the best weights of the checkpoint's time are unknown: the next sets them
        if self.rank == 0:  # the run goes on from the checkpoint as if nothing after it had happened
            if kept.exists():
                keep_as(kept, run_dir / WEIGHTS)
            else:  # no validation before the checkpoint: the next one writes the best weights
                (run_dir / WEIGHTS).unlink(missing_ok=True)
            self.log.truncate(counters.step)
            remove_state(run_dir, name=INTERRUPTED_FILE)
        logger.warning("non-finite loss by step %d: back to the checkpoint of step %d with the learning rate halved",
                       step, counters.step)

    def _final_test(self) -> None:
        """Score the best weights on the test split and record it as the run's result."""
        counters, data, device, run_dir = self.state.counters, self.data, self.device, self.run_dir
        if self.rank == 0 and (run_dir / WEIGHTS).exists():
            load_weights(self.model, run_dir / WEIGHTS)
        dist_utils.broadcast_weights(self.model)  # the best weights are on rank 0's disk, maybe not on the others'
        record: dict[str, Any] = {"split": "test", "step": counters.step, "tokens": counters.tokens,
                                  "seconds": round(counters.elapsed, 2),
                                  "peak_memory_mb": round(peak_memory_mb(device), 1),
                                  "tokens_per_s": counters.tokens / max(counters.elapsed - counters.eval_seconds, 1e-9),
                                  "eval_seconds": round(counters.eval_seconds, 2)}
        if len(data.ids["test"]) >= 2:
            score = score_ids(self.model, data.ids["test"], characters=data.characters["test"], device=device,
                              amp=self.tc.amp, rank=self.rank, world_size=self.world_size,
                              unknowns=data.unknowns("test"))
            record.update(score.as_dict("test_"))
            logger.info("test: perplexity %.2f, %s, OOV %s", score.perplexity,
                        describe_bits(score.bits_per_char, score.open_bits_per_char),
                        describe_oov(score.oov_rate, score.unknown_share))
        if self.rank == 0:
            self.log.write(record)

