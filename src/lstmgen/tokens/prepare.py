"""A corpus path -> token ids, ready to train: read, split, segment (cached), fit the vocabulary on
the training split, encode.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from lstmgen import __version__
from lstmgen.config import DataConfig, TokenizerConfig
from lstmgen.errors import LstmgenError
from lstmgen.files import write_json
from lstmgen.text.cleaning import CLEANING_RULES_VERSION
from lstmgen.text.overlap import held_out_in_training, report_overlap
from lstmgen.text.reading import list_corpus_files
from lstmgen.text.segmenter import load_user_words
from lstmgen.text.splitting import corpus_fingerprint, split_corpus
from lstmgen.text.tokenizers import HybridTokenizer, Tokenizer, WordTokenizer, build_tokenizer
from lstmgen.text.vocab import Vocab
from lstmgen.tokens.open_vocab import Speller, Unknowns
from lstmgen.tokens.store import (
    MANIFESTS_DIR,
    SOURCE_FILE,
    TOKENS_DIR,
    Segmented,
    build_and_publish,
    cache_key,
    default_cache_dir,
    load_segmented,
    open_ids,
    remap,
    segment_texts,
)

logger = logging.getLogger(__name__)


SPLITS = ("train", "valid", "test")


@dataclass
class PreparedData:
    """A corpus ready to train on."""

    tokenizer: Tokenizer
    vocab: Vocab
    ids: dict[str, np.ndarray]  # split -> int32 vocabulary ids
    characters: dict[str, int]  # split -> characters of its text
    fingerprint: str  # content hash of the corpus text
    documents: list[dict] = field(default_factory=list)  # name, encoding, characters per file
    overlap: dict[str, float] = field(default_factory=dict)  # valid, test -> held_out_in_training's share
    seconds: dict[str, float] = field(default_factory=dict)  # time spent reading, segmenting, ...
    # held-out split -> where its <unk> words are and what spelling them costs; found when first asked
    find_unknowns: Optional[Callable[[str], Unknowns]] = field(default=None, repr=False)
    _unknowns: dict[str, Unknowns] = field(default_factory=dict, repr=False)

    def unknowns(self, split: str) -> Optional[Unknowns]:
        """The <unk> words of ``split`` (valid or test) and their spelling cost, for the open-vocabulary
        score; None for the training split. Only scoring needs them, so a start does not pay for them."""
        if split not in ("valid", "test") or self.find_unknowns is None:
            return None
        if split not in self._unknowns:
            self._unknowns[split] = self.find_unknowns(split)
        return self._unknowns[split]


def segmenter_for(config: TokenizerConfig, saved: Optional[Tokenizer] = None) -> tuple[Tokenizer, dict]:
    """The tokenizer whose output is cached, and the settings that key the cache.

    Word and hybrid share jieba's segmentation; hybrid then spells rare words out in characters,
    which is a cheap mapping over the cached word types. With a run's ``saved`` tokenizer, its own
    user words are used: the user dictionary file is not read again (it may have moved or changed).
    """
    kind = "word" if config.tokenizer in ("word", "hybrid") else config.tokenizer
    if kind != "word":
        return build_tokenizer(TokenizerConfig(tokenizer=kind)), {"segmenter": kind, "backend": kind, "format": 2}
    if isinstance(saved, WordTokenizer):
        words = saved.user_words
    else:
        words = load_user_words(config.user_dict) if config.user_dict else []
    base = WordTokenizer(config.user_dict, user_words=words)
    settings = {"segmenter": kind, "backend": base.backend, "format": 2,
                # another jieba may cut the same text into other words
                "versions": {package: _version(package) for package in ("jieba", "rjieba")}}
    if words:
        settings["user_words"] = words
    return base, settings


def _version(package: str) -> Optional[str]:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def split_fingerprint(texts: dict[str, list[str]]) -> str:
    """One hash of the three splits' text: the run's corpus fingerprint and the cache's key."""
    return corpus_fingerprint([f"{name}:{len(texts[name])}" for name in SPLITS] +
                              [t for name in SPLITS for t in texts[name]])


def segment_folder(settings: dict, cache_dir: Optional[Path], fingerprint: str) -> Path:
    """Where the segmentation of the text with this fingerprint, by these settings, is cached."""
    return Path(cache_dir or default_cache_dir()) / TOKENS_DIR / cache_key(fingerprint, settings)


