"""Token streams: the segmentation cache on disk, and how a stream is laid out into batches.

Pure functions over numpy arrays; nothing here knows about models or optimisers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # target id of padding: scored by nobody


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


# ---------------------------------------------------------------------------------------------
# Segmentation cache: text pieces -> (types, int32 type ids per split), keyed by content + settings.
# Segmentation (jieba) is the slow part; everything after it (vocabulary, hybrid fallback) is a
# cheap numpy mapping over type ids, so that is what gets cached.
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Batches. A stream of N tokens is laid into B rows of L = N // B tokens, row after row:
#
#     stream: a b c d e f g h i j k l m n o p q r s t u v w x (y z dropped when B=4)
#
#     row 0:  a b c d e f        each row is a contiguous piece of the text, so the LSTM state
#     row 1:  g h i j k l        left at the end of one window is the right start for the next
#     row 2:  m n o p q r        window of the same row: training carries it across batches
#     row 3:  s t u v w x        (detached) — truncated back-propagation through time.
#
# Windows of seq_len columns then walk left to right; targets are the inputs shifted by one.
# For data-parallel training, rank r of W takes rows [r*B, (r+1)*B) of the layout with W*B
# rows, so W processes see exactly what one process with batch W*B would.
# ---------------------------------------------------------------------------------------------


def batchify(ids: np.ndarray, batch_size: int, *, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """Lay a token stream into rows (see the picture above); returns this rank's (B, L) view.

    Raises:
        ValueError: if the stream is too short for one window of one token per row.
    """
    rows = batch_size * world_size
    length = len(ids) // rows
    if length < 2:
        raise ValueError(f"{len(ids)} tokens are too few for {rows} rows of at least 2 tokens")
    grid = np.asarray(ids[: rows * length]).reshape(rows, length)
    return grid[rank * batch_size : (rank + 1) * batch_size]


def padded_layout(num_tokens: int, batch_size: int) -> tuple[int, int]:
    """The (rows, length) of ``batchify_padded``'s grid for a stream of ``num_tokens``."""
    rows = max(1, min(batch_size, num_tokens // 2))
    return rows, -(-num_tokens // rows)


def row_starts(num_tokens: int, batch_size: int) -> np.ndarray:
    """The stream positions that begin a row of ``batchify_padded``'s grid: the tokens never predicted."""
    rows, length = padded_layout(num_tokens, batch_size)
    starts = np.arange(rows, dtype=np.int64) * length
    return starts[starts < num_tokens]


def batchify_padded(ids: np.ndarray, batch_size: int) -> np.ndarray:
    """Like ``batchify`` but pads the last row with IGNORE_INDEX so that every token is scored.

    The grid is int32, filled straight from ``ids`` (which may be memory-mapped): 4 bytes a token,
    where an int64 copy and an int64 grid took 16 (``get_window`` widens each window it cuts).
    """
    rows, length = padded_layout(len(ids), batch_size)
    out = np.full(rows * length, IGNORE_INDEX, dtype=np.int32)
    out[: len(ids)] = ids
    return out.reshape(rows, length)


def num_windows(grid: np.ndarray, seq_len: int) -> int:
    """How many BPTT windows one pass over a (B, L) grid has."""
    return -(-(grid.shape[1] - 1) // seq_len)


def device_grid(grid: np.ndarray, device: torch.device, max_share: float = 0.1) -> Union[np.ndarray, torch.Tensor]:
    """The grid as an int32 tensor on ``device`` when it takes at most ``max_share`` of its memory.

    A GPU then cuts every window out of its own memory: no copy from the host, no wait for one, in
    the step. On the CPU, or when the grid is too big, it stays the (memory-mapped) array it was.
    """
    if device.type != "cuda":
        return grid
    if grid.shape[0] * grid.shape[1] * 4 > max_share * torch.cuda.get_device_properties(device).total_memory:
        return grid
    out = torch.empty(grid.shape, dtype=torch.int32, device=device)
    for row in range(grid.shape[0]):  # row by row: a memory-mapped grid is never read into RAM whole
        out[row].copy_(torch.from_numpy(np.ascontiguousarray(grid[row], dtype=np.int32)))
    return out


def derived_seed(seed: int, index: int) -> int:
    """A seed of its own for draw stream ``index`` (a training rank, a generated sample): 0 keeps
    ``seed``, the others mix their index in, so that the streams are independent and seed s's stream 1
    is not seed s+1's stream 0."""
    if index == 0:
        return seed
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0]) >> 1  # numpy 1.x: no uint64 >> int


def window_bounds(length: int, index: int, seq_len: int) -> tuple[int, int]:
    """Window ``index`` of a grid of rows of ``length`` tokens: its inputs are columns [start, stop),
    so it trains on ``stop - start`` tokens a row, seq_len except in an epoch's last window."""
    start = index * seq_len
    return start, min(start + seq_len, length - 1)


def get_window(grid: Union[np.ndarray, torch.Tensor], index: int, seq_len: int,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Window ``index`` of the grid (an array, or a tensor from ``device_grid``): inputs (B, T) and
    targets (B, T), T <= seq_len, as int64 on ``device``."""
    start, stop = window_bounds(grid.shape[1], index, seq_len)
    if isinstance(grid, torch.Tensor):
        block = grid[:, start : stop + 1].to(device=device, dtype=torch.int64)
    else:
        block = torch.from_numpy(np.array(grid[:, start : stop + 1], dtype=np.int64))
        if device.type != "cpu":
            block = block.pin_memory().to(device, non_blocking=True)
    inputs = block[:, :-1]
    # a pad never predicts anything (where, not a masked assignment: that would wait for the GPU)
    targets = torch.where(inputs == IGNORE_INDEX, IGNORE_INDEX, block[:, 1:])
    return inputs.clamp_min(0), targets
