"""Generation speed: time to the first character after loading, characters/s, and a batch of samples.

    python bench/generate_speed.py RUN [--length 2000] [--num-samples 8]
"""

from __future__ import annotations

import argparse
import datetime
import os
import time

import torch

from lstmgen.generate import GenerateConfig, generate
from lstmgen.runs import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--length", type=int, default=2000)
    parser.add_argument("--num-samples", type=int, default=8)
    parser.add_argument("--prompt", default="却说")
    args = parser.parse_args()

    start = time.perf_counter()
    run = load_run(args.run)
    loaded = time.perf_counter()
    first: list[float] = []

    def on_text(row: int, piece: str) -> None:
        if not first:
            first.append(time.perf_counter())

    text = generate(run.model, run.tokenizer, run.vocab, [args.prompt], GenerateConfig(length=args.length, seed=1),
                    on_text=on_text)[0]
    done = time.perf_counter()
    batch_start = time.perf_counter()
    texts = generate(run.model, run.tokenizer, run.vocab, [args.prompt],
                     GenerateConfig(length=args.length, seed=1, num_samples=args.num_samples))
    batch_done = time.perf_counter()
    written = len(text) - len(args.prompt)
    batch_written = sum(len(t) - len(args.prompt) for t in texts)
    print(f"load {loaded - start:.2f}s; first character {1000 * (first[0] - loaded):.0f} ms after loading; "
          f"one sample: {written / (done - loaded):,.0f} characters/s ({written} characters); "
          f"{args.num_samples} samples as one batch: {batch_written / (batch_done - batch_start):,.0f} characters/s")
    print(f"{run.config.preset} preset, {run.config.tokenizer.tokenizer} tokenizer, hidden {run.config.model.hidden_size}, "
          f"{os.cpu_count()}-core CPU, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"{datetime.date.today()}")


if __name__ == "__main__":
    main()