def segment(texts: dict[str, list[str]], config: TokenizerConfig, cache_dir: Optional[Path] = None,
            fingerprint: Optional[str] = None, saved: Optional[Tokenizer] = None, *,
            corpus: Optional[str] = None) -> Segmented:
    """Segment every split, or load the segmentation cached for this exact text and settings
    (``saved``: a run's tokenizer, as for ``segmenter_for``). A new cache folder records ``corpus``
    (the path the text was read from), the settings and the fingerprint in its source.json, which
    ``lstmgen cache`` lists."""
    base, settings = segmenter_for(config, saved)
    fingerprint = fingerprint or split_fingerprint(texts)
    folder = segment_folder(settings, cache_dir, fingerprint)
    cached = load_segmented(folder)
    if cached is not None:
        logger.info("segmentation: cached (%s)", folder)
        return cached
    start = time.perf_counter()
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    except OSError as err:
        raise LstmgenError(f"cannot write the token cache under {folder.parent} ({err}); set LSTMGEN_CACHE")

    def build(into: Path) -> None:
        types = segment_texts(texts, base.tokenize_many, into, characters=base.kind == "char", workers=config.workers)
        # the user words themselves may be thousands: their number tells the folders apart
        described = {**settings, **({"user_words": len(settings["user_words"])} if "user_words" in settings else {})}
        write_json(into / SOURCE_FILE, {"corpus": corpus, "fingerprint": fingerprint, "settings": described,
                                        "types": types, "made": time.strftime("%Y-%m-%d %H:%M:%S"),
                                        "lstmgen": __version__})

    build_and_publish(tmp, folder, build)
    seg = load_segmented(folder)
    if seg is None:
        raise LstmgenError(f"{folder}: the token cache is damaged; delete that folder and run again")
    logger.info("segmentation: %d types, %.1fs; cached in %s", len(seg.types), time.perf_counter() - start, folder)
    return seg


