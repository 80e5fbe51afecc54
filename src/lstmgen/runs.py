"""The run directory: one folder holds everything needed to evaluate, generate or resume.

    config.json        every setting + package version + corpus fingerprint
    tokenizer.json     tokenizer kind and settings
    vocab.json         id -> token
    model.safetensors  the weights that scored best on validation
    metrics.jsonl      one JSON object per evaluation
    state/             checkpoint.pt: last weights, optimiser, schedule, RNG states, data position,
                       carried LSTM state (for --resume); interrupted.pt: the same, saved by Ctrl-C
                       between two checkpoints

Every file is written to a temporary name, flushed, fsynced and renamed, so a kill during a save
leaves the previous version whole. Nothing loaded from a run executes code: weights come from
safetensors, the rest from JSON, and the resume state through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import uuid
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
BEST_KEPT = "best.safetensors"  # the best weights as of the last checkpoint: what a NaN back-off restores
INTERRUPTED_FILE = "interrupted.pt"  # where Ctrl-C saves between save points; checkpoint.pt stays the last good one
TMP_SUFFIX = ".tmp"
# atomic_write's private folders, ".NAME.<12 hex digits>.tmp" (older versions wrote files so named)
OUR_TMP = re.compile(r"\..+\.[0-9a-f]{12}" + re.escape(TMP_SUFFIX))
REQUIRED = (CONFIG, TOKENIZER, VOCAB, WEIGHTS)
PathLike = Union[str, Path]


def atomic_write(path: PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)``, fsync, then rename over ``path``: readers see old or new, never half.

    ``tmp_path`` has the final name, inside a private folder ``.NAME.<hex>.tmp`` beside ``path``, so
    whatever temporary files the writer makes of its own (safetensors writes through a ``.tmpXXXXXX``
    beside its target) stay in that folder too. A kill at any moment leaves ``path`` as it was, plus at
    worst that folder, which ``remove_stale_temporaries`` deletes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        folder = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}"
        try:
            folder.mkdir()
            break
        except FileExistsError:
            continue
    tmp = folder / path.name
    try:
        # Created first with the mode open() gives (0666 less the umask), and given that mode again if the
        # writer replaced it: safetensors renames a 0600 temporary file of its own into place, which left
        # the weights unreadable to the group and others while the run's other files were not.
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        mode = stat.S_IMODE(tmp.stat().st_mode)
        write(tmp)
        if stat.S_IMODE(tmp.stat().st_mode) != mode:
            os.chmod(tmp, mode)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def keep_as(src: PathLike, dst: PathLike) -> None:
    """Make ``dst`` the file ``src`` is now, atomically: a hard link where the filesystem has them (free,
    as lstmgen replaces its files and never writes into them), else a copy."""
    def write(tmp: Path) -> None:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)

    atomic_write(dst, write)


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


def write_json(path: PathLike, data: Any) -> None:
    """Write JSON atomically (UTF-8, Chinese kept readable)."""
    atomic_write(path, lambda p: p.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8"))


def append_jsonl(path: PathLike, record: dict) -> None:
    """Add one line to a JSON-lines file by rewriting it atomically (metrics files are small).

    A plain append torn by a kill would leave half a line that the next append glues a record to.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if text and not text.endswith("\n"):  # a torn last line from an older writer: drop it
        text = text[: text.rfind("\n") + 1]
    line = json.dumps(record, ensure_ascii=False) + "\n"
    atomic_write(path, lambda p: p.write_text(text + line, encoding="utf-8"))


