"""The run directory: one folder holds everything needed to evaluate, generate or resume.

    config.json        every setting + package version + corpus fingerprint
    tokenizer.json     tokenizer kind and settings
    vocab.json         id -> token
    model.safetensors  the weights that scored best on validation
    metrics.jsonl      one JSON object per evaluation
    state/             what --resume needs (``lstmgen.training.checkpoints``)

Nothing loaded from a run executes code: weights come from safetensors, the rest from JSON.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import torch

from lstmgen import __version__
from lstmgen.config import RunConfig
from lstmgen.errors import LstmgenError
from lstmgen.files import PathLike, atomic_write, describe_error, write_json
from lstmgen.model.lstm import LSTMLM
from lstmgen.text.tokenizers import Tokenizer, tokenizer_from_dict
from lstmgen.text.vocab import Vocab

if TYPE_CHECKING:
    from lstmgen.tokens.prepare import PreparedData

logger = logging.getLogger(__name__)


FORMAT_VERSION = 1  # bump when a run written by this version can no longer be read by older code


CONFIG, TOKENIZER, VOCAB, WEIGHTS, METRICS = "config.json", "tokenizer.json", "vocab.json", "model.safetensors", "metrics.jsonl"


REQUIRED = (CONFIG, TOKENIZER, VOCAB, WEIGHTS)


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

    def prepared(self, corpus: Optional[PathLike] = None) -> "PreparedData":
        """A corpus (by default the run's own) read, split and encoded with this run's tokenizer and
        vocabulary: the token ids of its splits, as the run saw them."""
        from lstmgen.tokens.prepare import prepare

        return prepare(corpus if corpus is not None else self.info["corpus"], self.config.data,
                       self.config.tokenizer, vocab=self.vocab, tokenizer=self.tokenizer)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LstmgenError(f"{path}: damaged or unreadable ({type(err).__name__}); the run cannot be loaded")


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
