"""Starting a run from a trained one (``lstmgen train CORPUS --init-from RUN``): fine-tuning.

A model trained on a large collection (all of Jin Yong) goes on learning from one novel, or from more
text. The new run begins with the parent's best weights and keeps what those weights depend on: its
tokenizer, its vocabulary and the shape of its model. Words of the new text that the vocabulary lacks
are ``<unk>`` (or, with the hybrid tokenizer, spelled in characters), as they would be for ``eval``.

Everything else is the parent's too unless a flag says otherwise (``--preset`` takes the preset's data,
dropout and training settings instead), except the held-out files the parent named with ``--valid`` and
``--test``, which belong to its own corpus. The new run validates once before its first step, so its
``metrics.jsonl`` opens with the parent's score on the new held-out text: what fine-tuning bought is
the distance from there.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from lstmgen.config import SECTIONS, DataConfig, RunConfig, build_config
from lstmgen.errors import LstmgenError
from lstmgen.model.run_dir import WEIGHTS, check_run_dir, read_run_config, read_tokenizer_and_vocab, run_info
from lstmgen.text.overlap import OVERLAP_WARNING, shares_found_in
from lstmgen.text.reading import list_corpus_files
from lstmgen.text.splitting import split_corpus
from lstmgen.text.tokenizers import Tokenizer
from lstmgen.text.vocab import Vocab

logger = logging.getLogger(__name__)

# What the weights' shapes depend on (besides the vocabulary): a run started from them keeps these.
SHAPE_FIELDS = ("embed_size", "hidden_size", "num_layers", "output", "adaptive_cutoffs")
# Tokenizer settings that change nothing in the tokens: a started run may set them.
FREE_TOKENIZER_FIELDS = ("workers",)
UNKNOWN_WARNING = 0.01  # warn when this share of the new training text is <unk> to the parent
PARENT_CHECK_LIMIT = 256 * 10**6  # bytes: a parent corpus bigger than this is not read again to look for leaks


@dataclass
class Parent:
    """A trained run that a new run starts from."""

    path: Path
    config: RunConfig
    tokenizer: Tokenizer
    vocab: Vocab
    info: dict  # the rest of its config.json (corpus, fingerprint, ...)

    @functools.cached_property
    def sha256(self) -> str:
        """Of its model.safetensors: which weights the new run started from (read when first asked:
        settling a run's config needs none of it)."""
        digest = hashlib.sha256()
        with open(self.path / WEIGHTS, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()


def open_parent(path: Union[str, Path]) -> Parent:
    """The run at ``path``, checked to be complete, with its tokenizer and vocabulary (weights not read).

    Raises:
        LstmgenError: not a finished lstmgen run (no weights yet), or a damaged one.
    """
    run_dir = check_run_dir(path)
    config, raw = read_run_config(run_dir)
    tokenizer, vocab = read_tokenizer_and_vocab(run_dir)
    return Parent(path=run_dir.resolve(), config=config, tokenizer=tokenizer, vocab=vocab, info=run_info(raw))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def fixed_by_parent(config: RunConfig, parent: RunConfig) -> list[str]:
    """The settings of ``config`` that differ from the parent's where they must not: its tokenizer
    (but for ``FREE_TOKENIZER_FIELDS``) and its model's shape, as ``--flag VALUE (it has X)``."""
    differ = []
    for name in (f.name for f in dataclasses.fields(config.tokenizer)):
        ours, theirs = getattr(config.tokenizer, name), getattr(parent.tokenizer, name)
        if name not in FREE_TOKENIZER_FIELDS and ours != theirs:
            differ.append((name, ours, theirs))
    differ += [(name, getattr(config.model, name), getattr(parent.model, name)) for name in SHAPE_FIELDS
               if getattr(config.model, name) != getattr(parent.model, name)]
    return [f"{_flag(name)} {ours} (it has {theirs})" for name, ours, theirs in differ]


def check_fits(config: RunConfig, parent: Parent) -> None:
    """Raise when ``config`` would need other weights than the parent's.

    Raises:
        LstmgenError: a tokenizer setting or the model's shape differs from the parent's.
    """
    differ = fixed_by_parent(config, parent.config)
    if differ:
        raise LstmgenError(f"--init-from {parent.path} keeps that run's tokenizer, vocabulary and model shape, "
                           f"which its weights depend on; these differ: {'; '.join(differ)}")


def config_from_parent(parent: Parent, overrides: Optional[dict[str, dict[str, Any]]] = None, *,
                       preset: Optional[str] = None) -> RunConfig:
    """The settings of a run that starts from ``parent``: the parent's own (or ``preset``'s, when
    given), with ``overrides`` on top; the parent's tokenizer and model shape always.

    Raises:
        LstmgenError: ``overrides`` change a tokenizer setting or the model's shape.
    """
    overrides = {name: {k: v for k, v in values.items() if v is not None}
                 for name, values in (overrides or {}).items()}
    # only what was given is refused: what a preset brings along is replaced by the parent's
    check_fits(replace(parent.config, tokenizer=replace(parent.config.tokenizer, **overrides.get("tokenizer", {})),
                       model=replace(parent.config.model, **overrides.get("model", {}))), parent)
    if preset is not None:
        base = build_config(preset, overrides)
    else:
        own = parent.config
        # the parent's held-out files were chosen for its corpus, not this one
        own = replace(own, data=replace(own.data, valid_path=None, test_path=None))
        base = RunConfig(preset=own.preset, **{name: replace(getattr(own, name), **overrides.get(name, {}))
                                               for name in SECTIONS})
    return replace(
        base,
        tokenizer=replace(parent.config.tokenizer, **{k: getattr(base.tokenizer, k) for k in FREE_TOKENIZER_FIELDS}),
        model=replace(base.model, **{k: getattr(parent.config.model, k) for k in SHAPE_FIELDS}),
        train=replace(base.train, init_from=str(parent.path)),
        preset=preset if preset is not None else parent.config.preset)


def held_out_in_parent(corpus: Union[str, Path], data: DataConfig, parent: Parent) -> Optional[dict[str, float]]:
    """How much of this run's valid and test text the parent trained on, word for word (as
    ``pipeline.held_out_in_training`` counts it): its scores flatter the model by as much.

    None when the parent's corpus is no longer on this machine or no longer reads, or is bigger than
    ``PARENT_CHECK_LIMIT`` (reading it again would take minutes and its text's size in memory).
    """
    trained_on = parent.info.get("corpus")
    if not trained_on or not Path(trained_on).exists():
        return None
    try:
        if sum(f.stat().st_size for f in list_corpus_files(trained_on)) > PARENT_CHECK_LIMIT:
            return None
        held = split_corpus(corpus, data, quiet=True)[0]
        train = split_corpus(trained_on, parent.config.data, quiet=True)[0]["train"]
    except (LstmgenError, OSError):
        return None
    return shares_found_in({name: held[name] for name in ("valid", "test")}, train)


def unknown_share(ids: np.ndarray, vocab: Vocab, chunk: int = 1 << 24) -> float:
    """The share of ``ids`` that is ``<unk>``, read in chunks (``ids`` may be a memory-mapped GB)."""
    if len(ids) == 0:
        return 0.0
    unknown = sum(int(np.count_nonzero(ids[i:i + chunk] == vocab.unk_id)) for i in range(0, len(ids), chunk))
    return unknown / len(ids)


def describe_start(parent: Parent, train_ids: np.ndarray, overlap: Optional[dict[str, float]]) -> None:
    """Log which run the new one starts from; warn when much of the new text is unknown to it, or when
    its held-out text is text the parent trained on (``overlap``: ``held_out_in_parent``)."""
    logger.info("starting from %s (trained on %s); step 0 scores it as it is", parent.path,
                parent.info.get("corpus") or "?")
    overlap = overlap or {}
    worst = max(overlap, key=lambda name: overlap[name], default=None)
    if worst is not None and overlap[worst] >= OVERLAP_WARNING:
        logger.warning("%.1f%% of the %s text is in what %s trained on, word for word, so its scores overstate how "
                       "well the model does on text it never saw (does the parent's corpus hold these novels whole?)",
                       100 * overlap[worst], worst, parent.path)
    share = unknown_share(train_ids, parent.vocab)
    if share >= UNKNOWN_WARNING:
        logger.warning("%.1f%% of the training split is <unk> to %s's vocabulary (%s it never saw): fine-tuning "
                       "cannot learn those; a new run fits a vocabulary to this text", 100 * share, parent.path,
                       {"char": "characters", "hybrid": "characters"}.get(parent.tokenizer.kind, "words"))

