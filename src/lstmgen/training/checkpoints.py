"""A run's resume states in RUN/state/: checkpoint.pt at every save point, interrupted.pt when Ctrl-C
came between two, and the best weights as of the checkpoint (what a NaN back-off restores).

They are written atomically and loaded through ``torch.load(weights_only=True)``: a state holding
pickled code is refused before anything runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import torch

from lstmgen.errors import LstmgenError
from lstmgen.files import OUR_TMP, PathLike, atomic_write, describe_error

STATE_DIR, STATE_FILE = "state", "checkpoint.pt"


BEST_KEPT = "best.safetensors"  # the best weights as of the last checkpoint: what a NaN back-off restores


INTERRUPTED_FILE = "interrupted.pt"  # where Ctrl-C saves between save points; checkpoint.pt stays the last good one


def remove_stale_temporaries(run_dir: PathLike) -> int:
    """Delete what killed writers left in ``run_dir`` and ``state/`` (atomic_write's ``.NAME.<hex>.tmp``
    folders, and files so named by older versions); call under ``RunLock``. Returns how many."""
    removed = 0
    for folder in (Path(run_dir), Path(run_dir) / STATE_DIR):
        for tmp in folder.glob(".*") if folder.is_dir() else ():
            if not OUR_TMP.fullmatch(tmp.name):
                continue
            try:
                if tmp.is_dir() and not tmp.is_symlink():
                    shutil.rmtree(tmp)
                else:
                    tmp.unlink()
                removed += 1
            except OSError:
                pass
    return removed


def save_state(run_dir: PathLike, state: dict, *, name: str = STATE_FILE) -> None:
    """A resume state (tensors, numbers, strings, lists, tuples, dicts only) as state/NAME."""
    atomic_write(Path(run_dir) / STATE_DIR / name, lambda p: torch.save(state, p))


def remove_state(run_dir: PathLike, *, name: str) -> None:
    """Delete state/NAME if it is there."""
    (Path(run_dir) / STATE_DIR / name).unlink(missing_ok=True)


STATE_KEYS = ("model", "optimizer", "step", "elapsed", "tokens", "best_valid", "backoffs", "rng_cpu")


def load_state(run_dir: PathLike, *, name: str = STATE_FILE) -> Optional[dict]:
    """A resume state (state/NAME), loaded without unpickling arbitrary objects; None if there is none.

    Raises:
        LstmgenError: the file holds pickled code or objects (lstmgen never writes those, so it is
            refused without running anything), or it is torn, truncated or incomplete.
    """
    path = Path(run_dir) / STATE_DIR / name
    if not path.exists():
        return None
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():  # torch warns about the protocol of files it is about to refuse
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise LstmgenError(f"{path}: refused: it holds pickled objects other than tensors and numbers, so it is "
                           f"not a state lstmgen wrote, and lstmgen never runs code from a run directory")
    except Exception as err:  # a torn zip, a truncated stream, an empty file
        raise LstmgenError(f"{path}: damaged or truncated, cannot resume from it "
                           f"({describe_error(err)})")
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise LstmgenError(f"{path}: incomplete resume state (no {', '.join(missing)}); it was not written by "
                           f"this lstmgen")
    return state


def load_latest_state(run_dir: PathLike) -> Optional[dict]:
    """What ``--resume`` continues from: the state saved on an interruption if it is newer than the
    last checkpoint, else the last checkpoint; None if the run has neither."""
    checkpoint = load_state(run_dir)
    interrupted = load_state(run_dir, name=INTERRUPTED_FILE)
    if interrupted is not None and (checkpoint is None or int(interrupted["step"]) > int(checkpoint["step"])):
        return interrupted
    return checkpoint
