"""The training loop: truncated BPTT with the state carried across windows, evaluation, checkpoints.

One call, ``train(corpus, config, out=...)``, does everything and returns the run directory.
``train(..., resume=True)`` continues a run exactly where its last saved state left it; a config whose
``train.init_from`` names a trained run starts from that run's weights (``finetune``).
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch

from lstmgen import distributed as dist_utils
from lstmgen.config import RunConfig, every, parse_duration
from lstmgen.data import batchify, derived_seed, device_grid, get_window, num_windows, window_bounds
from lstmgen.errors import LstmgenError
from lstmgen.evaluate import Score, autocast_context, describe_bits, describe_oov, score_ids, uses_bf16
from lstmgen.finetune import Parent, check_fits, describe_start, held_out_in_parent, open_parent
from lstmgen.model import LSTMLM, count_parameters
from lstmgen.optim import WeightAverage, lr_factor, make_optimizer
from lstmgen.pipeline import prepare
from lstmgen.runs import (
    BEST_KEPT, CONFIG, INTERRUPTED_FILE, METRICS, STATE_DIR, STATE_FILE, TOKENIZER, VOCAB, WEIGHTS, RunLock,
    _read_json, append_jsonl, check_run_dir, describe_error, keep_as, load_latest_state, load_run_weights,
    load_state, load_weights, read_metrics,
    read_run_config, read_tokenizer_and_vocab, remove_state, remove_stale_temporaries, save_state, save_weights,
    write_jsonl, write_run_files,
)

logger = logging.getLogger(__name__)


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; a resumable state was saved."""

    def __init__(self, signum: int, run_dir: Path) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum
        self.run_dir = run_dir


class NonFiniteLoss(LstmgenError):
    """The loss became NaN or infinite."""


