"""``train()``: one call from a corpus to a finished run directory, or from a stopped run to its end.

It checks what can be refused before anything is written (a busy run directory, ``--amp bf16`` where
bf16 cannot run, a missing package), takes the run directory's lock, and hands over to the Trainer.
Under torchrun every process calls it; rank 0 alone writes the run directory.
"""

from __future__ import annotations

import datetime
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch

from lstmgen.config import RunConfig, build_config
from lstmgen.device import choose_precision, pick_device
from lstmgen.errors import LstmgenError
from lstmgen.model.run_dir import CONFIG, TOKENIZER, VOCAB, check_run_dir, read_run_config
from lstmgen.training import distributed as dist_utils
from lstmgen.training.checkpoints import remove_stale_temporaries
from lstmgen.training.lock import RunLock
from lstmgen.training.loop import Progress, Trainer
from lstmgen.training.metrics import tensorboard_writer

# Where a run goes on and how that machine computes, not what it trains: --resume may change them
# (a run started in bf16 on a GPU can be finished on a CPU that has no bf16).
RESUME_SETTINGS = ("device", "threads", "amp")


def settings_config(preset: Optional[str], overrides: dict[str, dict[str, Any]]) -> RunConfig:
    """A new run's settings: ``preset``'s ("default" when None) with ``overrides`` on top; with
    ``train.init_from``, the parent run's own (or ``preset``'s, when given) and always its tokenizer,
    vocabulary and model shape.

    Raises:
        LstmgenError: an unknown preset, a bad value, or an override the parent's weights cannot take.
    """
    init_from = overrides.get("train", {}).get("init_from")
    if init_from:
        from lstmgen.training.finetune import config_from_parent, open_parent

        return config_from_parent(open_parent(init_from), overrides, preset=preset)
    return build_config(preset or "default", overrides)


def resume_settings(given: dict[str, Any], *, preset: Optional[str] = None) -> dict[str, Any]:
    """The settings given to a resume (None: not given), checked: only RESUME_SETTINGS may change.

    Raises:
        LstmgenError: any other setting, or a preset, was given.
    """
    given = {key: value for key, value in given.items() if value is not None}
    fixed = sorted(f"--{key.replace('_', '-')}" for key in given if key not in RESUME_SETTINGS)
    fixed += ["--preset"] if preset else []
    if fixed:
        raise LstmgenError(f"--resume continues a run with the settings it started with, so {', '.join(fixed)} "
                           f"cannot be given (only {', '.join('--' + k for k in RESUME_SETTINGS)}, which say "
                           f"where it runs); to train with other settings, start a new run")
    return given


def default_run_dir(preset: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{preset}"


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
        where: with ``resume``, train settings that say where the run goes on (``RESUME_SETTINGS``:
            device, threads, amp) and replace the saved ones.
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
        for key, value in resume_settings(where or {}).items():  # the machine it goes on
            setattr(config.train, key, value)
    else:
        if config is None:
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
    leave_together = False  # True when every rank stops at the same point: they leave the group together
    try:
        refusal: Optional[LstmgenError] = None
        try:
            if tc.tensorboard:
                tensorboard_writer()  # missing package: said before the corpus is read, by every rank
            if tc.threads:
                torch.set_num_threads(tc.threads)
            device = pick_device(tc.device)
            precision = choose_precision(device, tc.amp)  # --amp bf16 where it cannot run: refused before any write
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
        trainer = Trainer(Path(corpus), config, run_dir, device, precision, rank=rank, world_size=world_size,
                          progress=progress)
        return trainer.run(resume=resume, cache_dir=cache_dir)
    finally:
        if lock is not None:
            lock.__exit__(*sys.exc_info())
        if owns_group:
            dist_utils.finish(clean=sys.exc_info()[0] is None or leave_together)
