"""Token streams: the segmentation cache on disk, and how a stream is laid out into batches.

Pure functions over numpy arrays; nothing here knows about models or optimisers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # target id of padding: scored by nobody


def default_cache_dir() -> Path:
    """Where token caches live: $LSTMGEN_CACHE, else ~/.cache/lstmgen."""
    env = os.environ.get("LSTMGEN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "lstmgen"


# ---------------------------------------------------------------------------------------------
# Segmentation cache: text pieces -> (types, int32 type ids per split), keyed by content + settings.
# Segmentation (jieba) is the slow part; everything after it (vocabulary, hybrid fallback) is a
# cheap numpy mapping over type ids, so that is what gets cached.
# ---------------------------------------------------------------------------------------------


@dataclass
class Segmented:
    """The splits of a corpus as one type table plus an int32 array of type ids per split."""

    types: list[str]  # distinct surface tokens, in first-seen order
    splits: dict[str, np.ndarray]  # split name -> int32 ids into ``types``; may be memory-mapped

    def type_counts(self, split: str = "train") -> np.ndarray:
        """How often each type occurs in ``split``, as an int64 array of len(types)."""
        return np.bincount(self.splits[split], minlength=len(self.types))


def cache_key(texts: dict[str, list[str]], settings: dict) -> str:
    """A content hash of every split's text and of the segmenter's settings."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, ensure_ascii=False).encode())
    for name in sorted(texts):
        digest.update(f"\x00split:{name}:{len(texts[name])}\x00".encode())
        for text in texts[name]:
            digest.update(f"\x00doc:{len(text)}\x00".encode())
            digest.update(text.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:32]


def build_segmented(pieces: dict[str, list[list[str]]]) -> Segmented:
    """Number the token types of already-tokenised documents, split by split.

    Documents of one split are joined with a "\\n" token, as the paragraphs inside them are.
    """
    index: dict[str, int] = {}
    arrays: dict[str, np.ndarray] = {}
    for name, docs in pieces.items():
        stream: list[str] = []
        for i, tokens in enumerate(docs):
            if i and tokens:
                stream.append("\n")
            stream.extend(tokens)
        for token in stream:
            if token not in index:
                index[token] = len(index)
        arrays[name] = np.fromiter((index[t] for t in stream), dtype=np.int32, count=len(stream))
    return Segmented(types=list(index), splits=arrays)


def save_segmented(seg: Segmented, folder: Path) -> None:
    """Write the cache atomically: a half-written cache folder is never taken for a whole one."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    with open(tmp / "types.json", "w", encoding="utf-8") as f:
        json.dump(seg.types, f, ensure_ascii=False)
    for name, ids in seg.splits.items():
        np.save(tmp / f"{name}.npy", np.ascontiguousarray(ids, dtype=np.int32))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process won the race; its cache is as good as ours
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()


def load_segmented(folder: Path) -> Optional[Segmented]:
    """The cache in ``folder`` (token arrays memory-mapped), or None if it is absent or damaged."""
    try:
        with open(folder / "types.json", encoding="utf-8") as f:
            types = json.load(f)
        splits = {p.stem: np.load(p, mmap_mode="r") for p in sorted(folder.glob("*.npy"))}
    except (OSError, ValueError):
        return None
    if not splits or any(a.dtype != np.int32 for a in splits.values()):
        return None
    return Segmented(types=types, splits=splits)


def remap(type_ids: np.ndarray, table: list[list[int]]) -> np.ndarray:
    """Replace every type id by a (possibly empty or multi-token) run of vocabulary ids.

    Args:
        type_ids: (N,) int32 ids into the type table.
        table: for each type, the vocabulary ids it becomes (a word spelled out in characters
            becomes several).

    Returns:
        (M,) int32 vocabulary ids.
    """
    lengths = np.fromiter((len(t) for t in table), dtype=np.int64, count=len(table))
    if lengths.size and (lengths == 1).all():  # the common case: one token per type
        flat = np.fromiter((t[0] for t in table), dtype=np.int32, count=len(table))
        return flat[type_ids]
    flat = np.fromiter((i for t in table for i in t), dtype=np.int32, count=int(lengths.sum()))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    run_lengths = lengths[type_ids]
    total = int(run_lengths.sum())
    # position k of the output belongs to input token j = owner[k], at offset k - first[j] within its run
    owner = np.repeat(np.arange(len(type_ids)), run_lengths)
    first = np.cumsum(run_lengths) - run_lengths
    return flat[starts[type_ids][owner] + (np.arange(total) - first[owner])]


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


def batchify_padded(ids: np.ndarray, batch_size: int) -> np.ndarray:
    """Like ``batchify`` but pads the last row with IGNORE_INDEX so that every token is scored."""
    ids = np.asarray(ids, dtype=np.int64)
    rows = max(1, min(batch_size, len(ids) // 2))
    length = -(-len(ids) // rows)
    out = np.full(rows * length, IGNORE_INDEX, dtype=np.int64)
    out[: len(ids)] = ids
    return out.reshape(rows, length)


def num_windows(grid: np.ndarray, seq_len: int) -> int:
    """How many BPTT windows one pass over a (B, L) grid has."""
    return -(-(grid.shape[1] - 1) // seq_len)


def get_window(grid: np.ndarray, index: int, seq_len: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Window ``index`` of the grid: inputs (B, T) and targets (B, T), T <= seq_len, as int64."""
    start = index * seq_len
    stop = min(start + seq_len, grid.shape[1] - 1)
    block = torch.from_numpy(np.array(grid[:, start : stop + 1], dtype=np.int64))
    if device.type != "cpu":
        block = block.pin_memory().to(device, non_blocking=True)
    inputs = block[:, :-1]
    targets = block[:, 1:].clone()
    targets[inputs == IGNORE_INDEX] = IGNORE_INDEX  # a pad never predicts anything
    return inputs.clamp_min(0), targets