def files_key(path: Union[str, Path], data: DataConfig) -> Optional[str]:
    """A key for the corpus files' identities and the settings they are read with (None: unknowable)."""
    try:
        files = list_corpus_files(path)
        for extra in (data.valid_path, data.test_path):
            if extra:
                files += list_corpus_files(extra)
        # the change time too: a file replaced with its old size and modification time put back
        # (cp -p, rsync -t) still gets a new one, which no user can set
        stats = [(str(f.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
                 for f in files for st in [f.stat()]]
    except (OSError, LstmgenError):
        return None  # the full read reports what is wrong
    # the version too: another lstmgen may read the same bytes into other text
    payload = json.dumps({"files": stats, "data": asdict(data), "lstmgen": __version__,
                          "cleaning_rules": CLEANING_RULES_VERSION},
                         ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _manifest_path(cache_dir: Optional[Path], key: str) -> Path:
    return Path(cache_dir or default_cache_dir()) / MANIFESTS_DIR / f"{key}.json"


def read_manifest(cache_dir: Optional[Path], key: Optional[str]) -> Optional[dict]:
    if key is None:
        return None
    try:
        known = json.loads(_manifest_path(cache_dir, key).read_text(encoding="utf-8"))
        return known if {"fingerprint", "characters", "documents"} <= set(known) else None
    except (OSError, ValueError):
        return None


def write_manifest(cache_dir: Optional[Path], key: Optional[str], known: dict) -> None:
    if key is None:
        return
    path = _manifest_path(cache_dir, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, known)
    except OSError as err:  # a read-only cache costs only the next start's speed
        logger.debug("cannot write %s (%s)", path, err)


def expand_types(types: list[str], tokenizer: Tokenizer) -> list[list[str]]:
    """The tokens each cached type becomes: itself, or (hybrid) its characters when it is a rare word."""
    if tokenizer.kind != "hybrid":
        return [[t] for t in types]
    return [[t] if t == "\n" else tokenizer.words_to_tokens([t]) for t in types]


def fit_vocab(seg: Segmented, tokenizer: Tokenizer, config: TokenizerConfig) -> tuple[Vocab, list[list[str]]]:
    """Fit the tokenizer and build the vocabulary from training counts only.

    Returns the vocabulary and, for every cached type, the tokens it becomes.
    """
    type_counts = seg.type_counts("train")
    if tokenizer.kind == "hybrid":
        tokenizer.fit_counts({t: int(c) for t, c in zip(seg.types, type_counts) if c})
    expansions = expand_types(seg.types, tokenizer)
    counts: dict[str, int] = {}
    for tokens, count in zip(expansions, type_counts):
        if count:
            for token in tokens:
                counts[token] = counts.get(token, 0) + int(count)
    vocab = Vocab.from_counts(counts, min_freq=config.min_freq, max_size=config.max_vocab,
                              required=tokenizer.required_tokens())
    if isinstance(tokenizer, HybridTokenizer) and tokenizer.kept_words:
        # words --max-vocab or --min-freq left out are spelled out like rarer ones, never read as <unk>
        cut = {word for word in tokenizer.kept_words if word not in vocab}
        if cut:
            tokenizer.kept_words = tokenizer.kept_words - cut
            expansions = expand_types(seg.types, tokenizer)
    return vocab, expansions


def prepare(path: Union[str, Path], data: DataConfig, tok: TokenizerConfig, *,
            cache_dir: Optional[Path] = None, vocab: Optional[Vocab] = None,
            tokenizer: Optional[Tokenizer] = None) -> PreparedData:
    """Read, split, segment and encode a corpus.

    Args:
        vocab, tokenizer: reuse these (resuming a run) instead of fitting new ones.
    """
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    stat_key = files_key(path, data)
    known = read_manifest(cache_dir, stat_key)  # the files are as they were when last read:
    seg = load_segmented(segment_folder(segmenter_for(tok, tokenizer)[1], cache_dir, known["fingerprint"])) \
        if known else None
    if seg is not None:  # ... and their segmentation is cached
        fingerprint, characters, described = known["fingerprint"], known["characters"], known["documents"]
        logger.info("%s: %d files unchanged since they were read; segmentation cached", path, len(described))
        for doubt in (d["doubt"] for d in described if "doubt" in d):
            logger.warning("%s", doubt)  # said at every start, as when the files were read
        overlap = known.get("overlap", {})
        seconds["read"] = time.perf_counter() - start
    else:
        texts, described = split_corpus(path, data)
        seconds["read"] = time.perf_counter() - start
        fingerprint = split_fingerprint(texts)
        overlap = held_out_in_training(texts)
        characters = {name: sum(map(len, texts[name])) + max(len(texts[name]) - 1, 0) for name in SPLITS}
        start = time.perf_counter()
        seg = segment(texts, tok, cache_dir, fingerprint, saved=tokenizer, corpus=str(Path(path).resolve()))
        del texts  # from here on only token ids are needed: a big corpus's text need not stay in memory
        seconds["segment"] = time.perf_counter() - start
        write_manifest(cache_dir, stat_key, {"fingerprint": fingerprint, "characters": characters,
                                             "documents": described, "overlap": overlap})
    report_overlap(overlap)
    start = time.perf_counter()
    if vocab is None or tokenizer is None:
        tokenizer = build_tokenizer(tok)
        vocab, expansions = fit_vocab(seg, tokenizer, tok)
    else:
        expansions = expand_types(seg.types, tokenizer)
    table = [[vocab.token_to_id(t) for t in tokens] for tokens in expansions]
    ids = encode_cached(seg, table, vocab, tokenizer)
    seconds["encode"] = time.perf_counter() - start
    logger.info("vocabulary %d tokens; train %d tokens, valid %d, test %d",
                len(vocab), len(ids["train"]), len(ids["valid"]), len(ids["test"]))
    # only the held-out splits' type ids are kept for it: the training split's (memory-mapped) may be GBs
    held_out = {name: seg.splits.get(name, np.zeros(0, np.int32)) for name in ("valid", "test")}

    def find_unknowns(split: str) -> Unknowns:
        return Unknowns.of_types(held_out[split], expansions, table, Speller(vocab))

    return PreparedData(tokenizer=tokenizer, vocab=vocab, ids=ids, characters=characters,
                        fingerprint=fingerprint, documents=described, overlap=overlap, seconds=seconds,
                        find_unknowns=find_unknowns)


def encode_cached(seg: Segmented, table: list[list[int]], vocab: Vocab, tokenizer: Tokenizer) -> dict[str, np.ndarray]:
    """Vocabulary ids of every split, memory-mapped from files beside the segmentation cache."""
    def ids_of(name: str, out: Optional[Path] = None) -> np.ndarray:
        return remap(seg.splits.get(name, np.zeros(0, np.int32)), table, out=out)

    def in_memory() -> dict[str, np.ndarray]:
        return {name: ids_of(name) for name in SPLITS}

    key = hashlib.sha256(json.dumps([vocab.tokens, tokenizer.to_dict()], ensure_ascii=False).encode()).hexdigest()[:16]
    if seg.folder is None:  # an in-memory segmentation: nothing to cache next to
        return in_memory()
    folder = seg.folder / f"ids-{key}"
    if not all((folder / f"{name}.bin").exists() for name in SPLITS):
        try:
            tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=seg.folder))
        except OSError as err:  # a shared, read-only cache of the segmentation: the ids are made in memory
            logger.warning("cannot write the token ids beside %s (%s); keeping them in memory", seg.folder, err)
            return in_memory()

        def write_ids(into: Path) -> None:
            for name in SPLITS:
                ids_of(name, out=into / f"{name}.bin")

        build_and_publish(tmp, folder, write_ids)
    try:
        return {name: open_ids(folder / f"{name}.bin") for name in SPLITS}
    except FileNotFoundError:  # `lstmgen cache --clear` took the folder meanwhile; the segmentation is still mapped
        logger.warning("the token ids in %s were removed as this run read them; keeping them in memory", folder)
        return in_memory()


def encode_text(texts: list[str], tokenizer: Tokenizer, vocab: Vocab,
                workers: int = 0) -> tuple[np.ndarray, Unknowns]:
    """Encode documents with a trained run's tokenizer and vocabulary (joined by newline tokens).

    Returns:
        The ids, and the spelling cost of the words among them that the vocabulary does not know.
    """
    pieces = tokenizer.tokenize_many(texts, workers=workers)
    stream: list[str] = []
    for i, tokens in enumerate(pieces):
        if i and tokens:
            stream.append("\n")
        stream.extend(tokens)
    ids = vocab.encode(stream)
    return ids, Unknowns.of_tokens(stream, ids, Speller(vocab))
