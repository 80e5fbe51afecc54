"""The token cache on disk: a corpus's segmentation, chunked and memory-mapped as int32 ids, keyed by
the text and the settings, so a second run on the same corpus starts training in about a second.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """Where token caches live: $LSTMGEN_CACHE, else where this platform keeps a program's caches
    (``$XDG_CACHE_HOME/lstmgen`` or ~/.cache/lstmgen on Linux, ~/Library/Caches/lstmgen on macOS,
    %LOCALAPPDATA%\\lstmgen\\Cache on Windows)."""
    env = os.environ.get("LSTMGEN_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("lstmgen", appauthor=False))


# The cache's layout (cache.py lists and prunes it): tokens/<key>/ a segmentation, read/<key>.json a
# corpus's files as read (pipeline's manifests).
TOKENS_DIR, MANIFESTS_DIR = "tokens", "read"


# In a token folder, beside types.json, the .bin files and the ids-* folders of encoded ids:
SOURCE_FILE = "source.json"  # what it was made from (corpus, settings, fingerprint); older folders have none


USED_MARKER = "last-used"  # an empty file whose modification time is the folder's last use by a run


def mark_used(folder: Path) -> None:
    """Set the time of ``folder``'s last-use marker to now (creating it), for ``lstmgen cache --prune``.

    A marker file, not the folder's own times: a folder's mtime changes only when an entry is added,
    and its atime not at all on noatime mounts. A read-only cache keeps the times it had.
    """
    try:
        (folder / USED_MARKER).touch()
    except OSError:
        pass


@dataclass
class Segmented:
    """The splits of a corpus as one type table plus an int32 array of type ids per split."""

    types: list[str]  # distinct surface tokens, in first-seen order
    splits: dict[str, np.ndarray]  # split name -> int32 ids into ``types``; memory-mapped when loaded
    folder: Optional[Path] = None  # the cache folder it was loaded from

    def type_counts(self, split: str = "train") -> np.ndarray:
        """How often each type occurs in ``split``, as an int64 array of len(types)."""
        counts = np.zeros(len(self.types), dtype=np.int64)
        ids = self.splits[split]
        for start in range(0, len(ids), CHUNK_TOKENS):  # in chunks: a memory-mapped split stays on disk
            counts += np.bincount(ids[start:start + CHUNK_TOKENS], minlength=len(self.types))
        return counts


def cache_key(fingerprint: str, settings: dict) -> str:
    """The cache folder's name: the corpus text's fingerprint and the segmenter's settings."""
    payload = json.dumps({"text": fingerprint, **settings}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


CHUNK_CHARS = 1 << 22  # text segmented per call: bounds the segmenter's memory, not the text's


CHUNK_TOKENS = 1 << 24  # ids mapped per numpy call


class SegmentWriter:
    """Numbers token types and appends each split's type ids to a file, a chunk at a time.

    Memory stays bounded by the chunk size and the type table, whatever the corpus size. Documents
    of one split are joined with a "\n" token, as the paragraphs inside them are.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.index: dict[str, int] = {}
        self.types: list[str] = []
        self._code_ids = np.full(0x110000, -1, dtype=np.int32)  # code point -> type id (char fast path)
        self._files: dict[str, Any] = {}

    def _type_id(self, token: str) -> int:
        idx = self.index.get(token)
        if idx is None:
            idx = self.index[token] = len(self.types)
            self.types.append(token)
            if len(token) == 1:
                self._code_ids[ord(token)] = idx
        return idx

    def _write(self, split: str, ids: np.ndarray) -> None:
        if split not in self._files:
            self._files[split] = open(self.folder / f"{split}.bin", "wb")
        self._files[split].write(np.ascontiguousarray(ids, dtype=np.int32).tobytes())

    def add_tokens(self, split: str, tokens: list[str]) -> None:
        index, new = self.index, self._type_id
        self._write(split, np.fromiter((index[t] if t in index else new(t) for t in tokens),
                                       dtype=np.int32, count=len(tokens)))

    def add_characters(self, split: str, text: str) -> None:
        """Every character a token, mapped without a Python loop over the text."""
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        for code in np.unique(codes[self._code_ids[codes] < 0]):
            self._type_id(chr(code))
        self._write(split, self._code_ids[codes])

    def open_split(self, split: str) -> None:
        """Make sure a split has a file even when it holds no text."""
        if split not in self._files:
            self._files[split] = open(self.folder / f"{split}.bin", "wb")

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        with open(self.folder / "types.json", "w", encoding="utf-8") as f:
            json.dump(self.types, f, ensure_ascii=False)


def segment_texts(texts: dict[str, list[str]], tokenize_many: Any, folder: Path, *, characters: bool,
                  workers: int = 0) -> int:
    """Segment every split into ``folder`` (types.json + one int32 .bin per split), chunk by chunk;
    returns the number of types.

    Args:
        tokenize_many: the tokenizer's ``tokenize_many``; text is cut at newlines, which every
            tokenizer turns into a "\n" token, so chunking changes nothing in the result; only a line of
            more than ``CHUNK_CHARS`` (4M) characters is cut inside, where a word may be split in two.
        characters: every character is a token (the char tokenizer): take the vectorised path.
    """
    writer = SegmentWriter(folder)
    try:
        for split, docs in texts.items():
            writer.open_split(split)
            first = True
            for doc in docs:
                if not doc:
                    continue
                if not first:
                    writer.add_tokens(split, ["\n"])
                first = False
                if characters:
                    for start in range(0, len(doc), CHUNK_CHARS):
                        writer.add_characters(split, doc[start:start + CHUNK_CHARS])
                    continue
                pieces = _chunks(doc, CHUNK_CHARS)
                for batch_start in range(0, len(pieces), 4):
                    batch = pieces[batch_start:batch_start + 4]
                    for (after_newline, _), tokens in zip(batch, tokenize_many([p for _, p in batch], workers=workers)):
                        if after_newline:
                            writer.add_tokens(split, ["\n"])
                        writer.add_tokens(split, tokens)
    finally:
        writer.close()
    return len(writer.types)


def _chunks(text: str, size: int) -> list[tuple[bool, str]]:
    """Cut ``text`` into pieces of about ``size`` characters, at newlines where possible.

    Returns (whether a dropped newline precedes the piece, piece). Only a text with no newline
    within reach (a file without line breaks) is cut mid-line, and only there can a cut split a word.
    """
    pieces = []
    start, after_newline = 0, False
    while len(text) - start > size:
        cut = text.rfind("\n", start, start + size + 1)
        if cut < start:
            pieces.append((after_newline, text[start:start + size]))
            start, after_newline = start + size, False
        else:
            pieces.append((after_newline, text[start:cut]))
            start, after_newline = cut + 1, True
    pieces.append((after_newline, text[start:]))
    return pieces


def open_ids(path: Path) -> np.ndarray:
    """A raw int32 file, memory-mapped read-only (an empty file gives an empty array)."""
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=np.int32)
    return np.memmap(path, dtype=np.int32, mode="r")


def load_segmented(folder: Path) -> Optional[Segmented]:
    """The cache in ``folder`` (token arrays memory-mapped), or None if it is absent or damaged.

    A folder handed out is marked as used now (``mark_used``): every run that segments or reuses a
    segmentation comes through here, so the marker's time is the folder's last use.
    """
    try:
        with open(folder / "types.json", encoding="utf-8") as f:
            types = json.load(f)
        splits = {p.stem: open_ids(p) for p in sorted(folder.glob("*.bin"))}
    except (OSError, ValueError):
        return None
    if not splits:
        return None
    mark_used(folder)
    return Segmented(types=types, splits=splits, folder=folder)


def build_and_publish(tmp: Path, folder: Path, build: Callable[[Path], None]) -> None:
    """Fill the temporary folder ``tmp`` with ``build``, then publish it as ``folder``. An interrupted
    build (Ctrl-C in a long segmentation, a full disk) removes ``tmp``: nothing would ever read it."""
    try:
        build(tmp)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish(tmp, folder)


def publish(tmp: Path, folder: Path) -> None:
    """Rename a finished temporary folder into place; if another process won the race, keep theirs."""
    try:
        os.replace(tmp, folder)
    except OSError:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def remap(type_ids: np.ndarray, table: list[list[int]], out: Optional[Path] = None) -> np.ndarray:
    """Replace every type id by a (possibly empty or multi-token) run of vocabulary ids.

    Args:
        type_ids: (N,) int32 ids into the type table (may be memory-mapped).
        table: for each type, the vocabulary ids it becomes (a word spelled out in characters
            becomes several).
        out: write the result to this raw int32 file and return it memory-mapped, so a corpus
            larger than memory never has to fit in it; None: return an in-memory array.

    Returns:
        (M,) int32 vocabulary ids.
    """
    lengths = np.fromiter((len(t) for t in table), dtype=np.int64, count=len(table))
    flat = np.fromiter((i for t in table for i in t), dtype=np.int32, count=int(lengths.sum()))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    one_to_one = bool(lengths.size) and bool((lengths == 1).all())

    def convert(chunk: np.ndarray) -> np.ndarray:
        if one_to_one:  # the common case: one token per type
            return flat[chunk]
        run_lengths = lengths[chunk]
        total = int(run_lengths.sum())
        # output position k belongs to input token j = owner[k], at offset k - first[j] in its run
        owner = np.repeat(np.arange(len(chunk)), run_lengths)
        first = np.cumsum(run_lengths) - run_lengths
        return flat[starts[chunk][owner] + (np.arange(total) - first[owner])]

    if out is None:
        return convert(np.asarray(type_ids))
    with open(out, "wb") as f:
        for start in range(0, len(type_ids), CHUNK_TOKENS):
            f.write(convert(np.asarray(type_ids[start:start + CHUNK_TOKENS])).astype(np.int32).tobytes())
    return open_ids(out)
