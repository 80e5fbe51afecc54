"""The plot of docs/adaptation.md: how much adapting gains, token by token, along a run's test split.

    python bench/adapt_plot.py RUN [--adapt both] [--out docs/adaptation.png]

The test split is scored as ``lstmgen eval`` scores it (16 rows, each read from its start), plainly and
with the model adapting; the gain of every token (plain minus adapted cost, in bits) is averaged over
the rows by how far into its row the token is, in bins, so the curve shows what the model gains as it
has read more of the text.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from lstmgen.evaluation.adapt import AdaptConfig, adapted_nlls
from lstmgen.evaluation.score import EVAL_ROWS
from lstmgen.model.run_dir import load_run
from lstmgen.tokens.batches import padded_layout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("--adapt", default="both")
    parser.add_argument("--bins", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="docs/adaptation.png")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = load_run(args.run)
    data = run.prepared()
    ids = data.ids["test"]
    plain = adapted_nlls(run.model, ids, AdaptConfig(mode="off"))
    curves = {mode: adapted_nlls(run.model, ids, AdaptConfig(mode=mode)) for mode in ("dynamic", "cache", "both")}
    rows, length = padded_layout(len(ids), EVAL_ROWS)
    position = np.arange(len(ids)) % length  # tokens read before this one in its row
    tokens_per_char = len(ids) / data.characters["test"]
    edges = np.linspace(1, length, args.bins + 1)
    which = np.digitize(position, edges) - 1
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2))
    centres = (edges[:-1] + edges[1:]) / 2 / tokens_per_char / 1000
    for mode, nll in curves.items():
        gain = (plain - nll) / math.log(2)
        means = [gain[(which == b) & (position > 0)].mean() for b in range(args.bins)]
        total = gain[position > 0].sum() / (data.characters["test"] * (1 - rows / len(ids)))
        ax.plot(centres, means, marker=".", label=f"{mode}: {total:.3f} bits/char over the split")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("thousands of characters read in the row")
    ax.set_ylabel("gain per token (bits)")
    ax.set_title(f"Adapting while reading: {EVAL_ROWS} rows of the test split of {run.info.get('corpus', '?')}",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
