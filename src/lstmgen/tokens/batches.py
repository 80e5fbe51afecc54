"""Token ids -> batches: a stream laid into rows (columns of a (B, N) grid), read in windows of
``seq_len`` for truncated back-propagation, on the device.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch

IGNORE_INDEX = -100  # target id of padding: scored by nobody


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