def write_jsonl(path: PathLike, records: list[dict]) -> None:
    """Replace a JSON-lines file atomically."""
    atomic_write(path, lambda p: p.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"))


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
    """Weights as safetensors: each parameter once (a tied matrix under its first name), on the CPU.

    Tensors are copied out one by one because cuDNN keeps a GPU LSTM's weights as views into one
    flat buffer, which safetensors refuses as shared memory.
    """
    from safetensors.torch import save_file

    tensors = {name: p.detach().to("cpu", copy=True).contiguous() for name, p in _unwrap(model).named_parameters()}
    tensors.update({name: b.detach().to("cpu", copy=True).contiguous() for name, b in _unwrap(model).named_buffers()})
    atomic_write(path, lambda p: save_file(tensors, str(p)))


def load_weights(model: torch.nn.Module, path: PathLike) -> None:
    """Load weights saved by ``save_weights``; any missing or extra tensor is an error."""
    from safetensors.torch import load_file

    module = _unwrap(model)
    tensors = load_file(str(path))
    expected = {name for name, _ in module.named_parameters()} | {name for name, _ in module.named_buffers()}
    if set(tensors) != expected:
        missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise ValueError(f"weights do not match the model (missing {missing[:3]}, unexpected {extra[:3]})")
    # tied aliases (decoder.weight is embedding.weight) are absent from the file: strict=False, checked above
    module.load_state_dict(tensors, strict=False)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)  # DistributedDataParallel wraps the real model


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


def write_run_files(run_dir: PathLike, config: RunConfig, tokenizer: Tokenizer, vocab: Vocab, extra: dict) -> None:
    """tokenizer.json, vocab.json, then config.json: written once when a run starts.

    config.json marks a folder as a run, so it goes last: a kill before it leaves no half run behind.
    """
    run_dir = Path(run_dir)
    write_json(run_dir / TOKENIZER, tokenizer.to_dict())
    write_json(run_dir / VOCAB, vocab.to_dict())
    write_json(run_dir / CONFIG, {"format_version": FORMAT_VERSION, "lstmgen_version": __version__,
                                  **config.to_dict(), **extra})


@dataclass
class TrainedRun:
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


Run = TrainedRun  # its name before lstmgen.Run (the Python API's, with generate and evaluate) came


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LstmgenError(f"{path}: damaged or unreadable ({type(err).__name__}); the run cannot be loaded")


