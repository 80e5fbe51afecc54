"""The run directory: one folder holds everything needed to evaluate, generate or resume.

    config.json        every setting + package version + corpus fingerprint
    tokenizer.json     tokenizer kind and settings
    vocab.json         id -> token
    model.safetensors  the weights that scored best on validation
    metrics.jsonl      one JSON object per evaluation
    state/             last weights, optimiser, schedule, RNG states, data position (for --resume)

Every file is written to a temporary name, flushed, fsynced and renamed, so a kill during a save
leaves the previous version whole. Nothing loaded from a run executes code: weights come from
safetensors, the rest from JSON, and the resume state through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch

from lstmgen import __version__
from lstmgen.config import RunConfig
from lstmgen.errors import LstmgenError
from lstmgen.model import LSTMLM
from lstmgen.tokenizers import Tokenizer, tokenizer_from_dict
from lstmgen.vocab import Vocab

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when a run written by this version can no longer be read by older code
CONFIG, TOKENIZER, VOCAB, WEIGHTS, METRICS = "config.json", "tokenizer.json", "vocab.json", "model.safetensors", "metrics.jsonl"
STATE_DIR, STATE_FILE = "state", "checkpoint.pt"
REQUIRED = (CONFIG, TOKENIZER, VOCAB, WEIGHTS)
PathLike = Union[str, Path]


def atomic_write(path: PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)``, fsync, then rename over ``path``: readers see old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def write_json(path: PathLike, data: Any) -> None:
    """Write JSON atomically (UTF-8, Chinese kept readable)."""
    atomic_write(path, lambda p: p.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8"))


def append_jsonl(path: PathLike, record: dict) -> None:
    """Append one line; a torn last line (from a kill) is skipped by ``read_metrics``."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(run_dir: PathLike) -> list[dict]:
    """Every evaluation record of a run, oldest first."""
    path = Path(run_dir) / METRICS
    records = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def save_weights(model: torch.nn.Module, path: PathLike) -> None:
    """Weights as safetensors (save_model handles the tied matrix)."""
    from safetensors.torch import save_model

    atomic_write(path, lambda p: save_model(_unwrap(model), str(p)))


def load_weights(model: torch.nn.Module, path: PathLike) -> None:
    from safetensors.torch import load_model

    load_model(_unwrap(model), str(path), strict=True)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)  # DistributedDataParallel wraps the real model


def save_state(run_dir: PathLike, state: dict) -> None:
    """The resume state (tensors, numbers, strings only) under state/."""
    atomic_write(Path(run_dir) / STATE_DIR / STATE_FILE, lambda p: torch.save(state, p))


def load_state(run_dir: PathLike) -> Optional[dict]:
    """The resume state, loaded without unpickling arbitrary objects; None if there is none."""
    path = Path(run_dir) / STATE_DIR / STATE_FILE
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # weights_only refuses any pickled code; a torn file lands here too
        raise LstmgenError(f"{path}: cannot load the resume state safely ({str(err).splitlines()[0]})")


def write_run_files(run_dir: PathLike, config: RunConfig, tokenizer: Tokenizer, vocab: Vocab, extra: dict) -> None:
    """config.json, tokenizer.json, vocab.json: written once when a run starts."""
    run_dir = Path(run_dir)
    write_json(run_dir / CONFIG, {"format_version": FORMAT_VERSION, "lstmgen_version": __version__,
                                  **config.to_dict(), **extra})
    write_json(run_dir / TOKENIZER, tokenizer.to_dict())
    write_json(run_dir / VOCAB, vocab.to_dict())


@dataclass
class Run:
    """A trained run, loaded: everything ``evaluate`` and ``generate`` need."""

    path: Path
    config: RunConfig
    tokenizer: Tokenizer
    vocab: Vocab
    model: LSTMLM
    info: dict = field(default_factory=dict)  # the rest of config.json (fingerprint, sizes, version)

    @property
    def metrics(self) -> list[dict]:
        return read_metrics(self.path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LstmgenError(f"{path}: damaged or unreadable ({type(err).__name__}); the run cannot be loaded")


def check_run_dir(run_dir: PathLike) -> Path:
    """The run folder, if it looks like one; else a clear error saying what is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LstmgenError(f"{run_dir}: no such run directory")
    missing = [name for name in REQUIRED if not (run_dir / name).is_file()]
    if missing:
        raise LstmgenError(f"{run_dir}: not a complete lstmgen run (missing {', '.join(missing)})")
    return run_dir


def load_run(run_dir: PathLike, device: Union[str, torch.device] = "cpu") -> Run:
    """Load a run folder for evaluation or generation; needs nothing but the folder."""
    run_dir = check_run_dir(run_dir)
    raw = _read_json(run_dir / CONFIG)
    if not isinstance(raw, dict) or raw.get("format_version") != FORMAT_VERSION:
        found = raw.get("format_version") if isinstance(raw, dict) else None
        raise LstmgenError(f"{run_dir}: run format {found!r} is not the {FORMAT_VERSION} this lstmgen "
                           f"{__version__} reads; retrain, or use the lstmgen version that wrote it")
    try:
        config = RunConfig.from_dict(raw)
        tokenizer = tokenizer_from_dict(_read_json(run_dir / TOKENIZER))
        vocab = Vocab.from_dict(_read_json(run_dir / VOCAB))
    except (KeyError, TypeError, ValueError) as err:
        raise LstmgenError(f"{run_dir}: config, tokenizer or vocabulary file is damaged ({err})")
    model = LSTMLM(config.model, len(vocab))
    try:
        load_weights(model, run_dir / WEIGHTS)
    except Exception as err:  # safetensors raises its own error types for torn or foreign files
        raise LstmgenError(f"{run_dir / WEIGHTS}: damaged or does not match the config ({str(err).splitlines()[0]})")
    model.to(device).eval()
    info = {k: v for k, v in raw.items() if k not in ("data", "tokenizer", "model", "train", "preset")}
    return Run(path=run_dir, config=config, tokenizer=tokenizer, vocab=vocab, model=model, info=info)


class RunLock:
    """One writer per run directory: an OS file lock, released by the kernel if the process dies."""

    def __init__(self, run_dir: PathLike) -> None:
        self.path = Path(run_dir) / ".lock"
        self._file = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+")
        try:
            import fcntl

            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no fcntl (Windows): no lock, as before
            pass
        except OSError:
            self._file.close()
            self._file = None
            raise LstmgenError(f"{self.path.parent}: another lstmgen process is training in this run directory")
        self._file.seek(0)
        self._file.truncate()
        self._file.write(str(os.getpid()))
        self._file.flush()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