def pick_device(name: str = "auto") -> torch.device:
    """CUDA, then Apple's MPS (not under torchrun), then the CPU; or exactly what ``name`` says."""
    several = dist_utils.launched() and int(os.environ.get("WORLD_SIZE", "1")) > 1
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
            device = dist_utils.cuda_device()  # under torchrun, each process its own GPU
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise LstmgenError(f"--device {name}: MPS is not available on this machine")
        return device
    if torch.cuda.is_available():
        return dist_utils.cuda_device()
    if not several and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_run_dir(preset: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{preset}"


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
    valid: Optional[dict] = None


@dataclass
class _LoopState:
    step: int = 0
    elapsed: float = 0.0  # seconds of training so far, across resumes
    eval_seconds: float = 0.0  # of those, spent validating and saving, across resumes
    tokens: int = 0
    best_valid: float = float("inf")
    backoffs: int = 0
    grad_norms: list[float] = field(default_factory=list)  # since the last evaluation
    clipped: int = 0
    losses: list[float] = field(default_factory=list)  # since the last evaluation


class _SignalCatcher:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps, so a save is never torn."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_SignalCatcher":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._catch)
        return self

    def _catch(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def train(
    corpus: Union[str, Path, None],
    config: Optional[RunConfig] = None,
    *,
    out: Union[str, Path, None] = None,
    resume: bool = False,
    where: Optional[dict[str, Any]] = None,
    cache_dir: Optional[Path] = None,
    progress: Optional[Callable[[Progress], None]] = None,
) -> Path:
    """Train a model on ``corpus`` and return its run directory.

    Args:
        corpus: a .txt file, a folder of them, or a folder with an ``inf.txt`` index.
            With ``resume`` it may be None: the run remembers its corpus.
        config: settings; ``build_config("default")`` when None. Ignored with ``resume``.
        out: the run directory; a dated folder under runs/ when None.
        resume: continue the run in ``out`` from its saved state; on a CPU the result is
            bit-identical to a run that was never stopped. A finished run is left as it is.
        where: with ``resume``, train settings that say where the run goes on (``device``, ``threads``)
            and replace the saved ones.
        progress: called every few steps with a ``Progress``.

    Raises:
        TrainingInterrupted: SIGINT or SIGTERM arrived; a resumable state was saved first.
        NonFiniteLoss: the loss became NaN or infinite (twice, with ``nan_policy="backoff"``).
        LstmgenError: any other mistake a user can make (bad corpus, damaged run, busy run directory).
    """
    owns_group = not dist_utils.is_active()  # torchrun started us: join its group here, leave it at the end
    rank, world_size = dist_utils.init_from_env()
    if resume:
        if out is None:
            raise LstmgenError("--resume needs the run directory")
        run_dir = Path(out)
        if not run_dir.is_dir():
            raise LstmgenError(f"{run_dir}: no such run directory to resume")
        if not (run_dir / CONFIG).is_file():
            raise LstmgenError(f"{run_dir}: not a run directory to resume (no {CONFIG}); "
                               f"start the run again with the command that created it")
        check_run_dir(run_dir, required=(CONFIG, TOKENIZER, VOCAB))
        config, saved = read_run_config(run_dir)
        corpus = corpus or saved.get("corpus")
        for key, value in (where or {}).items():  # device, threads: the machine it goes on
            setattr(config.train, key, value)
    else:
        if config is None:
            from lstmgen.config import build_config

            config = build_config("default")
        # the files a run names are kept as absolute paths, like the corpus: eval and --resume work from any folder
        config = replace(config, data=replace(
            config.data, **{key: str(Path(value).resolve()) for key in ("valid_path", "test_path")
                            if (value := getattr(config.data, key))}),
            tokenizer=replace(config.tokenizer, user_dict=config.tokenizer.user_dict
                              and str(Path(config.tokenizer.user_dict).resolve())),
            train=replace(config.train, init_from=config.train.init_from
                          and str(Path(config.train.init_from).resolve())))
        run_dir = Path(out) if out is not None else Path(dist_utils.rank_zero_text(str(default_run_dir(config.preset))))
        if (run_dir / CONFIG).exists():
            raise LstmgenError(f"{run_dir}: already holds a run; continue it with --resume or choose another --out")
    if corpus is None:
        raise LstmgenError("no corpus given")
    tc = config.train
    lock = RunLock(run_dir) if rank == 0 else None
    leave_together = False  # every rank stops at the same point: they leave the group together
    try:
        refusal: Optional[LstmgenError] = None
        try:
            if tc.tensorboard:
                tensorboard_writer()  # missing package: said before the corpus is read, by every rank
            if lock is not None:
                lock.__enter__()  # first: a second writer is turned away before it changes anything
                remove_stale_temporaries(run_dir)  # half-written files of a killed run; we are the only writer now
        except LstmgenError as err:
            refusal = err
        # only rank 0 takes the lock: the others must stop with it, not wait for it in a collective; each
        # says rank 0's reason, since torchrun may stop rank 0 before it prints its own
        reason = dist_utils.rank_zero_text("" if refusal is None else str(refusal))
        if reason and refusal is None:
            refusal = LstmgenError(f"rank 0 stopped before training: {reason}")
        if refusal is not None:
            leave_together = bool(reason)
            raise refusal
        if tc.threads:
            torch.set_num_threads(tc.threads)
        device = pick_device(tc.device)
        return _train(Path(corpus), config, run_dir, device, resume, cache_dir, progress, rank, world_size)
    finally:
        if lock is not None:
            lock.__exit__(*sys.exc_info())
        if owns_group:
            dist_utils.finish(clean=sys.exc_info()[0] is None or leave_together)


def _rng_states(device: torch.device) -> dict[str, Any]:
    """Every random number generator training could draw from, in a form ``torch.load(weights_only)`` reads."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {"rng_cpu": torch.get_rng_state(), "rng_python": random.getstate(),
                              "rng_numpy": (name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss)}
    if device.type == "cuda":
        states["rng_cuda"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["rng_cpu"])
    if "rng_python" in state:
        version, internal, gauss = state["rng_python"]
        random.setstate((version, tuple(internal), gauss))
    if "rng_numpy" in state:
        name, keys, position, has_gauss, gauss = state["rng_numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    if device.type == "cuda" and "rng_cuda" in state:
        torch.cuda.set_rng_state(state["rng_cuda"], device)


def _train(corpus: Path, config: RunConfig, run_dir: Path, device: torch.device, resume: bool,
           cache_dir: Optional[Path], progress: Optional[Callable[[Progress], None]],
           rank: int, world_size: int) -> Path:
    trainer = _Trainer(corpus, config, run_dir, device, rank=rank, world_size=world_size, progress=progress)
    return trainer.run(resume=resume, cache_dir=cache_dir)


class _Trainer:
    """One process's share of a run: its data, model, optimiser and counters, and the loop in pieces.

    ``run`` reads the data, builds or restores the model, trains and scores the test split;
    ``restore`` and ``checkpoint`` are the two halves of an exact resume.
    """

    def __init__(self, corpus: Path, config: RunConfig, run_dir: Path, device: torch.device, *,
                 rank: int, world_size: int, progress: Optional[Callable[[Progress], None]]) -> None:
        self.corpus, self.config, self.tc, self.run_dir, self.device = corpus, config, config.train, run_dir, device
        self.rank, self.world_size, self.progress = rank, world_size, progress
        self.loop = _LoopState()
        self.hidden: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # the state carried between windows
        self.board: Any = None
        self.parent: Optional[Parent] = None  # the run whose weights this one starts from (init_from), if any

    def run(self, *, resume: bool, cache_dir: Optional[Path]) -> Path:
        started = time.perf_counter()
        state = self._prepare(resume, cache_dir)
        self._build()
        if not self._start(state, resume):
            return self.run_dir
        logger.info("model: %s parameters on %s%s; %d steps of %d x %d tokens per epoch",
                    f"{count_parameters(self.model):,}", self.device,
                    " (bf16 autocast)" if uses_bf16(self.device, self.tc.amp) else "", self.windows,
                    self.tc.batch_size * self.world_size, self.tc.seq_len)
        logger.info("data ready in %.1fs (%s)", time.perf_counter() - started,
                    ", ".join(f"{k} {v:.1f}s" for k, v in self.data.seconds.items()))
        self.board = open_tensorboard(self.run_dir) if self.tc.tensorboard and self.rank == 0 else None
        with _SignalCatcher() as signals:
            try:
                self._loop(signals)
                # a time budget may stop between evaluations: score what was learned since the last one
                last = read_metrics(self.run_dir)[-1:] if self.rank == 0 else []
                if dist_utils.rank_zero_decides(not last or last[0].get("step") != self.loop.step):
                    self.record_eval()
            finally:  # stopped, failed or done: the event file is complete and its writer thread ends
                if self.board is not None:
                    self.board.close()
                    self.board = None
            self.checkpoint(finished=True)
        # A signal during the last validation or save (the seed's takes minutes on a CPU) stops the run
        # here, not after the test as well: --resume then only scores the test split.
        _, signum = dist_utils.agree((), signals.signum)
        if signum is not None:
            raise TrainingInterrupted(signum, self.run_dir)
        self._final_test()
        return self.run_dir

    def _prepare(self, resume: bool, cache_dir: Optional[Path]) -> Optional[dict]:
        """Read, segment and encode the corpus (with the run's own vocabulary on a resume); returns
        the saved state to resume from, if any."""
        corpus, config, run_dir = self.corpus, self.config, self.run_dir
        dist_utils.wait_for_local_leader()  # one process per machine segments the corpus; the rest read its cache
        state = load_latest_state(run_dir) if resume else None
        if resume:
            saved_tokenizer, saved_vocab = read_tokenizer_and_vocab(run_dir)
            self.data = prepare(corpus, config.data, config.tokenizer, cache_dir=cache_dir,
                                vocab=saved_vocab, tokenizer=saved_tokenizer)
            saved = _read_json(run_dir / CONFIG)
            fingerprint = saved.get("corpus_fingerprint")
            if fingerprint and fingerprint != self.data.fingerprint:
                raise LstmgenError(f"{corpus}: is not the corpus this run was trained on (its text changed)")
            if state is not None and int(state.get("world_size", 1)) != self.world_size:
                raise LstmgenError(f"{run_dir}: was trained on {int(state['world_size'])} processes; "
                                   f"resume it with the same number (now {self.world_size})")
            if state is None and config.train.init_from:  # killed before its first save: from the parent again
                self.parent = open_parent(config.train.init_from)
                if saved.get("init_from_sha256") not in (None, self.parent.sha256):
                    raise LstmgenError(f"{self.parent.path}: its weights changed since {run_dir} started from them; "
                                       f"start that run again")
        elif config.train.init_from:
            self.parent = open_parent(config.train.init_from)
            check_fits(config, self.parent)
            self.data = prepare(corpus, config.data, config.tokenizer, cache_dir=cache_dir,
                                vocab=self.parent.vocab, tokenizer=self.parent.tokenizer)
        else:
            self.data = prepare(corpus, config.data, config.tokenizer, cache_dir=cache_dir)
        dist_utils.release_local_ranks()
        return state

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
        self.optimizer = make_optimizer(self.model, tc, self.device)
        self.average = (WeightAverage(self.optimizer.param_groups[0]["params"], tc.ema_decay)
                        if tc.ema_decay else None)
        if self.rank:  # the same initial weights everywhere, but each rank its own dropout masks
            torch.manual_seed(derived_seed(tc.seed, self.rank))
        self.wrapped = dist_utils.wrap(self.model, self.device) if dist_utils.is_active() else self.model

    def _start(self, state: Optional[dict], resume: bool) -> bool:
        """Restore ``state``, or write a new run's files and its step-0 checkpoint. False when the
        run was already finished (its test score is then recorded, if it was not yet)."""
        loop, run_dir = self.loop, self.run_dir
        if state is not None:
            self.hidden = self.restore(state)
            loop.elapsed, loop.backoffs = float(state["elapsed"]), int(state["backoffs"])
            loop.eval_seconds = float(state.get("eval_seconds", 0.0))  # older states: this process's only
            if state.get("finished"):
                if any(r.get("split") == "test" for r in read_metrics(run_dir)):
                    logger.info("%s: the run is finished (step %d); nothing to do", run_dir, loop.step)
                else:
                    self._final_test()
                return False
            if self.rank == 0:
                _truncate_metrics(run_dir, loop.step)
            logger.info("resuming %s at step %d of %d", run_dir, loop.step, self.total_steps)
            return True
        if resume:  # killed after config.json was written but before the first checkpoint
            logger.warning("%s: no saved state yet; starting the run again from step 0", run_dir)
            if self.rank == 0:
                _truncate_metrics(run_dir, -1)  # a started run's step-0 record too: it is written again
        elif self.rank == 0:
            data = self.data
            extra = {"corpus": str(Path(self.corpus).resolve()), "corpus_fingerprint": data.fingerprint,
                     "documents": data.documents, "held_out_in_training": data.overlap,
                     "vocab_size": len(data.vocab),
                     "parameters": count_parameters(self.model), "world_size": self.world_size,
                     "split_tokens": {k: int(len(v)) for k, v in data.ids.items()},
                     "split_characters": data.characters}
            if self.parent is not None:
                overlap = held_out_in_parent(self.corpus, self.config.data, self.parent)
                describe_start(self.parent, data.ids["train"], overlap)
                extra.update(init_from_sha256=self.parent.sha256, init_from_corpus=self.parent.info.get("corpus"),
                             held_out_in_parent_training=overlap)
            write_run_files(run_dir, self.config, data.tokenizer, data.vocab, extra)
        if self.parent is not None:  # the parent's score on this held-out text: what fine-tuning starts from
            self.record_eval()
        self.checkpoint()  # step 0: a NaN before the first save point backs off to here
        return True

    def restore(self, saved: dict) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """Put model, optimiser, counters and RNGs back as ``saved`` has them; returns its carried state."""
        loop = self.loop
        try:
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            if self.average is not None:
                self.average.load_state_dict(saved["average"])
        except (RuntimeError, ValueError, KeyError) as err:  # config.json or vocab.json edited since
            raise LstmgenError(f"{self.run_dir / STATE_DIR}: the saved state does not fit this run's config and "
                               f"vocabulary ({describe_error(err)})")
        loop.step, loop.tokens, loop.best_valid = int(saved["step"]), int(saved["tokens"]), float(saved["best_valid"])
        loop.losses = saved["losses"].tolist() if "losses" in saved else []
        loop.grad_norms = saved["grad_norms"].tolist() if "grad_norms" in saved else []
        loop.clipped = int(saved.get("clipped", 0))
        _set_rng_states(saved, self.device)  # rank 0's, then each rank its own where the state has them
        dist_utils.set_own_rng_state(saved, rank=self.rank, device=self.device)
        if "hidden" not in saved:
            return None
        return dist_utils.own_rows(saved["hidden"], rank=self.rank, batch_size=self.tc.batch_size, device=self.device)

    def checkpoint(self, *, name: str = STATE_FILE, finished: bool = False) -> None:
        loop = self.loop
        rows = dist_utils.gather_rows(self.hidden)  # every rank's state, laid out as one process's W*B rows
        rank_rngs = dist_utils.gather_rng_states(self.device)
        if self.rank != 0:
            return
        save_state(self.run_dir, {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": loop.step,
            "elapsed": loop.elapsed, "eval_seconds": loop.eval_seconds, "tokens": loop.tokens,
            "best_valid": loop.best_valid,
            "backoffs": loop.backoffs, "world_size": self.world_size, "finished": finished,
            # what the next metrics record averages over, so that record is the same after a resume
            "losses": torch.tensor(loop.losses, dtype=torch.float64),
            "grad_norms": torch.tensor(loop.grad_norms, dtype=torch.float64), "clipped": loop.clipped,
            **({"average": self.average.state_dict()} if self.average is not None else {}),
            **_rng_states(self.device), **rank_rngs,
            # in fp32: under a GPU's autocast the LSTM hands back bf16 states, which a CPU resume cannot take
            **({"hidden": (rows[0].detach().float().cpu(), rows[1].detach().float().cpu())} if rows is not None
               else {}),
        }, name=name)
        if name == STATE_FILE:  # a newer checkpoint supersedes what an interruption saved
            remove_state(self.run_dir, name=INTERRUPTED_FILE)
            if (self.run_dir / WEIGHTS).exists():  # the best weights that go with this state's best_valid
                keep_as(self.run_dir / WEIGHTS, self.run_dir / STATE_DIR / BEST_KEPT)
            else:
                remove_state(self.run_dir, name=BEST_KEPT)

    def record_eval(self) -> Optional[Score]:
        """Validate, append a metrics record and keep the weights when they are the best so far."""
        with self.average.swapped_in() if self.average is not None else nullcontext():  # validated = kept
            return self._record_eval()

    def _record_eval(self) -> Optional[Score]:
        loop, tc, data = self.loop, self.tc, self.data
        epoch = loop.step / self.windows
        score = None
        if len(data.ids["valid"]) >= 2:
            score = score_ids(self.model, data.ids["valid"], characters=data.characters["valid"], device=self.device,
                              amp=tc.amp, max_tokens=tc.eval_tokens, rank=self.rank, world_size=self.world_size)
        norms = np.array(loop.grad_norms) if loop.grad_norms else np.zeros(1)
        record: dict[str, Any] = {
            "step": loop.step, "epoch": round(epoch, 4), "tokens": loop.tokens, "seconds": round(loop.elapsed, 2),
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": float(np.mean(loop.losses)) if loop.losses else None,
            "grad_norm_median": float(np.median(norms)), "grad_norm_p95": float(np.percentile(norms, 95)),
            "clip_fraction": loop.clipped / max(len(loop.grad_norms), 1),
            "peak_memory_mb": round(peak_memory_mb(self.device), 1),
        }
        if record["train_loss"] is not None:
            record["train_perplexity"] = math.exp(min(record["train_loss"], 700))
        if score is not None:
            record.update(score.as_dict("valid_"))
        if self.rank == 0:
            append_jsonl(self.run_dir / METRICS, record)
            if self.board is not None:
                for key, value in record.items():
                    if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                        self.board.add_scalar(key, value, loop.step)
                self.board.flush()
            improved = score is None or score.nll < loop.best_valid
            if score is not None and improved:
                loop.best_valid = score.nll
            if improved:
                save_weights(self.model, self.run_dir / WEIGHTS)
        loop.grad_norms, loop.losses, loop.clipped = [], [], 0
        if score is not None:
            logger.info("step %d epoch %.2f: valid perplexity %.2f, %.3f bits/char", loop.step, epoch,
                        score.perplexity, score.bits_per_char)
        return score

    def _lr(self) -> float:
        """Set and return this step's learning rate: schedule, time budget and NaN back-offs."""
        loop, tc = self.loop, self.tc
        progress_fraction = loop.step / self.total_steps
        if self.budget is not None:
            progress_fraction = max(progress_fraction, loop.elapsed / self.budget)
        lr = tc.lr * lr_factor(progress_fraction, loop.step, tc) * (0.5 ** loop.backoffs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _step(self, window: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step on one window; returns its loss and gradient norm, still on the device."""
        inputs, targets = get_window(self.grid, window, self.tc.seq_len, self.device)  # (B, T) each
        if self.hidden is not None:  # truncated BPTT: keep the values, cut the graph at the window edge
            self.hidden = (self.hidden[0].detach(), self.hidden[1].detach())
        with autocast_context(self.device, self.tc.amp):
            loss, self.hidden = self.wrapped(inputs, targets, self.hidden)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.tc.clip if self.tc.clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.optimizer.step()
        if self.average is not None:
            self.average.update()
        return loss.detach(), norm.detach()

    def _flush(self, pending: list[tuple[torch.Tensor, torch.Tensor]]) -> Optional[np.ndarray]:
        """Bring the pending steps' losses and norms to the host in one sync and count them in.

        Returns them as (steps, 2), or None when one was not finite and the run backed off to its
        last checkpoint (a finite loss with an infinite gradient poisons the weights too).
        """
        loop = self.loop
        values = torch.stack([torch.stack(p) for p in pending]).float().cpu()
        values = dist_utils.mean_over_ranks(values).numpy()  # the global batch's; NaN on one rank, NaN on all
        if not np.isfinite(values).all():
            self.hidden = self._back_off()
            return None
        loop.losses.extend(values[:, 0].tolist())
        loop.grad_norms.extend(values[:, 1].tolist())
        if self.tc.clip > 0:
            loop.clipped += int((values[:, 1] > self.tc.clip).sum())
        return values

    def _report(self, loss: float, lr: float) -> None:
        loop = self.loop
        rate = loop.tokens / max(loop.elapsed, 1e-9)
        left = (self.total_steps - loop.step) * self.window_tokens / max(rate, 1e-9)
        if self.budget is not None:
            left = min(left, max(self.budget - loop.elapsed, 0.0))
        self.progress(Progress(step=loop.step, total_steps=self.total_steps, epoch=loop.step / self.windows,
                               loss=loss, tokens_per_s=rate, elapsed=loop.elapsed, seconds_left=left, lr=lr))

    def _loop(self, signals: _SignalCatcher) -> None:
        """Train until the last step, the time budget or a signal, validating and saving as configured."""
        loop, tc, budget, world_size = self.loop, self.tc, self.budget, self.world_size
        log_every = 10
        pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        eval_steps, eval_period = every(tc.eval_every)  # one of the two is 0
        save_steps, save_period = every(tc.save_every)
        evaluated_at = saved_at = loop.elapsed  # the training clock at the last validation and checkpoint
        self.wrapped.train()
        tick = last_flush = time.perf_counter()
        while loop.step < self.total_steps:
            if budget is not None and world_size > 1:  # one clock for all ranks: they stop and decay lr together
                loop.elapsed = dist_utils.max_over_ranks(loop.elapsed)
            if budget is not None and loop.elapsed >= budget:
                if pending:  # the last steps are checked for NaN and counted like any others
                    values, pending = self._flush(pending), []
                    if values is None:  # backed off to the last checkpoint: the run ends there
                        continue
                logger.info("time budget of %s reached at step %d", tc.time_budget, loop.step)
                break
            window = loop.step % self.windows
            if window == 0:
                self.hidden = None  # a new pass over the data starts from a zero state
            lr = self._lr()
            pending.append(self._step(window))
            loop.step += 1
            # an epoch's last window may be shorter than seq_len: count what was trained on
            start, stop = window_bounds(self.grid.shape[1], window, self.tc.seq_len)
            loop.tokens += self.tc.batch_size * self.world_size * (stop - start)
            now = time.perf_counter()  # every step: a slow model must not overrun its time budget
            loop.elapsed += now - tick
            tick = now
            timed_eval = eval_period > 0 and loop.elapsed - evaluated_at >= eval_period
            timed_save = save_period > 0 and loop.elapsed - saved_at >= save_period
            # Every save point flushes, so no step reaches a checkpoint unchecked; other flushes only
            # report progress, and when they happen changes nothing that is trained or saved.
            flush_due, signum = now - last_flush > 5, signals.signum
            if world_size > 1:  # every rank must take the same branches below, or a collective waits forever
                (flush_due, timed_eval, timed_save), signum = dist_utils.agree(
                    (flush_due, timed_eval, timed_save), signum)
            # by steps: at every epoch's end too; by time: on the clock alone (an epoch may take seconds)
            due_eval = (loop.step == self.total_steps or timed_eval
                        or (not eval_period and loop.step % self.windows == 0)
                        or bool(eval_steps and loop.step % eval_steps == 0))
            save_due = timed_save or bool(save_steps and loop.step % save_steps == 0) or (
                due_eval and not tc.save_every)
            if len(pending) >= log_every or flush_due or due_eval or save_due or signum is not None:
                values = self._flush(pending)
                pending = []
                if values is None:  # backed off to the last checkpoint
                    continue
                last_flush = now
                if self.progress is not None and self.rank == 0:
                    self._report(float(values[-1, 0]), lr)
            if due_eval:
                eval_start = time.perf_counter()
                self.record_eval()
                loop.eval_seconds += time.perf_counter() - eval_start
                loop.elapsed += time.perf_counter() - tick
                tick = time.perf_counter()
                evaluated_at = loop.elapsed
            if save_due:
                save_start = time.perf_counter()
                self.checkpoint()
                loop.eval_seconds += time.perf_counter() - save_start
                saved_at = loop.elapsed
            if signum is not None:
                # Between save points the state goes to its own file: checkpoint.pt stays the point a
                # later NaN backs off to, exactly as in a run that was never stopped.
                if not save_due:
                    self.checkpoint(name=INTERRUPTED_FILE)
                raise TrainingInterrupted(signum, self.run_dir)
        loop.elapsed += time.perf_counter() - tick

    def _back_off(self) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """After a NaN or infinite loss: stop with a clear message, or (nan_policy=backoff, once) go back
        to the last checkpoint and go on from there with half the learning rate.

        Going back to the checkpoint, rather than patching the weights where the fault was noticed, makes
        the outcome independent of when the loss values were last looked at, so runs stay reproducible.
        Returns the carried state to continue with.
        """
        loop, tc, run_dir = self.loop, self.tc, self.run_dir
        step = loop.step
        saved = load_state(run_dir)  # written only after a check that every loss before it was finite
        if saved is None or tc.nan_policy != "backoff" or loop.backoffs > 0:
            kept = f"; the last good state (step {int(saved['step'])}) is kept in {run_dir / STATE_DIR}" if saved else ""
            if (run_dir / WEIGHTS).exists():
                kept += f" and the best weights in {run_dir / WEIGHTS}"
            advice = ("a lower --lr or a --clip" if tc.nan_policy == "backoff"
                      else "a lower --lr, a --clip, or --nan-policy backoff")
            again = " again after backing off once" if loop.backoffs else ""
            raise NonFiniteLoss(f"the loss became NaN or infinite{again} by step {step}{kept}. "
                                f"Train again with {advice}")
        hidden = self.restore(saved)
        loop.backoffs += 1
        kept = run_dir / STATE_DIR / BEST_KEPT
        if not dist_utils.rank_zero_decides(self.rank == 0 and kept.exists()):
            loop.best_valid = float("inf")  # the best weights of the checkpoint's time are unknown: the next sets them
        if self.rank == 0:  # the run goes on from the checkpoint as if nothing after it had happened
            if kept.exists():
                keep_as(kept, run_dir / WEIGHTS)
            else:  # no validation before the checkpoint: the next one writes the best weights
                (run_dir / WEIGHTS).unlink(missing_ok=True)
            _truncate_metrics(run_dir, loop.step)
            remove_state(run_dir, name=INTERRUPTED_FILE)
        logger.warning("non-finite loss by step %d: back to the checkpoint of step %d with the learning rate halved",
                       step, loop.step)
        return hidden

    def _final_test(self) -> None:
        """Score the best weights on the test split and record it as the run's result."""
        loop, data, device, run_dir = self.loop, self.data, self.device, self.run_dir
        if self.rank == 0 and (run_dir / WEIGHTS).exists():
            load_weights(self.model, run_dir / WEIGHTS)
        dist_utils.broadcast_weights(self.model)  # the best weights are on rank 0's disk, maybe not on the others'
        record: dict[str, Any] = {"split": "test", "step": loop.step, "tokens": loop.tokens,
                                  "seconds": round(loop.elapsed, 2),
                                  "peak_memory_mb": round(peak_memory_mb(device), 1),
                                  "tokens_per_s": loop.tokens / max(loop.elapsed - loop.eval_seconds, 1e-9),
                                  "eval_seconds": round(loop.eval_seconds, 2)}
        if len(data.ids["test"]) >= 2:
            score = score_ids(self.model, data.ids["test"], characters=data.characters["test"], device=device,
                              amp=self.tc.amp, rank=self.rank, world_size=self.world_size,
                              unknowns=data.unknowns("test"))
            record.update(score.as_dict("test_"))
            logger.info("test: perplexity %.2f, %s, OOV %s", score.perplexity,
                        describe_bits(score.bits_per_char, score.open_bits_per_char),
                        describe_oov(score.oov_rate, score.unknown_share))
        if self.rank == 0:
            append_jsonl(run_dir / METRICS, record)


def tensorboard_writer() -> Any:
    """TensorBoard's ``SummaryWriter`` class.

    Raises:
        LstmgenError: the tensorboard package is not installed.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise LstmgenError("--tensorboard needs the tensorboard package: pip install tensorboard")
    return SummaryWriter


def open_tensorboard(run_dir: Path) -> Any:
    """A TensorBoard writer logging into RUN/tensorboard (``tensorboard --logdir RUN``)."""
    return tensorboard_writer()(log_dir=str(run_dir / "tensorboard"))


def _truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop records written after the saved state: the resumed run writes them again."""
    records = [r for r in read_metrics(run_dir) if r.get("step", 0) <= step and r.get("split") != "test"]
    write_jsonl(run_dir / METRICS, records)