def describe_error(err: BaseException, limit: int = 200) -> str:
    """A library's error message on one short line, for the end of a user-facing one."""
    text = " ".join(str(err).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    if isinstance(err, LstmgenError):  # already written for users
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def check_run_dir(run_dir: PathLike, required: tuple[str, ...] = REQUIRED) -> Path:
    """The run folder, if it looks like one; else a clear error saying what is missing.

    Args:
        required: the files it must have (resuming needs no weights yet).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LstmgenError(f"{run_dir}: no such run directory")
    missing = [name for name in required if not (run_dir / name).is_file()]
    if missing:
        raise LstmgenError(f"{run_dir}: not a complete lstmgen run (missing {', '.join(missing)})")
    return run_dir


def read_run_config(run_dir: PathLike) -> tuple[RunConfig, dict]:
    """config.json of a run, checked: its format version, then its settings.

    Returns:
        ``(config, raw)``: the settings, and the whole file as a dict (fingerprint, sizes, version).
    """
    run_dir = Path(run_dir)
    raw = _read_json(run_dir / CONFIG)
    if not isinstance(raw, dict) or raw.get("format_version") != FORMAT_VERSION:
        found = raw.get("format_version") if isinstance(raw, dict) else None
        raise LstmgenError(f"{run_dir}: run format {found!r} is not the {FORMAT_VERSION} this lstmgen "
                           f"{__version__} reads; retrain, or use the lstmgen version that wrote it")
    try:
        return RunConfig.from_dict(raw), raw
    except (AttributeError, KeyError, TypeError, ValueError, LstmgenError) as err:
        raise LstmgenError(f"{run_dir / CONFIG}: damaged settings ({describe_error(err)})")


def read_tokenizer_and_vocab(run_dir: PathLike) -> tuple[Tokenizer, Vocab]:
    """tokenizer.json and vocab.json of a run, with a clear error when either is damaged."""
    run_dir = Path(run_dir)
    loaded = []
    for name, build in ((TOKENIZER, tokenizer_from_dict), (VOCAB, Vocab.from_dict)):
        data = _read_json(run_dir / name)
        try:
            loaded.append(build(data))
        except (AttributeError, KeyError, TypeError, ValueError, LstmgenError) as err:
            raise LstmgenError(f"{run_dir / name}: damaged ({describe_error(err)})")
    return loaded[0], loaded[1]


def load_run(run_dir: PathLike, device: Union[str, torch.device] = "cpu") -> TrainedRun:
    """Load a run folder for evaluation or generation; needs nothing but the folder."""
    run_dir = check_run_dir(run_dir)
    config, raw = read_run_config(run_dir)
    tokenizer, vocab = read_tokenizer_and_vocab(run_dir)
    model = LSTMLM(config.model, len(vocab))
    load_run_weights(model, run_dir)
    model.to(device).eval()
    return TrainedRun(path=run_dir, config=config, tokenizer=tokenizer, vocab=vocab, model=model, info=run_info(raw))


def load_run_weights(model: torch.nn.Module, run_dir: PathLike) -> None:
    """Put a run's best weights (model.safetensors) into ``model``, built from its config and vocabulary.

    Raises:
        LstmgenError: the file is damaged, or does not fit the run's config.
    """
    path = Path(run_dir) / WEIGHTS
    try:
        load_weights(model, path)
    except Exception as err:  # safetensors raises its own error types for torn or foreign files
        raise LstmgenError(f"{path}: damaged or does not match the config ({describe_error(err)})")


def run_info(raw: dict) -> dict:
    """What config.json holds besides the settings: corpus, fingerprint, sizes, version, ..."""
    return {k: v for k, v in raw.items() if k not in ("data", "tokenizer", "model", "train", "preset")}


class RunLock:
    """One writer per run directory: an OS file lock (``filelock``: flock on Unix, LockFileEx on
    Windows), released by the operating system if the process dies.

    The lock belongs to the open file, not to the .lock file's existence: a killed process may leave
    .lock behind, but never a held lock. The holder's pid is written beside it (.lock.pid), for the
    message that turns a second writer away.
    """

    def __init__(self, run_dir: PathLike) -> None:
        self.path = Path(run_dir) / ".lock"
        self.pid_path = Path(run_dir) / ".lock.pid"
        self._lock: Optional[Any] = None
        self._created: Optional[Path] = None  # the outermost folder __enter__ made, if it made any

    def __enter__(self) -> "RunLock":
        import filelock

        missing = [folder for folder in (self.path.parent, *self.path.parent.parents) if not folder.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._created = missing[-1] if missing else None
        lock = filelock.FileLock(str(self.path))
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            try:
                holder = self.pid_path.read_text(encoding="ascii").strip()
            except (OSError, UnicodeDecodeError):
                holder = ""
            raise LstmgenError(f"{self.path.parent}: another lstmgen process"
                               f"{f' (pid {holder})' if holder.isdigit() else ''} is training in this run "
                               f"directory; wait for it to finish or stop it first") from None
        self._lock = lock
        self.pid_path.write_text(str(os.getpid()), encoding="ascii")
        return self

    def __exit__(self, *exc: Any) -> None:
        """Release the lock. After an error (``exc``), folders this lock made for a run that wrote
        nothing are removed again: a mistyped corpus path leaves no empty runs/DATE folder behind."""
        if self._lock is None:
            return
        self._lock.release()
        self._lock = None
        run_dir = self.path.parent
        if exc and exc[0] is not None and self._created is not None:
            try:
                if {p.name for p in run_dir.iterdir()} <= {self.path.name, self.pid_path.name}:
                    self.pid_path.unlink()
                    self.path.unlink(missing_ok=True)  # Windows' filelock removes it on release
                    for folder in (run_dir, *run_dir.parents):
                        folder.rmdir()  # fails, and stops, at a folder something else has written into
                        if folder == self._created:
                            break
            except OSError:
                pass
