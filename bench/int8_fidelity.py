"""What int8 weights cost in quality: held-out bits per token through the generator's OneTokenSteps
with fp32 and with int8 weights, the same tokens of the run's test split, teacher-forced.

    python bench/int8_fidelity.py RUN [--tokens N] [--rows 16]
"""

from __future__ import annotations

import argparse
import datetime
import math
import time

import numpy as np
import torch

from lstmgen.generation.cpu_step import OneTokenSteps
from lstmgen.model.run_dir import load_run


@torch.no_grad()
def bits_per_token(steps: OneTokenSteps, grid: torch.Tensor, layers: int, hidden: int) -> float:
    """Mean -log2 p(next token) over a (rows, T) grid, each row read start to end from a zero state."""
    rows = len(grid)
    state = (torch.zeros(layers, rows, hidden), torch.zeros(layers, rows, hidden))
    total = 0.0
    for t in range(grid.shape[1] - 1):
        log_probs, state = steps(grid[:, t], state)
        total -= float(log_probs.gather(1, grid[:, t + 1:t + 2]).sum())
    return total / (rows * (grid.shape[1] - 1)) / math.log(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--tokens", type=int, default=0, help="score the first N test tokens (0: all)")
    parser.add_argument("--rows", type=int, default=16)
    args = parser.parse_args()

    run = load_run(args.run)
    data = run.prepared()
    ids = np.asarray(data.ids["test"][: args.tokens or None], dtype=np.int64)
    length = len(ids) // args.rows
    grid = torch.from_numpy(ids[: length * args.rows].reshape(args.rows, length))
    lstm = run.model.lstm
    results = {}
    for name, int8 in (("fp32", False), ("int8", True)):
        start = time.perf_counter()
        results[name] = bits_per_token(OneTokenSteps(run.model.eval(), int8=int8), grid, lstm.num_layers,
                                       lstm.hidden_size)
        print(f"{name}: {results[name]:.4f} bits/token ({time.perf_counter() - start:.0f} s)")
    print(f"int8 - fp32: {results['int8'] - results['fp32']:+.4f} bits/token over {grid.numel()} test tokens "
          f"in {args.rows} rows; {run.config.preset} preset, {run.config.tokenizer.tokenizer} tokenizer, "
          f"hidden {lstm.hidden_size}, torch {torch.__version__}, {datetime.date.today()}")


if __name__ == "__main__":
    main()
