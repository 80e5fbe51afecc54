"""Generation speed: time to the first character after loading, characters/s, and a batch of samples;
then one-token LSTM steps alone, through nn.LSTM and through the generator's OneTokenSteps.

    python bench/generate_speed.py RUN [--length 2000] [--num-samples 8]
"""

from __future__ import annotations

import argparse
import datetime
import os
import time
import warnings

import torch

from lstmgen.generate import GenerateConfig, generate
from lstmgen.model import OneTokenSteps
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
    tokens = torch.tensor([run.vocab.token_to_id(t) for t in run.tokenizer.tokenize(text)])
    lstm_ms, steps_ms = step_times(run.model, tokens)
    print(f"one-token LSTM step over the sample's {len(tokens)} tokens ({len(tokens.unique())} distinct), one row, "
          f"one thread: nn.LSTM {lstm_ms:.3f} ms (oneDNN off), OneTokenSteps {steps_ms:.3f} ms")


@torch.no_grad()
def step_times(model: torch.nn.Module, tokens: torch.Tensor) -> tuple[float, float]:
    """ms per one-token step over ``tokens``, nn.LSTM against OneTokenSteps, alternating blocks of 500."""
    model.eval()
    steps = len(tokens)
    fast = OneTokenSteps(model)
    layers, hidden = model.lstm.num_layers, model.lstm.hidden_size
    zeros = (torch.zeros(layers, 1, hidden), torch.zeros(layers, 1, hidden))
    totals = [0.0, 0.0]
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the flags() context warns about TF32 on Intel GPUs
            with torch.backends.mkldnn.flags(enabled=False):
                for block in range(0, steps, 500):
                    for which in (0, 1):
                        state = zeros
                        start = time.perf_counter()
                        for token in tokens[block:block + 500]:
                            if which == 0:
                                state = model.features(token.view(1, 1), state)[1]
                            else:
                                state = fast(token.view(1), state)[1]
                        totals[which] += time.perf_counter() - start
    finally:
        torch.set_num_threads(saved)
    return 1000 * totals[0] / steps, 1000 * totals[1] / steps


if __name__ == "__main__":
    main()
