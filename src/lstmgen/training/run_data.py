"""What a run trains on: its corpus as token ids, with the vocabulary it must use, and what its
config.json records about them.

A new run fits its own vocabulary; a resumed run reads the corpus with the vocabulary it started
with (and refuses a corpus whose text changed since); a run started from another (``init_from``)
takes the parent's tokenizer and vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from lstmgen.config import RunConfig
from lstmgen.errors import LstmgenError
from lstmgen.model.run_dir import CONFIG, _read_json, read_tokenizer_and_vocab
from lstmgen.text.cleaning import CLEANING_RULES_VERSION
from lstmgen.text.script import corpus_script
from lstmgen.tokens.prepare import PreparedData, prepare
from lstmgen.training.finetune import Parent, check_fits, describe_start, held_out_in_parent, open_parent


def run_data(corpus: Path, config: RunConfig, run_dir: Path, *, resume: bool, saved: Optional[dict],
             cache_dir: Optional[Path], world_size: int) -> tuple[PreparedData, Optional[Parent]]:
    """The run's data, and the parent run whose weights it starts from (None when it starts from
    scratch or from a saved state).

    Raises:
        LstmgenError: on a resume, the corpus changed, the number of processes differs, or the parent's
            weights changed since the run started from them.
    """
    parent = None
    if resume:
        saved_tokenizer, saved_vocab = read_tokenizer_and_vocab(run_dir)
        data = prepare(corpus, config.data, config.tokenizer, cache_dir=cache_dir, vocab=saved_vocab,
                       tokenizer=saved_tokenizer)
        info = _read_json(run_dir / CONFIG)
        fingerprint = info.get("corpus_fingerprint")
        if fingerprint and fingerprint != data.fingerprint:
            raise LstmgenError(f"{corpus}: is not the corpus this run was trained on (its text changed)")
        if saved is not None and int(saved.get("world_size", 1)) != world_size:
            raise LstmgenError(f"{run_dir}: was trained on {int(saved['world_size'])} processes; "
                               f"resume it with the same number (now {world_size})")
        if saved is None and config.train.init_from:  # killed before its first save: from the parent again
            parent = open_parent(config.train.init_from)
            if info.get("init_from_sha256") not in (None, parent.sha256):
                raise LstmgenError(f"{parent.path}: its weights changed since {run_dir} started from them; "
                                   f"start that run again")
    elif config.train.init_from:
        parent = open_parent(config.train.init_from)
        check_fits(config, parent)
        data = prepare(corpus, config.data, config.tokenizer, cache_dir=cache_dir, vocab=parent.vocab,
                       tokenizer=parent.tokenizer)
    else:
        data = prepare(corpus, config.data, config.tokenizer, cache_dir=cache_dir)
    return data, parent


def new_run_info(corpus: Path, config: RunConfig, data: PreparedData, parent: Optional[Parent], *, parameters: int,
                 world_size: int) -> dict[str, Any]:
    """What a new run's config.json records beside its settings: the corpus, its fingerprint and files
    (each with its script and what the cleaning rules changed), the script of its text, the split sizes, held-out text found in training, the model's size; and the parent it starts from."""
    extra: dict[str, Any] = {
        "corpus": str(Path(corpus).resolve()), "corpus_fingerprint": data.fingerprint, "documents": data.documents,
        "held_out_in_training": data.overlap, "vocab_size": len(data.vocab), "parameters": parameters,
        "world_size": world_size, "split_tokens": {k: int(len(v)) for k, v in data.ids.items()},
        "split_characters": data.characters, "cleaning_rules": CLEANING_RULES_VERSION,
        "script": corpus_script(data.documents, config.data.script)}
    if parent is not None:
        overlap = held_out_in_parent(corpus, config.data, parent)
        describe_start(parent, data.ids["train"], overlap)
        extra.update(init_from_sha256=parent.sha256, init_from_corpus=parent.info.get("corpus"),
                     held_out_in_parent_training=overlap)
    return extra
